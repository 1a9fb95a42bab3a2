"""Liveness and readiness probes driven by a manual clock against the mock runtime."""

from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest

from shoal.core._probes import run_check
from shoal.interfaces import EventType, ExecResult, InstanceState, PodStatus, Probe, WorkloadSpec
from shoal.runtime import Fault, FaultKind
from tests.core.support import Cluster, eventually

pytestmark = pytest.mark.anyio


def probed(kind: str, **probe: object) -> WorkloadSpec:
    check = {"exec": {"command": ["check"]}, "period_seconds": 1, **probe}
    return WorkloadSpec.model_validate(
        {
            "name": "web",
            "replicas": 1,
            "template": {"containers": [{"name": "main", "image": "busybox", kind: check}]},
        }
    )


async def instance_state(cluster: Cluster) -> tuple[InstanceState, bool, int]:
    (inst,) = await cluster.service.list_instances()
    return inst.state, inst.ready, inst.restart_count


async def test_readiness_gates_ready_until_the_probe_passes(cluster: Cluster) -> None:
    loop = await cluster.add_node("n1")
    runtime = cluster.runtimes["n1"]
    runtime.set_exec_result("main", ExecResult(exit_code=1, stderr="not yet"))
    await cluster.service.apply([probed("readiness_probe", failure_threshold=1)])
    await cluster.settle()
    assert await instance_state(cluster) == (InstanceState.RUNNING, False, 0)
    await loop.probe_once()
    assert (await instance_state(cluster))[1] is False
    assert (await cluster.workload()).status.ready_replicas == 0

    runtime.set_exec_result("main", ExecResult(exit_code=0))
    cluster.clock.advance(1)
    await loop.probe_once()
    await cluster.settle()
    assert await instance_state(cluster) == (InstanceState.RUNNING, True, 0)
    assert (await cluster.workload()).status.ready_replicas == 1

    runtime.set_exec_result("main", ExecResult(exit_code=1))
    cluster.clock.advance(1)
    await loop.probe_once()
    assert (await instance_state(cluster))[1] is False
    events = await cluster.service.list_events(kind="Instance")
    assert [e.reason for e in events][-2:] == ["Ready", "NotReady"]
    assert events[-1].message == "failed its readiness probe (container main: exec exited 1)"


async def test_an_instance_never_ready_says_why_once(cluster: Cluster) -> None:
    loop = await cluster.add_node("n1")
    runtime = cluster.runtimes["n1"]
    runtime.set_exec_result("main", ExecResult(exit_code=1, stderr="no backend"))
    await cluster.service.apply([probed("readiness_probe", failure_threshold=3)])
    await cluster.settle()

    async def not_ready_events() -> list[tuple[str, str]]:
        events = await cluster.service.list_events(kind="Instance")
        return [(e.type, e.message) for e in events if e.reason == "NotReady"]

    for _ in range(2):  # under the threshold: nothing to say yet
        await loop.probe_once()
        cluster.clock.advance(1)
    assert await not_ready_events() == []
    for _ in range(5):  # the third failure says why; the next ones say nothing more
        await loop.probe_once()
        cluster.clock.advance(1)
    expected = "failed its readiness probe (container main: exec exited 1 no backend)"
    assert await not_ready_events() == [(EventType.WARNING, expected)]
    assert await instance_state(cluster) == (InstanceState.RUNNING, False, 0)
    explained = await cluster.service.explain((await cluster.service.list_instances())[0].name)
    assert any(e.message == expected for e in explained.events)  # explain shows the reason


async def test_the_not_ready_event_names_the_probe_that_failed(cluster: Cluster) -> None:
    loop = await cluster.add_node("n1")
    runtime = cluster.runtimes["n1"]
    check = {"exec": {"command": ["check"]}, "period_seconds": 1}
    containers = [  # a: passing, short of its success_threshold; b: failing
        {"name": "a", "image": "busybox", "readiness_probe": {**check, "success_threshold": 2}},
        {"name": "b", "image": "busybox", "readiness_probe": {**check, "failure_threshold": 1}},
    ]
    workload = {"name": "web", "replicas": 1, "template": {"containers": containers}}
    runtime.set_exec_result("a", ExecResult(exit_code=0, stdout="fine"))
    runtime.set_exec_result("b", ExecResult(exit_code=1, stderr="no backend"))
    await cluster.service.apply([WorkloadSpec.model_validate(workload)])
    await cluster.settle()
    await loop.probe_once()
    events = await cluster.service.list_events(kind="Instance")
    (told,) = [e.message for e in events if e.reason == "NotReady"]
    assert told == "failed its readiness probe (container b: exec exited 1 no backend)"


