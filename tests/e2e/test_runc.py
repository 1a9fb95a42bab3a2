"""Issue 3's "done when", end to end, on a real agent running runc.

An image pulled from a loopback registry, busybox httpd answering on a
published port, logs/exec/top, adoption after SIGKILL, and nothing left
behind after delete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.client import ShoalClient
from shoal.interfaces import UsageSeries
from tests.e2e.conftest import Agent, leftovers, until
from tests.ports import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]


def test_httpd_from_a_loopback_registry_on_runc(
    agent: Agent, registry: str, tmp_path: Path
) -> None:
    agent.runtime = "runc"
    agent.start()
    pulled = agent.cli("images", "pull", registry)
    assert f"pulled {registry}" in pulled.stdout

    port = free_port()
    workload = tmp_path / "httpd.yaml"
    workload.write_text(
        (Path(__file__).parents[2] / "examples" / "httpd.yaml")
        .read_text()
        .replace("busybox:1.36", registry)
        .replace("host_port: 8080", f"host_port: {port}")
    )
    agent.cli("apply", "-f", str(workload))

    def ready(items: list[Any]) -> Any:
        return items if items and items[0]["state"] == "running" and items[0]["ready"] else None

    (instance,) = agent.wait_for("instances", ready)
    name, uid = instance["name"], instance["uid"]
    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert page.status_code == 200 and "busybox" in page.text

    async def served(client: ShoalClient) -> bool:
        return any(["response:200" in log.line async for log in client.logs(name, tail=20)])

    # httpd -v logs to stderr (the CLI keeps the streams apart), through the log shim.
    agent.until("httpd to log its response", served)
    logs, passwd, failing, top = agent.cli_side_by_side(
        ("logs", name, "--tail", "20"),
        ("exec", name, "--", "cat", "/etc/passwd"),
        ("exec", name, "--", "sh", "-c", "exit 7"),
        ("top",),
        check=False,
    )
    assert logs.returncode == 0, logs.stderr
    assert "response:200" in logs.stderr and "response:200" not in logs.stdout
    assert passwd.returncode == 0 and passwd.stdout.startswith("root:"), passwd
    assert failing.returncode == 7
    assert top.returncode == 0 and name in top.stdout, top

    # The node samples the instance every 10 s from runc's cgroups into its usage history.
    async def sampled(client: ShoalClient) -> UsageSeries | None:
        series = await client.usage("instance", name, range="15m")
        return series if any(p.memory_bytes > 0 for p in series.points) else None

    series = agent.until("the node to sample the instance's memory", sampled, timeout=30)
    assert series.node == "e2e-node" and series.step_seconds == 10
    charted = agent.cli("top", "--range", "15m").stdout
    assert name in charted and "no samples" not in charted, charted

    pid_before = json.loads(
        subprocess.run(
            ["runc", "--root", str(agent.data_dir / "runtime" / "runc"), "state", f"{uid}-web"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["pid"]
    agent.kill(signal.SIGKILL)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # still serving
    agent.start()

    async def adopted(client: ShoalClient) -> bool:
        return any(e.reason == "Adopted" for e in await client.list_events(limit=200))

    # The stored instance says running all along: the Adopted event says the new agent saw it.
    agent.until("the restarted agent to adopt its pod", adopted)
    (after,) = agent.wait_for("instances", ready)
    history = agent.cli("events", "--limit", "200").stdout
    assert "Adopted" in history
    assert after["uid"] == uid, history
    assert after["restart_count"] == 0, history  # adopted, not restarted
    pid_after = json.loads(
        subprocess.run(
            ["runc", "--root", str(agent.data_dir / "runtime" / "runc"), "state", f"{uid}-web"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["pid"]
    assert pid_after == pid_before

    agent.cli("delete", "httpd")
    agent.wait_for("workloads", lambda items: items == [])
    until("nothing left of the pod", lambda: not leftovers(agent.data_dir, uid), timeout=30)
    assert leftovers(agent.data_dir, uid) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
