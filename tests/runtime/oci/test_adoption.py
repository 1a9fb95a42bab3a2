"""Adoption: a new runtime object on the same root finds every pod, as it left them.

The agent may be killed at any time (SIGKILL); containers belong to their
shims, so they keep running, logging and recording their exit codes, and a
new runtime rebuilds every pod's status from disk and runc.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import Container, ContainerState
from shoal.runtime import OciCliRuntime
from shoal.runtime.oci._ocifiles import PodFiles
from tests.runtime.oci.harness import IMAGE, busybox_layer, new_pod, oci_runtime
from tests.runtime.oci.support import WAIT, container_ids, eventually, mounts_under, shim_pids

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[3]
AGENT = """
import sys, anyio
from pathlib import Path
from shoal.interfaces import Container, PodSpec
from shoal.runtime import OciCliRuntime
from shoal.runtime.oci._ocifiles import PodFiles
from tests.runtime.oci.harness import image_source

layer, root, state, uid = sys.argv[1:]
script = "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finishing; exit 5"

async def main() -> None:
    runtime = OciCliRuntime(image_source(Path(layer)), Path(root), state_root=Path(state))
    container = Container(name="main", image="busybox:test", command=["sh", "-c", script])
    spec = PodSpec(uid=uid, name="doom", namespace="default", workload="w", containers=[container])
    await runtime.create(spec)
    await runtime.start(uid)
    print("ready", flush=True)
    await anyio.sleep_forever()

anyio.run(main)
"""


def successor(runtime: OciCliRuntime) -> OciCliRuntime:
    """Return a new runtime object on the same root and state root."""
    return OciCliRuntime(runtime.images, runtime.root, state_root=runtime.runc.state_root)


async def test_a_new_runtime_on_the_same_root_sees_every_pod(runtime: OciCliRuntime) -> None:
    running, created = new_pod(name="run"), new_pod(name="new")
    failed = new_pod(Container(name="main", image=IMAGE, command=["sh", "-c", "exit 3"]))
    for spec in (running, created, failed):
        await runtime.create(spec)
    await runtime.start(running.uid)
    await runtime.start(failed.uid)
    with anyio.fail_after(WAIT):
        async for _ in runtime.logs(failed.uid, "main", follow=True):
            pass
    before = {pod.uid: pod for pod in await runtime.list()}

    async with successor(runtime) as adopter:
        after = {pod.uid: pod for pod in await adopter.list()}
        assert after == before
        assert after[running.uid].running
        assert after[created.uid].containers[0].state == ContainerState.CREATED
        assert after[failed.uid].containers[0].exit_code == 3

        assert (await adopter.exec(running.uid, "main", ["true"])).exit_code == 0
        assert (await adopter.start(created.uid)).running
        for uid in after:
            await adopter.stop(uid, 5)
            await adopter.remove(uid)
        assert await adopter.list() == []
    assert container_ids(runtime.runc.state_root) == []
    assert mounts_under(runtime.root) == []


async def test_a_new_runtime_announces_the_exit_of_a_pod_it_adopted(runtime: OciCliRuntime) -> None:
    """Watched from the first list that shows it running, not only from a start of its own."""
    adopted, other = new_pod(name="adopted"), new_pod(name="other")
    await runtime.run(adopted)
    await runtime.run(other)
    async with successor(runtime) as adopter:
        heard: list[str] = []
        told = anyio.Event()

        def listener(uid: str) -> None:
            heard.append(uid)
            told.set()

        adopter.on_exit(listener)
        await adopter.list()
        await runtime.runc.kill(PodFiles.container_id(adopted.uid, "main"), "KILL")
        with anyio.fail_after(WAIT):
            await told.wait()
        assert heard == [adopted.uid]
        for uid in (adopted.uid, other.uid):
            await adopter.remove(uid)


async def test_containers_outlive_a_sigkilled_agent(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with oci_runtime(request, tmp_path) as observer:
        uid = new_pod().uid
        argv = [str(busybox_layer(request)), str(observer.root), str(observer.runc.state_root), uid]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        agent = await anyio.open_process([sys.executable, "-c", AGENT, *argv], cwd=REPO, env=env)
        async with agent:
            assert agent.stdout is not None
            with anyio.fail_after(WAIT * 2):
                assert b"ready" in await agent.stdout.receive()
            agent.kill()  # SIGKILL: no clean-up code runs in the agent
            await agent.wait()

        (pod,) = await observer.list()
        assert (pod.uid, pod.running) == (uid, True)
        assert len(shim_pids(observer.root)) == 1
        # The container goes on without any agent; its shim logs and records the exit.
        assert (await observer.exec(uid, "main", ["touch", "/tmp/go"])).exit_code == 0
        with anyio.fail_after(WAIT):
            lines = [line.line async for line in observer.logs(uid, "main", follow=True)]
        assert lines == ["started", "finishing"]
        (container,) = (await observer.inspect(uid)).containers
        assert (container.state, container.exit_code) == (ContainerState.EXITED, 5)

        await observer.remove(uid)
        assert await observer.list() == []
        assert shim_pids(observer.root) == []


async def test_a_container_whose_shim_died_is_reported_with_a_lost_exit_code(
    runtime: OciCliRuntime,
) -> None:
    spec = new_pod()
    await runtime.create(spec)
    await runtime.start(spec.uid)
    files = runtime.files.container(spec.uid, "main")
    shim = int(files.shim_pid.read_text().split()[0])
    os.kill(shim, signal.SIGKILL)  # a shim this test's runtime started
    await eventually(lambda: not files.shim_alive())
    assert (await runtime.inspect(spec.uid)).running  # the container does not depend on it

    (container,) = (await runtime.stop(spec.uid, 5)).containers
    assert (container.state, container.exit_code) == (ContainerState.EXITED, 255)
    assert "exit code lost" in container.message
    await runtime.remove(spec.uid)
    assert container_ids(runtime.runc.state_root) == []
    assert mounts_under(runtime.root) == []
