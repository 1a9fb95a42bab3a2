"""The watched manifests directory against a real agent: the lifecycle, through files only.

`shoal agent --manifests DIR` applies what the directory holds; the test
changes files and checks what `shoal manifests`, GET /v1/manifests and
`shoal get` say: add, edit, break, fix, editor temporary files, a conflict,
an object removed from a file, a file deleted, and a restart after a file
was deleted while the agent was down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.client import ShoalClient
from shoal.interfaces import MANIFEST_ANNOTATION, ManifestSource
from tests.e2e.conftest import Agent, leftovers, until
from tests.ports import free_port

pytestmark = pytest.mark.slow


def workload(name: str, replicas: int = 1, image: str = "busybox:1.36") -> str:
    return (
        f"kind: Workload\nname: {name}\nreplicas: {replicas}\n"
        f"template:\n  containers:\n    - name: main\n      image: {image}\n"
    )


DEPLOYMENT = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: api-config
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: busybox:1.36
          command: ["httpd", "-f", "-p", "8080"]
"""

DEPLOYMENT_ONLY = DEPLOYMENT.split("---\n", 1)[1]


def by_path(sources: list[ManifestSource]) -> dict[str, ManifestSource]:
    return {Path(s.path).name: s for s in sources}


def live_workloads(agent: Agent) -> dict[str, Any]:
    return {w["spec"]["name"]: w for w in agent.read("workloads") if not w["deleting"]}


