"""apply/diff of Kubernetes manifests, get/create/delete of ConfigMaps and Secrets: the real CLI.

Each command is a fresh `shoal` process against a live signed API on loopback
(no control loop: these check what the front door sends and prints).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import yaml

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, init_keypair
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Role
from shoal.state import MemoryStore
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLES = Path(__file__).parents[2] / "examples" / "k8s"
K8S_DOCS = Path(__file__).parents[2] / "tests" / "kube" / "k8s_docs"

PASSWORD = "correct-horse-battery"
ENCODED = base64.b64encode(PASSWORD.encode()).decode()

MANIFESTS = {
    "10-config.yaml": f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: page, namespace: shop}}
data:
  index.html: |
    <h1>hello</h1>
---
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: shop
stringData:
  password: {PASSWORD}
""",
    "20-web.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: httpd
          image: busybox
""",
    "30-service.yaml": """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
""",
    "notes.txt": "not a manifest: skipped",
}


@dataclass
class Agent:
    """A signed API and the environments of an operator and of an admin."""

    operator: dict[str, str]
    admin: dict[str, str]

    async def shoal(
        self, *args: str, admin: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `shoal ARGS` in a worker thread (the API answers on this loop)."""
        env = self.admin if admin else self.operator
        return await anyio.to_thread.run_sync(lambda: run_shoal(env, *args, check=check))


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    pairs = {
        role: init_keypair(tmp_path / role.value, f"{role.value}@test")
        for role in (Role.OPERATOR, Role.ADMIN)
    }
    keys = AuthorizedKeys(
        {p.key_id: AuthorizedKey(role, p.key_id, p.verify_key) for role, p in pairs.items()}
    )
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        app = create_app(ShoalService(store, clock), RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        base["SHOAL_SERVER"] = f"http://127.0.0.1:{port}"
        yield Agent(
            {**base, "SHOAL_HOME": str(tmp_path / "operator")},
            {**base, "SHOAL_HOME": str(tmp_path / "admin")},
        )
        tg.cancel_scope.cancel()


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    for name, text in MANIFESTS.items():
        (directory / name).write_text(text)
    return directory


async def test_apply_a_directory_of_kubernetes_manifests(agent: Agent, manifests: Path) -> None:
    done = await agent.shoal("apply", "-f", str(manifests))
    assert done.stdout.splitlines() == [
        "configmap shop/page created",
        "secret shop/db created",
        "deployment shop/web created (+2 instance(s))",
    ]
    assert "warning:" in done.stderr and "Service" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr

    again = await agent.shoal("apply", "-f", str(manifests / "20-web.yaml"))
    assert again.stdout.strip() == "deployment shop/web unchanged"

    service_only = await agent.shoal("apply", "-f", str(manifests / "30-service.yaml"), check=False)
    assert service_only.returncode == 1  # nothing was deployed: a script must see it failed
    assert "error: nothing to apply: no document holds an object Shoal runs" in (
        service_only.stderr
    )
    assert "Service" in service_only.stderr

    strict = await agent.shoal("apply", "--strict", "-f", str(manifests), check=False)
    assert strict.returncode == 1
    assert strict.stderr.startswith("error:") and "Service" in strict.stderr
    assert "Traceback" not in strict.stderr


async def test_apply_from_stdin_and_clear_errors(agent: Agent, manifests: Path) -> None:
    text = MANIFESTS["10-config.yaml"]
    done = await anyio.to_thread.run_sync(
        lambda: run_shoal(agent.operator, "apply", "-f", "-", stdin=text)
    )
    assert "configmap shop/page created" in done.stdout
    missing = await agent.shoal("apply", "-f", str(manifests / "nope.yaml"), check=False)
    assert missing.returncode == 1
    assert "nope.yaml: no such file; check the path given to -f" in missing.stderr
    (manifests / "broken.yaml").write_text("kind: [unclosed\n")
    broken = await agent.shoal("apply", "-f", str(manifests), check=False)
    assert "broken.yaml: line" in broken.stderr and "Traceback" not in broken.stderr


async def test_diff_shows_changed_fields_and_never_secret_values(
    agent: Agent, manifests: Path
) -> None:
    fresh = await agent.shoal("diff", "-f", str(manifests), check=False)
    assert fresh.returncode == 1, fresh.stderr
    assert "+ deployment shop/web (create)" in fresh.stdout
    await agent.shoal("apply", "-f", str(manifests))

    same = await agent.shoal("diff", "-f", str(manifests), check=False)
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    for name, old, new in (
        ("20-web.yaml", "replicas: 2", "replicas: 3"),
        ("10-config.yaml", PASSWORD, "a-new-password-9"),
        ("10-config.yaml", "<h1>hello</h1>", "<h1>bonjour</h1>"),
    ):
        path = manifests / name
        path.write_text(path.read_text().replace(old, new))
    changed = await agent.shoal("diff", "-f", str(manifests), check=False)
    assert changed.returncode == 1, changed.stderr
    out = changed.stdout
    assert "~ deployment shop/web (update)" in out
    assert "replicas: 2 → 3" in out
    assert "~ configmap shop/page (update)" in out
    assert "-<h1>hello</h1>" in out and "+<h1>bonjour</h1>" in out
    assert "~ secret shop/db (update)" in out
    assert "origin." not in out  # a manifest's copy of a change is not shown twice
    for value in (PASSWORD, ENCODED, "a-new-password-9"):
        assert value not in out + changed.stderr
    assert (
        "replicas: 2"
        in (await agent.shoal("get", "deployments", "-n", "shop", "-o", "yaml")).stdout
    )

    broken = await agent.shoal("diff", "-f", str(manifests / "nope.yaml"), check=False)
    assert broken.returncode == 2


async def test_get_the_kubernetes_kinds(agent: Agent, manifests: Path) -> None:
    await agent.shoal("apply", "-f", str(manifests))
    table = (await agent.shoal("get", "deployments", "-n", "shop")).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["web", "0/2", "0", "0"]
    everywhere = (await agent.shoal("get", "deploy", "-A")).stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert (
        "no deployments found in namespace default"
        in (await agent.shoal("get", "deployments")).stdout
    )
    assert "no jobs found" in (await agent.shoal("get", "jobs", "-A")).stdout
    assert "no pods found" in (await agent.shoal("get", "pods", "-A")).stdout

    applied = yaml.safe_load(
        (await agent.shoal("get", "deployment", "web", "-n", "shop", "-o", "yaml")).stdout
    )
    assert applied["apiVersion"] == "apps/v1" and applied["kind"] == "Deployment"
    assert applied["spec"]["replicas"] == 2
    assert applied["status"]["phase"] == "pending" and applied["status"]["generation"] == 1

    maps = (await agent.shoal("get", "configmaps", "-n", "shop")).stdout.splitlines()
    assert maps[0].split() == ["NAME", "DATA", "AGE"] and maps[1].split()[:2] == ["page", "1"]
    listed = json.loads((await agent.shoal("get", "cm", "-A", "-o", "json")).stdout)
    assert listed["kind"] == "List"
    assert listed["items"][0]["data"] == {"index.html": "<h1>hello</h1>\n"}

    spaces = (await agent.shoal("get", "namespaces")).stdout.splitlines()
    assert [line.split()[0] for line in spaces] == ["NAME", "default", "shop"]


async def test_secret_values_only_for_an_admin_who_asks(agent: Agent, manifests: Path) -> None:
    await agent.shoal("apply", "-f", str(manifests))
    outputs = [
        (await agent.shoal("get", "secrets", "-n", "shop")).stdout,
        (await agent.shoal("get", "secrets", "-A", "-o", "yaml")).stdout,
        (await agent.shoal("get", "secret", "db", "-n", "shop", "-o", "json", admin=True)).stdout,
    ]
    for output in outputs:
        assert PASSWORD not in output and ENCODED not in output
    assert outputs[0].split()[:4] == ["NAME", "TYPE", "DATA", "AGE"]
    assert json.loads(outputs[2])["status"]["sizes"] == {"password": len(PASSWORD)}

    refused = await agent.shoal(
        "get", "secret", "db", "-n", "shop", "-o", "yaml", "--show-values", check=False
    )
    assert refused.returncode == 1
    assert "needs admin" in refused.stderr and ENCODED not in refused.stdout + refused.stderr
    table = await agent.shoal("get", "secrets", "--show-values", admin=True, check=False)
    assert table.returncode == 2 and "-o yaml or -o json" in table.stderr

    shown = await agent.shoal(
        "get", "secret", "db", "-n", "shop", "-o", "yaml", "--show-values", admin=True
    )
    assert yaml.safe_load(shown.stdout)["data"] == {"password": ENCODED}
    described = (await agent.shoal("describe", "secret", "db", "-n", "shop")).stdout
    assert "password: 21" in described and "ValuesShown" in described
    assert "values shown to admin@test" in described
    assert PASSWORD not in described and ENCODED not in described


async def test_create_and_delete_configmaps_secrets_and_namespaces(
    agent: Agent, tmp_path: Path
) -> None:
    page = tmp_path / "index.html"
    page.write_text("<p>from a file</p>")
    key = tmp_path / "tls.key"
    key.write_bytes(b"\xff\xfe binary")
    made = await agent.shoal(
        "create",
        "configmap",
        "site",
        "--from-file",
        str(page),
        "--from-file",
        f"raw={key}",
        "--from-literal",
        "mode=prod",
        "-n",
        "shop",
    )
    assert made.stdout.strip() == "configmap shop/site created"
    got = yaml.safe_load(
        (await agent.shoal("get", "cm", "site", "-n", "shop", "-o", "yaml")).stdout
    )
    assert got["data"] == {"index.html": "<p>from a file</p>", "mode": "prod"}
    assert base64.b64decode(got["binary_data"]["raw"]) == b"\xff\xfe binary"

    secret = await agent.shoal(
        "create", "secret", "generic", "api", "--from-literal", f"token={PASSWORD}", "-n", "shop"
    )
    assert secret.stdout.strip() == "secret shop/api created"
    assert PASSWORD not in secret.stdout + secret.stderr
    again = await agent.shoal(
        "create",
        "secret",
        "generic",
        "api",
        "--from-literal",
        "token=x",
        "-n",
        "shop",
        check=False,
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = await agent.shoal(
        "create", "secret", "generic", "x", "--from-literal", "novalue", check=False
    )
    assert bad.returncode == 2 and "is not KEY=VALUE" in bad.stderr
    no_file = await agent.shoal("create", "configmap", "x", "--from-file", "k=", check=False)
    assert no_file.returncode == 2 and "--from-file 'k=' names no file" in no_file.stderr
    bad_key = await agent.shoal("create", "configmap", "x", "--from-literal", "a b=1", check=False)
    assert (
        bad_key.returncode == 1 and "'a b'" in bad_key.stderr and "Traceback" not in bad_key.stderr
    )

    busy = await agent.shoal("delete", "namespace", "shop", check=False)
    assert busy.returncode == 1 and "still holds" in busy.stderr
    assert (await agent.shoal("delete", "configmap", "site", "-n", "shop")).stdout.strip() == (
        "configmap shop/site deleted"
    )
    assert (await agent.shoal("delete", "secret", "api", "-n", "shop")).stdout.strip() == (
        "secret shop/api deleted"
    )
    gone = await agent.shoal("delete", "secret", "api", "-n", "shop", check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr
    never_made = await agent.shoal("delete", "ns", "shop", check=False)  # only used, now empty
    assert "namespace shop not found" in never_made.stderr
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    await anyio.to_thread.run_sync(
        lambda: run_shoal(agent.operator, "apply", "-f", "-", stdin=namespace)
    )
    assert "namespace shop deleted" in (await agent.shoal("delete", "ns", "shop")).stdout
    odd = await agent.shoal("delete", "gizmo", "x", check=False)
    assert odd.returncode == 2 and "cannot delete a 'gizmo'" in odd.stderr


async def test_the_kubernetes_example_applies_strictly(agent: Agent) -> None:
    done = await agent.shoal("apply", "--strict", "-f", str(EXAMPLES))
    assert done.stdout.splitlines() == [
        "deployment default/httpd created (+2 instance(s))",
        "configmap default/httpd-page created",
        "secret default/httpd-auth created",
    ]
    # No warning; at most the note naming the request's trace (when spans are recorded).
    assert all(line.startswith("trace ") for line in done.stderr.splitlines()), done.stderr
    same = await agent.shoal("diff", "-f", str(EXAMPLES), check=False)
    assert (same.returncode, same.stdout) == (0, "")
    secrets = (await agent.shoal("get", "secrets")).stdout
    assert "httpd-auth" in secrets and "change-me" not in secrets
    # A kind given to delete must be the object's: a typo deletes nothing.
    wrong = await agent.shoal("delete", "job", "httpd", check=False)
    assert wrong.returncode == 1
    assert "default/httpd is a Deployment, not a Job: nothing was deleted" in wrong.stderr
    listed = (await agent.shoal("get", "workloads")).stdout
    assert "httpd" in listed and "deleting" not in listed
    done = await agent.shoal("delete", "deploy", "httpd")
    assert done.stdout.strip() == "workload default/httpd deleting"


async def test_the_validation_steps_of_docs_kubernetes(agent: Agent) -> None:
    nginx = await agent.shoal("apply", "--dry-run", "-f", str(K8S_DOCS / "nginx-deployment.yaml"))
    assert nginx.stdout.startswith("(dry run) deployment default/nginx-deployment would create")
    assert nginx.stderr == ""
    fluentd = str(K8S_DOCS / "fluentd-daemonset.yaml")
    warned = await agent.shoal("apply", "--dry-run", "-f", fluentd)
    assert "daemonset kube-system/fluentd-elasticsearch would create" in warned.stdout
    (warning,) = warned.stderr.splitlines()
    assert warning.startswith("warning: ") and "spec.template.spec.tolerations" in warning
    strict = await agent.shoal("apply", "--strict", "-f", fluentd, check=False)
    assert strict.returncode == 1 and "spec.template.spec.tolerations" in strict.stderr
    assert (await agent.shoal("get", "daemonsets", "-A")).stdout.startswith("no daemonsets found")
    await agent.shoal("apply", "-f", fluentd)
    header, row = (await agent.shoal("get", "ds", "-n", "kube-system")).stdout.splitlines()
    assert header.split() == [
        "NAME",
        "DESIRED",
        "CURRENT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
    ]
    assert row.split()[0] == "fluentd-elasticsearch"
