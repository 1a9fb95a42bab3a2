"""An unreachable store stops the loops from acting, never from running: they resume after it."""

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest

from shoal.agent import NodeConfig, ShoalNode
from shoal.core import ControlLoop, DefaultScheduler, LocalNodeState, ManualClock, NodeLoop
from shoal.interfaces import (
    Container,
    Forbidden,
    InstanceState,
    NodeRole,
    PodSpec,
    StateStore,
    Unauthenticated,
)
from shoal.runtime import Fault, MockRuntime
from shoal.state import MemoryStore
from tests.core.support import Cluster, FakeCluster, FlakyStore, eventually, make_node, spec

pytestmark = pytest.mark.anyio


def running(cluster: Cluster, count: int) -> Callable[[], Awaitable[bool]]:
    """Return a check: exactly ``count`` instances exist, all running."""

    async def check() -> bool:
        instances = [s.value for s in await cluster.control.repo.list_instances()]
        return len(instances) == count and all(i.state == InstanceState.RUNNING for i in instances)

    return check


def logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in caplog.text

    return check


def holds(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


async def test_the_node_loop_keeps_its_containers_through_an_outage_and_resumes(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(cluster.store)
    runtime = MockRuntime(cluster.clock)
    node_loop = NodeLoop(make_node("n1"), LocalNodeState(flaky, "n1"), runtime, cluster.clock)
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await tg.start(node_loop.run)
        await cluster.service.apply([spec(replicas=2)])
        await eventually(running(cluster, 2))
        registered = await cluster.control.repo.get_node("n1")
        assert registered is not None

        flaky.go_down()
        await cluster.service.scale("web", 3)  # the server still takes changes
        await eventually(logged(caplog, "heartbeat of node n1 failed"), cluster.clock)
        # Its cache lost the store: passes do not act on it until it lists again.
        assert "cache of /instances/ lost its store" in caplog.text
        assert "NodeLoop.reconcile_once failed" in caplog.text
        pods = await runtime.list()
        assert len(pods) == 2 and all(pod.running for pod in pods)  # kept, though unreadable
        states = [s.value.state for s in await cluster.control.repo.list_instances()]
        assert states.count(InstanceState.SCHEDULED) == 1  # placed, but not started yet

        flaky.come_back()
        await eventually(running(cluster, 3), cluster.clock)
        assert len(await runtime.list()) == 3

        async def beats_again() -> bool:
            node = await cluster.control.repo.get_node("n1")
            assert node is not None
            return node.value.heartbeat_at != registered.value.heartbeat_at

        await eventually(beats_again, cluster.clock)
        tg.cancel_scope.cancel()


async def test_a_runtime_that_cannot_list_its_pods_fails_passes_not_the_node_loop(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = MockRuntime(cluster.clock)
    node_loop = NodeLoop(
        make_node("n1"), LocalNodeState(cluster.store, "n1"), runtime, cluster.clock
    )
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await tg.start(node_loop.run)
        await cluster.service.apply([spec(replicas=1)])
        await eventually(running(cluster, 1))

        fault = runtime.faults.add(Fault.list_fails(message="runc list: signal: killed"))
        # A pod no instance owns: only a pass that lists the pods removes it.
        orphan = PodSpec(
            uid="orphan",
            name="old-1",
            namespace="default",
            workload="old",
            containers=[Container(name="main", image="busybox")],
        )
        await runtime.create(orphan)
        await eventually(logged(caplog, "retrying in 4 s"), cluster.clock)
        failed = "could not list its pods: runc list: signal: killed); retrying in 1 s"
        assert failed in caplog.text
        assert "Traceback" not in caplog.text  # one line per failed pass

        runtime.faults.remove(fault)

        assert orphan.uid in {pod.uid for pod in await runtime.list()}

        async def orphan_removed() -> bool:
            return orphan.uid not in {pod.uid for pod in await runtime.list()}

        await eventually(orphan_removed, cluster.clock)  # passes run again
        assert len(await runtime.list()) == 1  # its own pod kept throughout
        assert await running(cluster, 1)()
        tg.cancel_scope.cancel()


async def test_the_control_loop_schedules_nothing_while_its_store_is_down_and_resumes(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(cluster.store)
    control = ControlLoop(flaky, DefaultScheduler(), cluster.clock)
    node_loop = await cluster.add_node("n1")
    async with anyio.create_task_group() as tg:
        await tg.start(control.run)
        await tg.start(node_loop.run)
        await cluster.service.apply([spec(replicas=2)])
        await eventually(running(cluster, 2))

        flaky.go_down()
        await cluster.service.scale("web", 3)  # through the service's own store: unseen
        control.queue.add("default/web")  # a key woken while the caches cannot follow
        await eventually(logged(caplog, "could not reconcile 1 workload(s)"), cluster.clock)
        assert "lost the store; it lists again first" in caplog.text
        assert len(await cluster.control.repo.list_instances()) == 2  # nothing scheduled

        flaky.come_back()
        await eventually(running(cluster, 3), cluster.clock)
        tg.cancel_scope.cancel()


async def test_registering_is_retried_with_a_growing_backoff_until_the_store_answers(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyStore(cluster.store)
    flaky.go_down()
    node_loop = NodeLoop(
        make_node("n1"), LocalNodeState(flaky, "n1"), MockRuntime(cluster.clock), cluster.clock
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(node_loop.run)
        await eventually(logged(caplog, "retrying in 10 s"), cluster.clock)
        outage = "the state store is unreachable (injected outage)"
        for delay in (1, 2, 4, 8):
            assert f"cannot register node n1 yet ({outage}); retrying in {delay} s" in caplog.text
        assert await cluster.control.repo.get_node("n1") is None

        flaky.come_back()

        async def registered() -> bool:
            return await cluster.control.repo.get_node("n1") is not None

        await eventually(registered, cluster.clock)
        await cluster.service.apply([spec(replicas=1)])
        await cluster.control.reconcile_once()
        await eventually(running(cluster, 1))  # and the loop runs
        tg.cancel_scope.cancel()


async def test_a_refused_join_token_stops_the_node_loop_with_the_servers_message(
    cluster: Cluster,
) -> None:
    flaky = FlakyStore(cluster.store)
    flaky.fail_with(Unauthenticated("the server refused this node's join token: check it"))
    node_loop = NodeLoop(
        make_node("n1"), LocalNodeState(flaky, "n1"), MockRuntime(cluster.clock), cluster.clock
    )
    with anyio.fail_after(5), pytest.raises(Unauthenticated, match="refused this node's join"):
        await node_loop.run()


def server(name: str, tmp: Path, store: StateStore, clock: ManualClock) -> ShoalNode:
    config = NodeConfig(data_dir=tmp, name=name, role=NodeRole.SERVER, runtime="mock")
    node = make_node(name)
    cluster = FakeCluster(FakeCluster.member(node))
    return ShoalNode(config, store, MockRuntime(clock), cluster, clock, node)


async def test_a_server_that_loses_its_store_stops_leading_and_leads_again_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        flaky = FlakyStore(store)
        node = server("s1", tmp_path, flaky, clock)
        async with aclosing(node.cluster), anyio.create_task_group() as tg:
            tg.start_soon(node.leader.run)
            await eventually(holds(lambda: node.control is not None))

            flaky.go_down()
            await eventually(
                logged(caplog, "s1 stops leading: the state store is unreachable"), clock
            )
            assert node.control is None
            await eventually(logged(caplog, "campaigning again in 10 s"), clock)

            flaky.come_back()
            await eventually(holds(lambda: node.control is not None), clock)
            assert await store.leader("control-loop") == "s1"
            tg.cancel_scope.cancel()


async def test_a_deposed_leader_stops_its_control_loop_and_campaigns_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        node = server("s1", tmp_path, store, clock)
        async with aclosing(node.cluster), anyio.create_task_group() as tg:
            tg.start_soon(node.leader.run)
            await eventually(holds(lambda: node.control is not None))

            # Another server takes over behind s1's back (s1's lease is still alive).
            await store.delete("/_elections/control-loop")
            usurper = await store.campaign("control-loop", "usurper", await store.grant_lease(60))
            await node.service.apply([spec(replicas=2)])
            await eventually(logged(caplog, "s1 is no longer the leader of 'control-loop'"))
            assert node.control is None
            assert (await store.list("/instances/")).items == []  # it wrote nothing

            await store.resign(usurper)
            await eventually(holds(lambda: node.control is not None), clock)
            assert await store.leader("control-loop") == "s1"
            tg.cancel_scope.cancel()


async def test_events_the_store_refuses_are_dropped_and_the_node_loop_goes_on(
    cluster: Cluster,
) -> None:
    loop = await cluster.add_node("a")
    runtime = cluster.runtimes["a"]
    orphan = await runtime.create(
        PodSpec(
            uid="orphan",
            name="old-1",
            namespace="default",
            workload="old",
            containers=[Container(name="main", image="busybox")],
        )
    )

    async def refuse(*_: object, **__: object) -> None:
        raise Forbidden("node a records too many events: at most 600 a minute")

    loop.state.record = refuse  # type: ignore[method-assign]
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    states = [i.state for i in await cluster.service.list_instances()]
    assert states == [InstanceState.RUNNING, InstanceState.RUNNING]
    assert orphan.uid not in {pod.uid for pod in await runtime.list()}  # removed all the same
