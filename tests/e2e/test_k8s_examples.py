"""The Kubernetes documentation's own examples, unmodified, on real runc.

Each manifest of tests/kube/k8s_docs is applied as it is published, with the
busybox image imported under the name it uses (no registry is reachable), and
its output is checked against what the Kubernetes documentation shows.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from scripts.build_busybox_image import build_busybox_layout

from tests.e2e.conftest import Agent, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]

DOCS = Path(__file__).resolve().parents[1] / "kube" / "k8s_docs"
IMAGES = ("registry.k8s.io/busybox:1.27.2", "registry.k8s.io/busybox")


def output_of(agent: Agent, workload: str, pattern: str) -> str:
    """Return the logs of ``workload``'s instance once they match ``pattern`` (bounded)."""

    def instance(items: list[Any]) -> Any:
        found = [i for i in items if i["workload"] == workload and i["state"] != "pending"]
        return found[0] if found and found[0]["container_ids"] else None

    name = agent.wait_for("instances", instance, timeout=120)["name"]

    def logged() -> str | None:
        logs = agent.cli("logs", name, check=False)
        text = logs.stdout + logs.stderr  # a container's stderr lines come out on stderr
        return text if re.search(pattern, text) else None

    found = until(f"logs of {workload} matching {pattern!r}", logged, timeout=60)
    return found


def test_configmap_and_downward_api_examples_behave_as_documented(
    agent: Agent, busybox_layout: Path
) -> None:
    agent.runtime = "runc"
    agent.start()
    for reference in IMAGES:
        agent.cli("images", "import", str(busybox_layout), "--reference", reference)
    for name in (
        "configmap-multikeys.yaml",
        "pod-configmap-volume.yaml",
        "dapi-envars-pod.yaml",
    ):
        applied = agent.cli("apply", "-f", str(DOCS / name))
        assert "Traceback" not in applied.stderr

    listing = output_of(agent, "dapi-test-pod", r"SPECIAL_LEVEL\s+SPECIAL_TYPE")
    assert listing.split() == ["SPECIAL_LEVEL", "SPECIAL_TYPE"]

    # The example prints its variables with printenv, which Debian's busybox lacks
    # ("printenv: not found" in its log): read the same variables through exec.
    output_of(agent, "dapi-envars-fieldref", "printenv")
    (pod,) = [i for i in agent.read("instances") if i["workload"] == "dapi-envars-fieldref"]
    env = dict(
        line.split("=", 1)
        for line in agent.cli("exec", pod["name"], "--", "env").stdout.splitlines()
        if "=" in line
    )
    assert env["MY_NODE_NAME"] == "e2e-node"
    assert env["MY_POD_NAME"] == pod["name"]
    assert env["MY_POD_NAMESPACE"] == "default"
    assert re.fullmatch(r"198\.18\.\d+\.\d+", env["MY_POD_IP"]), env
    assert env["MY_POD_SERVICE_ACCOUNT"] == "default"


def test_env_from_a_configmap_key_expands_in_the_command(
    agent: Agent, busybox_layout: Path
) -> None:
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "import", str(busybox_layout), "--reference", IMAGES[0])
    agent.cli("apply", "-f", str(DOCS / "configmap-multikeys.yaml"))
    agent.cli("apply", "-f", str(DOCS / "pod-configmap-env-var-valueFrom.yaml"))

    assert output_of(agent, "dapi-test-pod", "very charm").strip() == "very charm"


def test_the_nginx_deployment_example_runs_three_replicas_that_serve(
    agent: Agent, tmp_path: Path
) -> None:
    """A busybox httpd stands in for nginx:1.14.2 (same port, no command in the manifest)."""
    server = build_busybox_layout(
        tmp_path / "nginx", "1.14.2", cmd=["httpd", "-f", "-p", "80", "-h", "/var/www"]
    )
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "import", str(server.layout), "--reference", "nginx:1.14.2")
    applied = agent.cli("apply", "--strict", "-f", str(DOCS / "nginx-deployment.yaml"))
    assert "Traceback" not in applied.stderr

    def three_running(items: list[Any]) -> list[Any] | None:
        running = [i for i in items if i["workload"] == "nginx-deployment" and i["ready"]]
        return running if len(running) == 3 else None

    running = agent.wait_for("instances", three_running, timeout=120)
    table = agent.cli("get", "deployments").stdout
    assert re.search(r"nginx-deployment\s+3/3\s+3\s+3", table), table
    for instance in running:  # each replica serves on its containerPort, 80
        page = agent.cli("exec", instance["name"], "--", "wget", "-qO-", "http://127.0.0.1:80/")
        assert "hello from a busybox" in page.stdout, page