async def test_failed_liveness_restarts_the_instance(cluster: Cluster) -> None:
    loop = await cluster.add_node("n1")
    runtime = cluster.runtimes["n1"]
    await cluster.service.apply([probed("liveness_probe", failure_threshold=2)])
    await cluster.settle()
    runtime.set_exec_result("main", ExecResult(exit_code=3, stdout="sick"))
    await loop.probe_once()  # one failure: under the threshold
    assert (await instance_state(cluster))[0] == InstanceState.RUNNING
    cluster.clock.advance(1)
    await loop.probe_once()  # second failure: the pod is stopped, reported failed
    (inst,) = await cluster.service.list_instances()
    assert inst.state == InstanceState.FAILED
    assert inst.reason == "LivenessProbeFailed"
    assert "exec exited 3 sick" in inst.message
    await cluster.settle()  # the control loop restarts it (backoff 1 s)
    runtime.set_exec_result("main", None)
    cluster.clock.advance(1)
    await cluster.settle()
    assert await instance_state(cluster) == (InstanceState.RUNNING, True, 1)
    explained = await cluster.service.explain(inst.name)
    assert (
        "restarted 1 time(s); the last time after Unhealthy: liveness probe of main failed: "
        "exec exited 3 sick; stopping it (grace 10 s)"
    ) in explained.details


async def test_a_liveness_kill_is_reported_as_one_not_as_a_crash(cluster: Cluster) -> None:
    """Readiness and liveness fail together; the pod takes its grace period to stop."""
    loop = await cluster.add_node("n1")
    runtime = cluster.runtimes["n1"]
    runtime.faults.add(Fault(kind=FaultKind.IGNORES_SIGTERM))
    check = {"exec": {"command": ["check"]}, "period_seconds": 1, "failure_threshold": 1}
    container = {"name": "main", "image": "busybox", "liveness_probe": check}
    container["readiness_probe"] = check
    workload = {"name": "web", "replicas": 1, "template": {"containers": [container]}}
    await cluster.service.apply([WorkloadSpec.model_validate(workload)])
    await cluster.settle()
    await loop.probe_once()  # both pass: ready
    assert await instance_state(cluster) == (InstanceState.RUNNING, True, 0)

    async def reasons() -> list[str]:
        return [e.reason for e in await cluster.service.list_events(kind="Instance")]

    runtime.set_exec_result("main", ExecResult(exit_code=1, stderr="stuck"))
    cluster.clock.advance(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.probe_once)  # stops the pod: waits out its grace (the clock's)
        await eventually(lambda: _has(reasons, "Unhealthy"))
        # Unready at once, and said before the stop, not after its 10 s.
        assert (await reasons())[-2:] == ["NotReady", "Unhealthy"]
        assert await instance_state(cluster) == (InstanceState.RUNNING, False, 0)
        (inst,) = await cluster.service.list_instances()
        runtime.kill(inst.uid, "main")  # it dies meanwhile: a pass sees it exited first
        await loop.reconcile_once()
        seen = await cluster.service.get_instance(inst.name)
        assert (seen.state, seen.reason) == (InstanceState.FAILED, "LivenessProbeFailed")
        cluster.clock.advance(loop.stop_grace)
    (inst,) = await cluster.service.list_instances()
    assert (inst.state, inst.reason) == (InstanceState.FAILED, "LivenessProbeFailed")
    assert "Error" not in await reasons()  # the kill is no crash of its own


async def _has(reasons: Callable[[], Awaitable[list[str]]], reason: str) -> bool:
    return reason in await reasons()


async def test_probes_wait_for_their_initial_delay(cluster: Cluster) -> None:
    loop = await cluster.add_node("n1")
    cluster.runtimes["n1"].set_exec_result("main", ExecResult(exit_code=1))
    await cluster.service.apply(
        [probed("liveness_probe", failure_threshold=1, initial_delay_seconds=30)]
    )
    await cluster.settle()
    await loop.probe_once()
    assert (await instance_state(cluster))[0] == InstanceState.RUNNING
    cluster.clock.advance(30)
    await loop.probe_once()
    assert (await instance_state(cluster))[0] == InstanceState.FAILED


async def test_http_and_tcp_probes_against_a_real_listener(cluster: Cluster) -> None:
    """The pod answers on 127.0.0.1 (host networking): a real socket server stands in."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive(1024)
            await stream.send(b"HTTP/1.0 204 No Content\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    pod = PodStatus(uid="u", name="p", namespace="default", containers=[], ip="127.0.0.1")
    runtime = cluster.runtimes.get("n1") or (await cluster.add_node("n1")).runtime
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        http = Probe.model_validate({"http_get": {"port": port, "path": "/healthz"}})
        assert await run_check(http, runtime, pod, "main") == (
            True,
            "HTTP GET /healthz answered 204",
        )
        tcp = Probe.model_validate({"tcp_socket": {"port": port}})
        assert (await run_check(tcp, runtime, pod, "main"))[0]
        tg.cancel_scope.cancel()
    closed = Probe.model_validate({"tcp_socket": {"port": port}})
    ok, message = await run_check(closed, runtime, pod, "main")
    assert not ok and message.startswith("connection failed")
