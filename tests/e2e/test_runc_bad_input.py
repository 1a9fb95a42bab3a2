"""Issue 3's bad input, end to end, on a real agent running runc.

Each bad workload — an image that does not exist, a registry that is down, a
command missing from the image, a memory limit too small for its process —
must leave its own instance failed with a clear reason, message and event,
while a healthy workload applied before it keeps running untouched (same
uid, no restart, exec still works). Importing a file that is not an image
must fail with one clear line and exit code 1, recording nothing.

The bad workloads use ``restart_policy: Never`` so their failed status stays
put to be read; the agent uses host networking, since none of this concerns
the network. One agent and its healthy workload serve the whole module: each
test applies its own bad workload (named after the case) and deletes it, so
the healthy instance must come through every case in turn untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.client import ShoalClient
from tests.e2e.conftest import Agent, agent_in, until
from tests.ports import free_port

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


def workload(name: str, container: dict[str, Any], **fields: Any) -> str:
    document = {
        "kind": "Workload",
        "name": name,
        "replicas": 1,
        "template": {"containers": [{"name": "main", **container}]},
        **fields,
    }
    return json.dumps(document)


def instance_in(instances: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    found = [i for i in instances if i["workload"] == name]
    return found[0] if found else None


def events_about(events: list[dict[str, Any]], instance: str) -> list[dict[str, Any]]:
    return [
        e for e in events if e["object"]["kind"] == "Instance" and e["object"]["name"] == instance
    ]


@dataclass(frozen=True)
class Node:
    """The module's runc agent and its healthy instance, as first seen running."""

    agent: Agent
    healthy: dict[str, Any]


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory, busybox_layout: Path) -> Iterator[Node]:
    """Start a runc agent, import the image, run a healthy workload; removed after the module."""
    with agent_in(tmp_path_factory.mktemp("runc-agent")) as agent:
        agent.runtime = "runc"
        agent.start("--network", "host")
        agent.cli("images", "import", str(busybox_layout), "--reference", IMAGE)
        agent.cli(
            "apply",
            "-f",
            "-",
            stdin=workload("healthy", {"image": IMAGE, "command": LONG_RUNNING}),
        )

        def running(items: list[dict[str, Any]]) -> dict[str, Any] | None:
            found = instance_in(items, "healthy")
            return found if found and found["state"] == "running" else None

        yield Node(agent, agent.wait_for("instances", running))


@pytest.fixture
def node(shared_node: Node) -> Iterator[Node]:
    """The shared node; whatever workload a test left on it (failing half way) is deleted."""
    yield shared_node

    async def delete_leftovers(client: ShoalClient) -> None:
        for left in await client.list_workloads():
            if left.name != "healthy" and not left.deleting:
                await client.delete_workload(left.name, left.namespace)

    shared_node.agent.api(delete_leftovers)


def assert_undisturbed(
    healthy: dict[str, Any],
    instances: list[dict[str, Any]],
    events: list[dict[str, Any]],
    exec_stdout: str,
) -> None:
    """The healthy instance is the same one, still running, never restarted, still usable.

    ``instances`` and ``events`` are what `get instances` and `events` list;
    ``exec_stdout`` is what `exec <healthy> -- cat /etc/shoal-image` printed.
    """
    now = instance_in(instances, "healthy")
    assert now is not None, "the healthy instance is gone"
    assert (now["uid"], now["state"], now["restart_count"]) == (healthy["uid"], "running", 0), now
    assert exec_stdout.startswith("busybox built by"), exec_stdout
    warnings = [e for e in events_about(events, healthy["name"]) if e["type"] == "Warning"]
    assert warnings == []


def assert_undisturbed_by_api(agent: Agent, healthy: dict[str, Any]) -> None:
    """assert_undisturbed, with everything seen through the signed REST API."""

    async def cat(client: ShoalClient) -> str:
        done = await client.exec(healthy["name"], ["cat", "/etc/shoal-image"])
        assert done.exit_code == 0, done
        return done.stdout

    assert_undisturbed(healthy, agent.read("instances"), agent.read("events"), agent.api(cat))


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
def test_bad_workload_fails_its_instance_only(node: Node, case: str) -> None:
    agent, healthy = node.agent, node.healthy
    bad = BAD_INPUTS[case]
    name = f"bad-{case}"
    port = str(free_port())  # bound and closed again: nobody listens on it
    container = json.loads(json.dumps(bad.container).replace(CLOSED_PORT, port))
    says = tuple(text.replace(CLOSED_PORT, port) for text in bad.says)

    agent.cli("apply", "-f", "-", stdin=workload(name, container, restart_policy="Never"))

    def failed(items: list[dict[str, Any]]) -> dict[str, Any] | None:
        found = instance_in(items, name)
        return found if found and found["state"] == "failed" else None

    agent.wait_for("instances", failed)
    # What the CLI shows once it has failed (restart_policy Never: it stays so).
    listed, logged, cat = agent.cli_side_by_side(
        ("get", "instances", "-o", "json"),
        ("events", "--limit", "500", "-o", "json"),
        ("exec", healthy["name"], "--", "cat", "/etc/shoal-image"),
    )
    instances, events = json.loads(listed.stdout), json.loads(logged.stdout)
    instance = instance_in(instances, name)
    assert instance is not None and instance["state"] == "failed", instance
    assert instance["reason"] == bad.reason
    for text in says:
        assert text in instance["message"]
    assert instance["exit_code"] == bad.exit_code
    assert not instance["ready"]
    warnings = [e for e in events_about(events, instance["name"]) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [bad.reason]
    assert warnings[0]["message"] == instance["message"]
    if not bad.leaves_pod:  # a failed start leaves nothing behind in the runtime
        assert pod_dirs(agent, instance["uid"]) == []
        assert runc_containers(agent, instance["uid"]) == []
    assert_undisturbed(healthy, instances, events, cat.stdout)

    agent.cli("delete", name)
    agent.wait_for("instances", lambda items: instance_in(items, name) is None)
    until("its pod directory to go", lambda: not pod_dirs(agent, instance["uid"]), timeout=30)
    assert runc_containers(agent, instance["uid"]) == []
    assert_undisturbed_by_api(agent, healthy)


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
def test_importing_a_file_that_is_not_an_image(node: Node, tmp_path: Path, make_file: Any) -> None:
    agent, healthy = node.agent, node.healthy
    before = agent.json("images", "list")
    junk: Path = make_file(tmp_path / "junk.tar")

    result = agent.cli("images", "import", str(junk), check=False)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: not an image: {junk}")
    assert agent.json("images", "list") == before
    assert_undisturbed_by_api(agent, healthy)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
