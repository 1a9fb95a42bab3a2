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
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scripts.build_busybox_image import build_busybox_layout

from tests.e2e.conftest import Agent
from tests.runtime.images.support import LoopbackRegistry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = LoopbackRegistry.missing()
    if missing:
        pytest.skip(missing)
    built = build_busybox_layout(tmp_path_factory.mktemp("layout") / "busybox", "1.36")
    server = LoopbackRegistry(tmp_path_factory.mktemp("registry"))
    server.start()
    try:
        yield server.push(built.layout, "1.36")
    finally:
        server.stop()


def poll(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)  # noqa: TID251 - polling processes outside this one, bounded
    raise AssertionError("timed out")


def leftovers(data_dir: Path, uid: str) -> list[str]:
    """Everything the runtime could leave behind for one pod."""
    found = []
    runc = subprocess.run(
        ["runc", "--root", str(data_dir / "runtime" / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    found += [f"runc container {c}" for c in runc if c.startswith(uid)]
    pods = data_dir / "runtime" / "pods"
    if pods.exists():
        found += [f"pod dir {p.name}" for p in pods.iterdir() if p.name.startswith(uid)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if uid[:12] in line]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    found += [f"iptables {line}" for line in rules.splitlines() if uid in line]
    mounts = Path("/proc/mounts").read_text()
    found += [f"mount {line}" for line in mounts.splitlines() if uid in line]
    return found


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

    def ready() -> Any:
        items = agent.json("get", "instances")
        return items if items and items[0]["state"] == "running" and items[0]["ready"] else None

    (instance,) = poll(ready)
    name, uid = instance["name"], instance["uid"]
    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert page.status_code == 200 and "busybox" in page.text

    # httpd -v logs to stderr (the CLI keeps the streams apart), through the log shim.
    poll(lambda: "response:200" in agent.cli("logs", name, "--tail", "20").stderr)
    assert agent.cli("exec", name, "--", "cat", "/etc/passwd").stdout.startswith("root:")
    failing = agent.cli("exec", name, "--", "sh", "-c", "exit 7", check=False)
    assert failing.returncode == 7
    top = agent.cli("top").stdout
    assert name in top

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
    (after,) = poll(ready)
    history = agent.cli("events", "--limit", "200").stdout
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
    assert "Adopted" in agent.cli("events", "--limit", "200").stdout

    agent.cli("delete", "httpd")
    poll(lambda: agent.json("get", "workloads") == [])
    poll(lambda: not leftovers(agent.data_dir, uid), timeout=30)
    assert leftovers(agent.data_dir, uid) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
