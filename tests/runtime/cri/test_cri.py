"""CriRuntime beyond the conformance suite, on the session's private containerd.

Adoption by a new runtime object and across a containerd restart, the pod
network with a published host port, resource limits in the cgroups, logs
that end with their container (long lines written in parts joined again),
and the errors a user sees. Volumes and init containers are in the
conformance suites.
"""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path

import anyio
import grpc
import grpc.aio
import httpx
import pytest
from scripts.build_busybox_image import INDEX_HTML

from shoal.interfaces import (
    Container,
    ContainerState,
    ImageError,
    NotFound,
    PodSpec,
    Port,
    ResourceList,
    Resources,
    Unavailable,
    Volume,
)
from shoal.runtime.cri import CriRuntime
from tests.ports import free_port
from tests.runtime.cri.harness import SLEEPER, cri_runtime
from tests.runtime.cri.support import IMAGE, MISSING_IMAGE, SUBNET, PrivateContainerd

pytestmark = pytest.mark.anyio

WAIT = 15.0


def new_pod(
    *containers: Container, volumes: list[Volume] | None = None, **extra: object
) -> PodSpec:
    uid = uuid.uuid4().hex
    chosen = list(containers) or [Container(name="main", image=IMAGE, command=SLEEPER)]
    return PodSpec.model_validate(
        {
            "uid": uid,
            "name": f"web-{uid[:6]}",
            "namespace": "default",
            "workload": "web",
            "containers": [c.model_dump() for c in chosen],
            "volumes": [v.model_dump() for v in volumes or []],
            **extra,
        }
    )


async def get_page(port: int) -> str:
    """GET http://127.0.0.1:port/ until it answers 200 (bounded)."""
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/")
                    if response.status_code == 200:
                        return response.text
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)  # httpd starts in the background; bounded above


async def test_a_new_runtime_object_adopts_the_pods_of_its_owner_only(
    private_containerd: PrivateContainerd,
) -> None:
    async with cri_runtime(private_containerd, owner="adopt-a") as first:
        spec = new_pod()
        ran = await first.run(spec)
        async with cri_runtime(private_containerd, owner="adopt-b") as other:
            assert await other.list() == []
            with pytest.raises(NotFound):
                await other.inspect(spec.uid)
        again = CriRuntime(
            first.root,
            endpoint=private_containerd.endpoint,
            owner="adopt-a",
            cgroup_parent=private_containerd.cgroup_parent,
        )
        async with again:
            listed = await again.list()
            assert [pod.uid for pod in listed] == [spec.uid]
            assert listed[0].running
            assert [c.id for c in listed[0].containers] == [c.id for c in ran.containers]
            assert listed[0].ip == ran.ip


async def test_pods_are_found_again_after_containerd_restarts(
    private_containerd: PrivateContainerd,
) -> None:
    async with cri_runtime(private_containerd) as runtime:
        spec = new_pod()
        ran = await runtime.run(spec)
        private_containerd.stop_containerd()
        try:
            with pytest.raises(Unavailable, match=private_containerd.endpoint):
                await runtime.inspect(spec.uid)
        finally:
            private_containerd.start_containerd()
        with anyio.fail_after(WAIT):
            while True:  # the CRI plugin recovers its state after containerd has booted
                try:
                    listed = await runtime.list()
                    break
                except Unavailable:
                    await anyio.sleep(0.05)
        assert [pod.uid for pod in listed] == [spec.uid]  # nothing duplicated
        assert listed[0].running
        assert [c.id for c in listed[0].containers] == [c.id for c in ran.containers]
        result = await runtime.exec(spec.uid, "main", ["echo", "still-here"])
        assert result.stdout == "still-here\n"


async def test_a_pod_gets_an_address_on_the_bridge_and_its_host_port_is_published(
    private_containerd: PrivateContainerd,
) -> None:
    async with cri_runtime(private_containerd) as runtime:
        host_port = free_port()
        web = Container(
            name="web",
            image=IMAGE,
            command=["httpd", "-f", "-p", "80", "-h", "/var/www"],
            ports=[Port(container_port=80, host_port=host_port)],
        )
        side = Container(name="side", image=IMAGE, command=SLEEPER)
        spec = new_pod(web, side)
        status = await runtime.run(spec)
        assert status.ip is not None
        assert ipaddress.IPv4Address(status.ip) in ipaddress.IPv4Network(SUBNET)
        assert await get_page(host_port) == INDEX_HTML.decode()
        # The sidecar reaches the web server on the pod's loopback: one network namespace.
        fetched = await runtime.exec(spec.uid, "side", ["wget", "-qO-", "http://127.0.0.1/"])
        assert fetched.stdout == INDEX_HTML.decode()
        await runtime.remove(spec.uid)
        with anyio.fail_after(WAIT):
            while True:  # the port is unpublished with the sandbox
                try:
                    async with httpx.AsyncClient(trust_env=False, timeout=0.5) as client:
                        await client.get(f"http://127.0.0.1:{host_port}/")
                except httpx.TransportError:
                    break
                await anyio.sleep(0.05)


