"""Issue 3's bad input, end to end, on a real agent running runc.

Each bad workload — an image that does not exist, a registry that is down, a
command missing from the image, a memory limit too small for its process —
must leave its own instance failed with a clear reason, message and event,
while a healthy workload applied before it keeps running untouched (same
uid, no restart, exec still works). Importing a file that is not an image
must fail with one clear line and exit code 1, recording nothing.

The bad workloads use ``restart_policy: Never`` so their failed status stays
put to be read; the agent uses host networking, since none of this concerns
the network.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scripts.build_busybox_image import build_busybox_layout

from tests.e2e.conftest import Agent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]

IMAGE = "busybox:1.36"
LONG_RUNNING = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"""Runs until SIGTERM and exits at once on it (PID 1 ignores an untrapped SIGTERM)."""
CLOSED_PORT = "{closed-port}"
"""Replaced by a loopback port nobody listens on."""


@dataclass(frozen=True)
class BadInput:
    """A bad container and what its instance must say about it."""

    container: dict[str, Any]
    reason: str
    says: tuple[str, ...]
    exit_code: int | None = None
    leaves_pod: bool = False
    """Whether the runtime keeps the (exited) pod until the instance is deleted."""


BAD_INPUTS = {
    "image-not-found": BadInput(
        {"image": "nosuch/image:1.0", "command": LONG_RUNNING},
        "ImagePullFailed",
        ("nosuch/image:1.0", "not in the local image store", "shoal images import"),
    ),
    "registry-down": BadInput(
        {"image": f"127.0.0.1:{CLOSED_PORT}/busybox:1.36", "command": LONG_RUNNING},
        "ImagePullFailed",
        (f"cannot reach registry 127.0.0.1:{CLOSED_PORT}", "check that it is running"),
    ),
    "command-not-in-image": BadInput(
        {"image": IMAGE, "command": ["/no/such/program"]},
        "StartFailed",
        ("/no/such/program", "no such file or directory"),
    ),
    "memory-limit-too-small": BadInput(
        {
            "image": IMAGE,
            # The shell holds 20 MB in a variable: over the 4 MiB limit, the
            # kernel OOM-kills it (SIGKILL, so exit code 137).
            "command": ["sh", "-c", "x=$(head -c 20000000 /dev/zero | tr '\\0' a); sleep 100"],
            "resources": {"limits": {"memory": "4Mi"}},
        },
        "Error",
        ("exited 137",),
        exit_code=137,
        leaves_pod=True,
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)  # noqa: TID251 - polling processes outside this one, bounded
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_layout(tmp_path_factory.mktemp("layout") / "busybox", "1.36").layout


def workload(name: str, container: dict[str, Any], **fields: Any) -> str:
    document = {
        "kind": "Workload",
        "name": name,
        "replicas": 1,
        "template": {"containers": [{"name": "main", **container}]},
        **fields,
    }
    return json.dumps(document)


def instance_of(agent: Agent, name: str) -> dict[str, Any] | None:
    found = [i for i in agent.json("get", "instances") if i["workload"] == name]
    return found[0] if found else None


def events_about(agent: Agent, instance: str) -> list[dict[str, Any]]:
    return [
        e
        for e in agent.json("events", "--limit", "500")
        if e["object"]["kind"] == "Instance" and e["object"]["name"] == instance
    ]


def start_with_healthy_workload(agent: Agent, layout: Path) -> dict[str, Any]:
    """Start a runc agent, import the image, run a healthy workload; return its instance."""
    agent.runtime = "runc"
    agent.start("--network", "host")
    agent.cli("images", "import", str(layout), "--reference", IMAGE)
    agent.cli(
        "apply", "-f", "-", stdin=workload("healthy", {"image": IMAGE, "command": LONG_RUNNING})
    )

    def running() -> dict[str, Any] | None:
        found = instance_of(agent, "healthy")
        return found if found and found["state"] == "running" else None

    instance: dict[str, Any] = poll(running)
    return instance


def assert_undisturbed(agent: Agent, healthy: dict[str, Any]) -> None:
    """The healthy instance is the same one, still running, never restarted, still usable."""
    now = instance_of(agent, "healthy")
    assert now is not None
    assert (now["uid"], now["state"], now["restart_count"]) == (healthy["uid"], "running", 0)
    assert agent.cli("exec", healthy["name"], "--", "cat", "/etc/shoal-image").stdout.startswith(
        "busybox built by"
    )
    warnings = [e for e in events_about(agent, healthy["name"]) if e["type"] == "Warning"]
    assert warnings == []


def pod_dirs(agent: Agent, uid: str) -> list[str]:
    pods = agent.data_dir / "runtime" / "pods"
    return [p.name for p in pods.iterdir() if p.name.startswith(uid)] if pods.exists() else []


def runc_containers(agent: Agent, uid: str) -> list[str]:
    listed = subprocess.run(
        ["runc", "--root", str(agent.data_dir / "runtime" / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    return [c for c in listed if c.startswith(uid)]


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_workload_fails_its_instance_only(agent: Agent, layout: Path, case: str) -> None:
    bad = BAD_INPUTS[case]
    port = str(free_port())  # bound and closed again: nobody listens on it
    container = json.loads(json.dumps(bad.container).replace(CLOSED_PORT, port))
    says = tuple(text.replace(CLOSED_PORT, port) for text in bad.says)
    healthy = start_with_healthy_workload(agent, layout)

    agent.cli("apply", "-f", "-", stdin=workload("bad", container, restart_policy="Never"))

    def failed() -> dict[str, Any] | None:
        found = instance_of(agent, "bad")
        return found if found and found["state"] == "failed" else None

    instance: dict[str, Any] = poll(failed)
    assert instance["reason"] == bad.reason
    for text in says:
        assert text in instance["message"]
    assert instance["exit_code"] == bad.exit_code
    assert not instance["ready"]
    warnings = [e for e in events_about(agent, instance["name"]) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [bad.reason]
    assert warnings[0]["message"] == instance["message"]
    if not bad.leaves_pod:  # a failed start leaves nothing behind in the runtime
        assert pod_dirs(agent, instance["uid"]) == []
        assert runc_containers(agent, instance["uid"]) == []
    assert_undisturbed(agent, healthy)

    agent.cli("delete", "bad")
    poll(lambda: instance_of(agent, "bad") is None)
    poll(lambda: not pod_dirs(agent, instance["uid"]), timeout=30)
    assert runc_containers(agent, instance["uid"]) == []
    assert_undisturbed(agent, healthy)


def random_bytes(path: Path) -> Path:
    path.write_bytes(os.urandom(4096))
    return path


def tar_without_image(path: Path) -> Path:
    inside = path.with_suffix(".txt")
    inside.write_text("a tar archive, but no image in it\n")
    with tarfile.open(path, "w") as tar:
        tar.add(inside, arcname="notes.txt")
    return path


@pytest.mark.parametrize(
    "make_file",
    [
        pytest.param(tar_without_image, id="tar-without-image"),
        pytest.param(random_bytes, id="random-bytes"),
    ],
)
def test_importing_a_file_that_is_not_an_image(
    agent: Agent, layout: Path, tmp_path: Path, make_file: Any
) -> None:
    healthy = start_with_healthy_workload(agent, layout)
    before = agent.json("images", "list")
    junk: Path = make_file(tmp_path / "junk.tar")

    result = agent.cli("images", "import", str(junk), check=False)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: not an image: {junk}")
    assert agent.json("images", "list") == before
    assert_undisturbed(agent, healthy)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
