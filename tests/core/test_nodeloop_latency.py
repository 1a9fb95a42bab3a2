"""The running node loop acts on each instance at once: no pass, tick or other sync to wait for."""

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from shoal.agent._metrics import PrometheusMetrics
from shoal.core import ManualClock
from shoal.core._repo import instance_key
from shoal.interfaces import Catalogue, InstanceState, PodStatus, WorkloadSpec
from shoal.runtime import Fault, MockRuntime
from tests.core.support import Cluster, eventually, spec

pytestmark = pytest.mark.anyio


async def state_of(cluster: Cluster, workload: str) -> tuple[InstanceState, bool]:
    (inst,) = await cluster.service.list_instances(workload=workload)
    return inst.state, inst.ready


async def test_a_start_waits_for_no_other_instances_slow_start(cluster: Cluster) -> None:
    """One instance's start that takes a minute does not hold back the next one's."""
    loop = await cluster.add_node("n1")
    cluster.runtimes["n1"].faults.add(Fault.slow_start(seconds=60, image="slow"))
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await cluster.service.apply([spec(name="slow", replicas=1, image="slow")])
        await cluster.control.reconcile_once()
        await wait_all_tasks_blocked()
        assert await state_of(cluster, "slow") == (InstanceState.STARTING, False)

        await cluster.service.apply([spec(name="fast", replicas=1, image="fast")])
        await cluster.control.reconcile_once()

        async def fast_runs() -> bool:
            return (await state_of(cluster, "fast"))[0] == InstanceState.RUNNING

        await eventually(fast_runs)  # the clock stands still: "slow" is still starting
        assert await state_of(cluster, "slow") == (InstanceState.STARTING, False)

        cluster.clock.advance(60)

        async def slow_runs() -> bool:
            return (await state_of(cluster, "slow"))[0] == InstanceState.RUNNING

        await eventually(slow_runs)
        tg.cancel_scope.cancel()


async def test_readiness_is_checked_when_the_initial_delay_ends_not_at_a_tick(
    cluster: Cluster,
) -> None:
    """The first check runs ``initial_delay_seconds`` after the start, whatever the tick."""
    loop = await cluster.add_node("n1")
    loop.probe_tick = 3600.0  # only a bound on the probe task's sleep
    probe = {"exec": {"command": ["check"]}, "initial_delay_seconds": 5, "period_seconds": 600}
    container = {"name": "main", "image": "busybox", "readiness_probe": probe}
    workload = WorkloadSpec.model_validate(
        {"name": "web", "replicas": 1, "template": {"containers": [container]}}
    )
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await cluster.service.apply([workload])
        await cluster.control.reconcile_once()

        async def runs() -> bool:
            return (await state_of(cluster, "web"))[0] == InstanceState.RUNNING

        await eventually(runs)
        cluster.clock.advance(4.9)
        await wait_all_tasks_blocked()
        assert await state_of(cluster, "web") == (InstanceState.RUNNING, False)

        cluster.clock.advance(0.1)

        async def ready() -> bool:
            return (await state_of(cluster, "web"))[1]

        await eventually(ready)  # the clock stays at 5 s: no tick of 3600 s came
        tg.cancel_scope.cancel()


async def test_a_pod_started_for_a_record_that_went_meanwhile_does_not_stay(
    cluster: Cluster,
) -> None:
    """A record deleted during its start (its node was declared gone) leaves no pod behind."""
    loop = await cluster.add_node("n1")
    loop.resync = 3600.0  # no whole pass comes to find the orphan
    runtime = cluster.runtimes["n1"]
    runtime.faults.add(Fault.slow_start(seconds=60, image="slow"))
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await cluster.service.apply([spec(name="slow", replicas=1, image="slow")])
        await cluster.control.reconcile_once()
        await wait_all_tasks_blocked()
        (inst,) = await cluster.service.list_instances(workload="slow")
        assert inst.state == InstanceState.STARTING
        await cluster.store.delete(instance_key(inst.namespace, inst.name))
        cluster.clock.advance(60)

        async def no_pod() -> bool:
            return not await runtime.list()

        await eventually(no_pod)
        tg.cancel_scope.cancel()


class InspectFailsOnce(MockRuntime):
    """A runtime whose first inspect fails with an error no Shoal code expects."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.failed = anyio.Event()

    async def inspect(self, uid: str) -> PodStatus:
        if not self.failed.is_set():
            self.failed.set()
            raise RuntimeError(f"the runtime's state of {uid} is unreadable")
        return await super().inspect(uid)


async def test_an_unexpected_error_fails_one_sync_not_the_loop(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = InspectFailsOnce(cluster.clock)
    loop = await cluster.add_node("n1", runtime)
    loop.metrics = metrics = PrometheusMetrics()
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await cluster.service.apply([spec(name="web", replicas=1)])
        await cluster.control.reconcile_once()
        with anyio.fail_after(10):
            await runtime.failed.wait()

        async def runs() -> bool:
            return (await state_of(cluster, "web"))[0] == InstanceState.RUNNING

        await eventually(runs, cluster.clock)  # a later pass starts it
        tg.cancel_scope.cancel()
    assert metrics.count(Catalogue.NODE_LOOP_ACTIONS, action="sync", outcome="error") == 1
    assert "node loop: syncing pod" in caplog.text


async def test_a_crash_is_reported_when_the_runtime_tells_not_at_the_next_pass(
    cluster: Cluster,
) -> None:
    """A runtime that announces exits (PodExits) has the instance synced at once.

    The clock stands still, so no periodic pass (every ``resync`` s) comes to find the exit.
    """
    loop = await cluster.add_node("n1")
    runtime = cluster.runtimes["n1"]
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await cluster.service.apply([spec(name="web", replicas=1)])
        await cluster.control.reconcile_once()

        async def runs() -> bool:
            return (await state_of(cluster, "web"))[0] == InstanceState.RUNNING

        await eventually(runs)
        passes = loop.passes
        (inst,) = await cluster.service.list_instances(workload="web")
        runtime.kill(inst.uid, "main", exit_code=137)

        async def failed() -> bool:
            return (await state_of(cluster, "web"))[0] == InstanceState.FAILED

        await eventually(failed)
        assert loop.passes == passes  # the runtime's word, not a pass
        (reported,) = await cluster.service.list_instances(workload="web")
        assert reported.exit_code == 137
        tg.cancel_scope.cancel()


async def test_a_container_that_ends_as_it_starts_is_reported_without_a_pass(
    cluster: Cluster,
) -> None:
    """Its exit is told during the start itself: the instance is synced again once that ends."""
    loop = await cluster.add_node("n1")
    cluster.runtimes["n1"].faults.add(Fault.exits(after=0, exit_code=3, image="quick"))
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await cluster.service.apply([spec(name="quick", replicas=1, image="quick")])
        await cluster.control.reconcile_once()
        passes = loop.passes

        async def failed() -> bool:
            return (await state_of(cluster, "quick"))[0] == InstanceState.FAILED

        await eventually(failed)  # the clock stands still: no periodic pass comes
        assert loop.passes == passes
        tg.cancel_scope.cancel()
