"""examples/k8s on a real agent running runc: the Kubernetes manifests, applied as written.

The Deployment's pods serve the ConfigMap's page and carry the Secret in their
environment; the CLI shows them the way kubectl would, never the Secret's value
unasked; a change of the page is a difference for `shoal diff`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Agent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]

EXAMPLES = Path(__file__).parents[2] / "examples" / "k8s"
TOKEN = "change-me-0123456789"


def test_the_kubernetes_example_runs_on_runc(agent: Agent, registry: str, tmp_path: Path) -> None:
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "pull", registry)
    manifests = tmp_path / "k8s"
    shutil.copytree(EXAMPLES, manifests)
    deployment = manifests / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("busybox:1.36", registry))

    applied = agent.cli("apply", "--strict", "-f", str(manifests))
    assert "deployment default/httpd created" in applied.stdout, applied

    def ready(items: list[Any]) -> list[Any] | None:
        ok = len(items) == 2 and all(i["state"] == "running" and i["ready"] for i in items)
        return items if ok else None

    instances = agent.wait_for("instances", ready)
    name = instances[0]["name"]
    page, token = agent.cli_side_by_side(
        ("exec", name, "--", "wget", "-qO-", "http://127.0.0.1/"),
        ("exec", name, "--", "sh", "-c", "echo $API_TOKEN"),
    )
    assert "Hello from a Kubernetes Deployment on Shoal" in page.stdout
    assert token.stdout.strip() == TOKEN

    table, secrets, as_applied = agent.cli_side_by_side(
        ("get", "deployments"),
        ("get", "secrets", "-o", "yaml"),
        ("get", "deployment", "httpd", "-o", "yaml"),
    )
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row.split()[:2] == ["httpd", "2/2"]
    assert TOKEN not in secrets.stdout
    document = yaml.safe_load(as_applied.stdout)
    assert document["kind"] == "Deployment" and document["status"]["ready_replicas"] == 2

    page_file = manifests / "page.yaml"
    page_file.write_text(page_file.read_text().replace("Hello from", "Bonjour from"))
    diff = agent.cli("diff", "-f", str(manifests), check=False)
    assert diff.returncode == 1 and "~ configmap default/httpd-page (update)" in diff.stdout
    assert "-<h1>Hello from" in diff.stdout and "+<h1>Bonjour from" in diff.stdout, diff.stdout
    assert "origin." not in diff.stdout  # the manifest's copy of the same change

    agent.cli("delete", "deployment", "httpd")
    agent.wait_for("workloads", lambda items: items == [] or None)