def test_the_watched_directory_lifecycle(agent: Agent, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    web, api = manifests / "web.yaml", manifests / "api.yaml"
    web.write_text(workload("web", replicas=2))
    api.write_text(DEPLOYMENT)
    agent.start("--manifests", str(manifests))

    # add: both files applied on start, each object owned by its file
    workloads = agent.wait_for(
        "workloads",
        lambda items: items if {w["spec"]["name"] for w in items} == {"web", "api"} else None,
    )
    owners = {w["spec"]["name"]: w["spec"]["annotations"][MANIFEST_ANNOTATION] for w in workloads}
    assert owners == {"web": f"e2e-node:{web}", "api": f"e2e-node:{api}"}
    listed = agent.json("manifests")
    assert [(m["path"], m["objects"], m["error"]) for m in listed] == [
        (str(api), ["ConfigMap default/api-config", "Workload default/api"], ""),
        (str(web), ["Workload default/web"], ""),
    ]
    table = agent.cli("manifests").stdout
    assert str(web) in table and listed[1]["hash"][:12] in table and "applied" in table

    # edit
    web.write_text(workload("web", replicas=3))
    agent.wait_for("workloads", lambda items: _replicas(items, "web") == 3)

    # break: the error is shown with its line, the old objects keep running
    web.write_text(workload("web", replicas=4).replace("template:", "template: [", 1))
    broken = agent.until(
        "the error is reported", lambda c: _source(c, "web.yaml", lambda s: bool(s.error))
    )
    assert "line" in broken.error and broken.hash != broken.applied_hash
    assert broken.objects == ["Workload default/web"]
    assert _replicas(agent.read("workloads"), "web") == 3
    shown = agent.cli("manifests", check=False)
    assert shown.returncode == 1  # a script's health check sees the broken file
    assert (
        f"{web}: error: {web}: line" in shown.stdout and "last good objects run on" in shown.stdout
    )

    # editor temporary files are ignored; the fix is applied
    for name in (".web.yaml.swp", "web.yaml~", "4913", "web.yaml.bak", ".#web.yaml"):
        (manifests / name).write_text(workload("tempfile", replicas=9))
    web.write_text(workload("web", replicas=2))
    agent.until("the fix is applied", lambda c: _source(c, "web.yaml", _clean))
    assert _replicas(agent.read("workloads"), "web") == 2
    assert "tempfile" not in live_workloads(agent)
    assert sorted(by_path(agent.api(lambda c: c.list_manifests()))) == ["api.yaml", "web.yaml"]

    # a conflict: zz.yaml also defines web; web.yaml comes first and keeps it
    (manifests / "zz.yaml").write_text(
        workload("web", image="busybox:other") + "---\n" + workload("extra")
    )
    zz = agent.until("the conflict", lambda c: _source(c, "zz.yaml", lambda s: bool(s.conflicts)))
    assert zz.conflicts == [f"Workload default/web: owned by {web}"]
    assert zz.objects == ["Workload default/extra"]
    current = live_workloads(agent)
    assert current["web"]["spec"]["template"]["containers"][0]["image"] == "busybox:1.36"
    assert "extra" in current
    conflicted = agent.cli("manifests", check=False)
    assert conflicted.returncode == 1
    assert f"zz.yaml: conflict: Workload default/web: owned by {web}" in conflicted.stdout

    # remove an object from a file: pruned (a ConfigMap here)
    api.write_text(DEPLOYMENT_ONLY)
    agent.until("api-config is pruned", _no_config_map)
    assert "api" in live_workloads(agent)

    # delete a file: what it owns is pruned, and the file is no longer listed
    api.unlink()
    agent.wait_for("workloads", lambda items: "api" not in {w["spec"]["name"] for w in items})
    assert "api.yaml" not in by_path(agent.api(lambda c: c.list_manifests()))

    # restart: a file deleted while the agent was down has its objects pruned
    agent.kill(signal.SIGTERM)
    (manifests / "zz.yaml").unlink()
    agent.start("--manifests", str(manifests))
    agent.wait_for("workloads", lambda items: "extra" not in {w["spec"]["name"] for w in items})
    assert set(live_workloads(agent)) == {"web"}
    final = json.loads(agent.cli("manifests", "-o", "json").stdout)
    assert [(Path(m["path"]).name, m["objects"]) for m in final] == [
        ("web.yaml", ["Workload default/web"])
    ]
    events = agent.read("events")
    reasons = {e["reason"] for e in events if e["object"]["kind"] == "Manifest"}
    assert {"ManifestApplied", "ManifestFailed", "ManifestConflict", "Pruned"} <= reasons


@pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root")
@pytest.mark.skipif(shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh")
def test_a_dropped_file_serves_on_runc_and_its_deletion_stops_it(
    agent: Agent, registry: str, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    agent.runtime = "runc"
    agent.start("--manifests", str(manifests))
    agent.cli("images", "pull", registry)
    port = free_port()
    httpd = (Path(__file__).parents[2] / "examples" / "httpd.yaml").read_text()
    staged = tmp_path / "httpd.yaml"
    staged.write_text(
        httpd.replace("busybox:1.36", registry).replace("host_port: 8080", f"host_port: {port}")
    )
    staged.rename(manifests / "httpd.yaml")  # dropped in whole, as an operator's mv does

    def ready(items: list[Any]) -> Any:
        return items if items and items[0]["state"] == "running" and items[0]["ready"] else None

    (instance,) = agent.wait_for("instances", ready)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    (manifests / "httpd.yaml").unlink()
    agent.wait_for("workloads", lambda items: items == [])
    until("nothing left of the pod", lambda: not leftovers(agent.data_dir, instance["uid"]))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_missing_manifests_directory_is_refused(agent: Agent, tmp_path: Path) -> None:
    process = agent.start("--manifests", str(tmp_path / "nowhere"), expect_ready=False)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert f"--manifests {tmp_path / 'nowhere'}: no such directory" in stderr
    assert "Traceback" not in stderr


def _replicas(items: list[Any], name: str) -> int | None:
    for item in items:
        if item["spec"]["name"] == name and not item["deleting"]:
            replicas: int = item["spec"]["replicas"]
            return replicas
    return None


def _clean(source: ManifestSource) -> bool:
    return not source.error and source.hash == source.applied_hash


async def _source(client: ShoalClient, name: str, check: Any) -> ManifestSource | None:
    found = by_path(await client.list_manifests()).get(name)
    return found if found is not None and check(found) else None


async def _no_config_map(client: ShoalClient) -> bool:
    return not [c for c in await client.list_config_maps() if c.spec.name == "api-config"]