async def test_resource_limits_reach_the_container_cgroups(
    private_containerd: PrivateContainerd,
) -> None:
    limits = Resources(limits=ResourceList(cpu="500m", memory="64Mi"))
    async with cri_runtime(private_containerd) as runtime:
        spec = new_pod(Container(name="main", image=IMAGE, command=SLEEPER, resources=limits))
        status = await runtime.run(spec)
        cgroup = f"{private_containerd.cgroup_parent}/{status.containers[0].id}"
        memory = Path("/sys/fs/cgroup/memory") / cgroup.lstrip("/") / "memory.limit_in_bytes"
        cpu = Path("/sys/fs/cgroup/cpu") / cgroup.lstrip("/") / "cpu.cfs_quota_us"
        if not memory.exists():
            pytest.skip("not a cgroup v1 host: the limits are checked through v1 files")
        assert int(memory.read_text()) == 64 * 1024 * 1024
        assert int(cpu.read_text()) == 50_000  # half of the 100 ms period
        stats = await runtime.stats(spec.uid)
        assert stats[0].memory_bytes > 0
        assert stats[0].pids >= 2  # sh and its sleep


async def test_follow_ends_when_the_container_exits_and_partial_lines_are_joined(
    private_containerd: PrivateContainerd,
) -> None:
    # 20000 characters: longer than containerd's 16 KiB line buffer, so written as P + F records.
    script = "printf 'a%.0s' $(seq 20000); echo; echo done; sleep 0.2"
    spec = new_pod(Container(name="main", image=IMAGE, command=["sh", "-c", script]))
    async with cri_runtime(private_containerd) as runtime:
        await runtime.run(spec)
        with anyio.fail_after(WAIT):
            lines = [line async for line in runtime.logs(spec.uid, "main", follow=True)]
        assert [line.line for line in lines] == ["a" * 20000, "done"]
        raw = (runtime.root / "pods" / spec.uid / "logs" / "main.log").read_text()
        assert " stdout P " in raw
        status = await runtime.inspect(spec.uid)
        assert status.containers[0].state == ContainerState.EXITED
        assert status.containers[0].exit_code == 0


async def test_an_image_that_cannot_be_pulled_names_the_reason(
    private_containerd: PrivateContainerd,
) -> None:
    spec = new_pod(Container(name="main", image=MISSING_IMAGE, command=SLEEPER))
    async with cri_runtime(private_containerd) as runtime:
        with pytest.raises(ImageError, match=r"127\.0\.0\.1:1") as caught:
            await runtime.create(spec)
        assert "connect" in str(caught.value) or "refused" in str(caught.value)
        assert await runtime.list() == []


async def test_an_endpoint_nothing_listens_on_is_unavailable_with_the_fix(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/none.sock"
    runtime = CriRuntime(tmp_path, endpoint=endpoint)
    with pytest.raises(Unavailable) as caught:
        async with runtime:
            pass
    message = str(caught.value)
    assert endpoint in message
    assert "make run RUNTIME=cri" in message


async def test_an_endpoint_that_is_not_cri_v1_is_unavailable_naming_it(tmp_path: Path) -> None:
    server = grpc.aio.server()
    socket = tmp_path / "other.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        runtime = CriRuntime(tmp_path, endpoint=f"unix://{socket}")
        with pytest.raises(Unavailable, match="does not implement CRI v1 Version"):
            async with runtime:
                pass
    finally:
        await server.stop(None)


async def test_exec_past_its_time_limit_is_killed_and_a_missing_command_gives_127(
    private_containerd: PrivateContainerd,
) -> None:
    async with cri_runtime(private_containerd) as runtime:
        spec = new_pod()
        await runtime.run(spec)
        with anyio.fail_after(WAIT):
            slow = await runtime.exec(spec.uid, "main", ["sleep", "30"], time_limit=1)
        assert slow.exit_code == 137
        missing = await runtime.exec(spec.uid, "main", ["no-such-command"])
        assert missing.exit_code == 127
        assert "no-such-command" in missing.stderr
        failing = await runtime.exec(
            spec.uid, "main", ["sh", "-c", "echo out; echo err >&2; exit 3"]
        )
        assert (failing.exit_code, failing.stdout, failing.stderr) == (3, "out\n", "err\n")
