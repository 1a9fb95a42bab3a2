import functools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from shoal.agent._metrics import PrometheusMetrics
from shoal.core import ControlLoop, DefaultScheduler, LocalNodeState, NodeLoop
from shoal.core._repo import only_heartbeat
from shoal.core._shutdown import report_survivors
from shoal.interfaces import (
    Catalogue,
    Conflict,
    EventKind,
    EventType,
    GossipState,
    InstanceState,
    InvalidInput,
    KeyValue,
    ListResult,
    MetricSpec,
    Node,
    NotFound,
    PodSpec,
    PodStatus,
    StateStore,
    WatchEvent,
    WorkloadPhase,
)
from shoal.runtime import Fault, MockRuntime
from tests.core.support import Cluster, eventually, make_node, spec

pytestmark = pytest.mark.anyio


async def test_apply_places_and_runs_every_replica(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=3)])
    await cluster.settle()
    instances = await cluster.service.list_instances()
    assert len(instances) == 3
    assert {i.state for i in instances} == {InstanceState.RUNNING}
    assert {i.node for i in instances} == {"n1"}
    assert all(i.ready and i.container_ids for i in instances)
    workload = await cluster.workload()
    assert workload.status.ready_replicas == 3
    assert workload.status.phase == WorkloadPhase.RUNNING
    assert workload.status.observed_generation == workload.generation
    assert len(await cluster.runtimes["n1"].list()) == 3


async def test_a_second_pass_over_a_settled_world_writes_nothing(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    before = await cluster.store.revision()
    await cluster.control.reconcile_once()
    await cluster.control.reconcile_once()
    await cluster.nodes["n1"].reconcile_once()
    assert await cluster.store.revision() == before


async def test_scale_down_removes_the_newest_first(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=1)])
    await cluster.settle()
    (oldest,) = await cluster.service.list_instances()
    await cluster.service.scale("web", 3)
    await cluster.settle()
    assert len(await cluster.service.list_instances()) == 3
    await cluster.service.scale("web", 1)
    await cluster.settle()
    (kept,) = await cluster.service.list_instances()
    assert kept.uid == oldest.uid
    assert [p.uid for p in await cluster.runtimes["n1"].list()] == [oldest.uid]


async def test_crashing_instance_restarts_with_exponential_backoff(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=3, image="crash")])
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="crash")])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    # Started, exited 3 at once, and is waiting out its first backoff (1 s).
    assert inst.state == InstanceState.SCHEDULED
    assert inst.restart_count == 1
    assert inst.exit_code == 3
    assert inst.not_before == cluster.clock.now() + timedelta(seconds=1)
    cluster.clock.advance(1)
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert inst.restart_count == 2
    assert inst.reason == "CrashLoopBackOff"
    assert "restarting in 2s" in inst.message
    workload = await cluster.workload()
    assert workload.status.phase == WorkloadPhase.DEGRADED
    explanation = await cluster.service.explain(inst.name)
    assert "CrashLoopBackOff" in explanation.summary
    assert "last exit code 3" in explanation.summary
    assert "for restart 2 " in explanation.summary  # the one it waits for; one has happened


async def test_explain_of_a_restart_without_an_exit_code_names_both_causes(
    cluster: Cluster,
) -> None:
    """It blamed "image, command, limits" for containers that went away (a node reset)."""
    runtime = MockRuntime(cluster.clock, faults=[Fault.create_fails(image="broken")])
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="broken")])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    explanation = await cluster.service.explain(inst.name)
    assert "last failure: StartFailed: injected fault: create failed" in explanation.summary
    assert any("went away: a reset, a reboot" in d for d in explanation.details)


async def test_a_crash_is_a_warning_in_the_agents_log_too(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO the log was silent on crashes and failed pulls: they were events only."""
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=3, image="crash")])
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="crash")])
    with caplog.at_level(logging.WARNING, logger="shoal.core"):
        await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert f"instance default/{inst.name}: Error: main exited 3" in caplog.text


async def test_backoff_is_capped(cluster: Cluster) -> None:
    assert cluster.control.backoff(0) == 1
    assert cluster.control.backoff(3) == 8
    assert cluster.control.backoff(30) == 300


async def test_restart_policy_never_leaves_a_failed_instance_failed(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=1, image="once")])
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="once", restart_policy="Never")])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert inst.state == InstanceState.FAILED
    assert inst.restart_count == 0
    explanation = await cluster.service.explain(inst.name)
    assert "it will not be restarted" in explanation.details[0]


async def test_an_exit_seen_late_is_recorded_when_it_happened(cluster: Cluster) -> None:
    """An agent that was down (or a slow pass) records the exit's time, not its own."""
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=5, exit_code=0, image="job")])
    node = await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="job", restart_policy="Never")])
    await cluster.settle()
    (running,) = await cluster.service.list_instances()
    assert running.state == InstanceState.RUNNING and running.started_at is not None
    cluster.clock.advance(60)  # the container exited after 5 s; the node looks 55 s later
    await node.reconcile_once()
    (done,) = await cluster.service.list_instances()
    assert done.state == InstanceState.STOPPED
    assert done.finished_at == running.started_at + timedelta(seconds=5)


async def test_on_failure_does_not_restart_a_clean_exit(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=0, image="job")])
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="job", restart_policy="OnFailure")])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert inst.state == InstanceState.STOPPED
    assert inst.exit_code == 0
    # Not "progressing" for ever: it wants a running instance that nothing will run again.
    status = (await cluster.workload()).status
    assert status.phase == WorkloadPhase.DEGRADED
    (finished,) = [c for c in status.conditions if c.type == "Finished"]
    assert f"restart_policy OnFailure does not run them again: {inst.name}" in finished.message


async def test_image_missing_fails_the_instance_with_a_clear_event(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock, faults=[Fault.image_missing("nope")])
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1, image="nope"), spec("ok", replicas=1)])
    await cluster.settle()
    by_workload = {i.workload: i for i in await cluster.service.list_instances()}
    assert by_workload["ok"].state == InstanceState.RUNNING  # nothing else disturbed
    broken = by_workload["web"]
    assert broken.restart_count >= 1
    events = await cluster.service.list_events(kind="Instance", name=broken.name)
    assert any(e.reason == "ImagePullFailed" and "nope" in e.message for e in events)
    for _ in range(3):  # tried again and again: a pull's backoff, as Kubernetes names it
        cluster.clock.advance(600)
        await cluster.settle()
    broken = await cluster.service.get_instance(broken.name)
    assert broken.reason == "ImagePullBackOff" and "nope" in broken.message
    web = await cluster.service.get_workload("web")
    assert any(c.type == "Crashing" for c in web.status.conditions)


async def test_delete_stops_everything_then_removes_the_workload(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    deleting = await cluster.service.delete_workload("web")
    assert deleting.deleting
    with pytest.raises(Conflict, match="being deleted"):
        await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    assert await cluster.service.list_instances() == []
    assert await cluster.runtimes["n1"].list() == []
    with pytest.raises(NotFound, match="shoal get workloads"):
        await cluster.workload()
    reasons = [e.reason for e in await cluster.service.list_events(kind="Workload")]
    assert reasons[-1] == "Deleted"


async def test_unschedulable_instances_say_why_per_node(cluster: Cluster) -> None:
    await cluster.add_node("small", cpu="1")
    await cluster.add_node("closed", cordoned=True)
    big = spec(replicas=1)
    big = big.model_copy(
        update={
            "template": big.template.model_validate(
                {
                    "containers": [
                        {"name": "main", "image": "x", "resources": {"requests": {"cpu": "2"}}}
                    ]
                }
            )
        }
    )
    await cluster.service.apply([big])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert inst.state == InstanceState.PENDING
    explanation = await cluster.service.explain(inst.name)
    assert explanation.summary.startswith("pending: no node can run it (0/2 nodes fit")
    assert "node closed: node is cordoned" in explanation.details
    assert "node small: insufficient cpu: requests 2, free 1 of 1" in explanation.details
    await cluster.settle()
    failed = [e for e in await cluster.service.list_events() if e.reason == "FailedScheduling"]
    assert len(failed) == 1  # reported once, not on every pass


async def test_failed_node_loses_its_instances_and_they_move(cluster: Cluster) -> None:
    await cluster.add_node("a")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    await cluster.add_node("b")
    await cluster.control.repo.update(
        "/nodes/a", Node, lambda n: n.model_copy(update={"state": GossipState.FAILED})
    )
    del cluster.nodes["a"]  # a failed node's loop is gone with it
    await cluster.settle()
    instances = await cluster.service.list_instances()
    lost = [i for i in instances if i.state == InstanceState.LOST]
    running = [i for i in instances if i.state == InstanceState.RUNNING]
    assert len(lost) == 2 and all(i.deleting for i in lost)
    assert len(running) == 2 and {i.node for i in running} == {"b"}


async def test_a_node_that_failed_is_deleted_with_its_lost_instances(cluster: Cluster) -> None:
    """Nothing removed a node: failed ones stayed listed, their lost instances, their name."""
    await cluster.add_node("a")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    await cluster.add_node("b")
    with pytest.raises(Conflict, match="node a is alive: only a node that failed or left"):
        await cluster.service.delete_node("a")
    await cluster.control.repo.update(
        "/nodes/a", Node, lambda n: n.model_copy(update={"state": GossipState.FAILED})
    )
    del cluster.nodes["a"]
    await cluster.settle()
    assert len(await cluster.service.list_instances()) == 4  # two lost (kept for a), two new

    deleted = await cluster.service.delete_node("a")
    assert deleted.state == GossipState.FAILED
    await cluster.settle()
    instances = await cluster.service.list_instances()
    assert {(i.node, i.state) for i in instances} == {("b", InstanceState.RUNNING)}
    assert [n.name for n in await cluster.service.list_nodes()] == ["b"]
    assert "NodeDeleted" in {e.reason for e in await cluster.service.list_events(kind="Node")}
    with pytest.raises(NotFound, match="node 'a' not found"):
        await cluster.service.delete_node("a")
    again = await cluster.add_node("a")  # the name is free: a new machine may take it
    assert again.node.name in {n.name for n in await cluster.service.list_nodes()}


async def test_a_deletion_in_flight_on_a_node_that_fails_does_not_wait_for_it(
    cluster: Cluster,
) -> None:
    await cluster.add_node("a")
    await cluster.service.apply([spec(replicas=1)])
    await cluster.settle()
    del cluster.nodes["a"]  # its loop stops answering: the instance's stop never happens
    await cluster.service.delete_workload("web")
    await cluster.settle()
    (going,) = await cluster.service.list_instances()
    assert (going.state, going.deleting) == (InstanceState.RUNNING, True)
    await cluster.control.repo.update(
        "/nodes/a", Node, lambda n: n.model_copy(update={"state": GossipState.FAILED})
    )
    await cluster.settle()
    assert await cluster.service.list_instances() == []
    assert await cluster.service.list_workloads() == []  # its deletion is done


async def test_drain_starts_replacements_before_stopping(cluster: Cluster) -> None:
    await cluster.add_node("a")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    old = {i.uid for i in await cluster.service.list_instances()}
    await cluster.service.drain("a")
    await cluster.settle()
    # Nowhere to go: the old instances keep running.
    assert {i.uid for i in await cluster.service.list_instances()} >= old
    assert len(await cluster.runtimes["a"].list()) == 2

    async def told() -> list[str]:
        events = await cluster.service.list_events(kind="Node", name="a")
        return [e.message for e in events if e.reason == "DrainComplete"]

    assert await told() == []  # not over while its instances have nowhere to go
    await cluster.add_node("b")
    await cluster.settle()
    instances = await cluster.service.list_instances()
    assert {i.node for i in instances} == {"b"}
    assert not old & {i.uid for i in instances}
    assert await cluster.runtimes["a"].list() == []
    await cluster.settle()
    assert await told() == [
        "node a is drained: no instance but daemons' is left on it; "
        "`shoal uncordon a` places instances there again"
    ]  # once
    node = await cluster.service.uncordon("a")
    assert not node.cordoned and not node.draining


async def test_template_change_replaces_instances(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    old = {i.uid for i in await cluster.service.list_instances()}
    result = await cluster.service.apply([spec(replicas=2, image="busybox:2")])
    assert result.plan.changes[0].instances_to_replace == 2
    await cluster.settle()
    instances = await cluster.service.list_instances()
    assert len(instances) == 2 and not old & {i.uid for i in instances}
    assert {i.template.containers[0].image for i in instances} == {"busybox:2"}


async def test_restarted_node_loop_adopts_running_pods_and_removes_orphans(
    cluster: Cluster,
) -> None:
    loop = await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.settle()
    runtime = cluster.runtimes["n1"]
    pods_before = {p.uid: [c.id for c in p.containers] for p in await runtime.list()}
    orphan = spec("ghost", replicas=1)
    await runtime.create(
        PodSpec(
            uid="orphan",
            name="ghost-x",
            namespace="default",
            workload="ghost",
            containers=list(orphan.template.containers),
        )
    )
    ended = sorted(pods_before)[0]
    (container,) = (await runtime.inspect(ended)).containers
    runtime.kill(ended, container.name)  # it ended while no agent ran: not adopted, restarted
    # A new node loop over the same runtime: what an agent restart looks like.
    cluster.nodes["n1"] = type(loop)(loop.node, loop.state, runtime, cluster.clock)
    await cluster.settle()
    pods_after = {p.uid: [c.id for c in p.containers] for p in await runtime.list()}
    assert pods_after == pods_before
    events = await cluster.service.list_events()
    assert {"Adopted", "OrphanRemoved"} <= {e.reason for e in events}
    (adopted,) = [e.message for e in events if e.reason == "Adopted"]
    assert adopted == "adopted 1 running instance(s) after restart"


async def test_pods_lost_by_the_runtime_are_restarted(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=1)])
    await cluster.settle()
    cluster.runtimes["n1"].simulate_restart(keep_pods=False)
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert inst.restart_count == 1
    cluster.clock.advance(1)
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    assert inst.state == InstanceState.RUNNING
    assert len(await cluster.runtimes["n1"].list()) == 1


async def test_dry_run_plans_without_writing(cluster: Cluster) -> None:
    before = await cluster.store.revision()
    result = await cluster.service.apply([spec(replicas=2)], dry_run=True)
    assert not result.applied
    assert result.plan.changes[0].action == "create"
    assert result.plan.changes[0].instances_to_create == 2
    assert await cluster.store.revision() == before
    again = await cluster.service.apply([spec(replicas=2)], dry_run=True)
    assert again.plan.id == result.plan.id
    await cluster.service.apply([spec(replicas=2)])
    update = await cluster.service.apply([spec(replicas=5)], dry_run=True)
    change = update.plan.changes[0]
    assert change.action == "update" and change.instances_to_create == 3
    assert [(c.path, c.old, c.new) for c in change.changes] == [("replicas", 2, 5)]
    unchanged = await cluster.service.apply([spec(replicas=2)])
    assert unchanged.plan.changes[0].action == "unchanged"
    assert (await cluster.workload()).generation == 1


async def test_service_errors_name_the_problem(cluster: Cluster) -> None:
    with pytest.raises(NotFound, match="workload default/nope not found"):
        await cluster.service.scale("nope", 1)
    await cluster.service.apply([spec()])
    with pytest.raises(InvalidInput, match="replicas must be between 0 and 10000"):
        await cluster.service.scale("web", -1)
    with pytest.raises(NotFound, match="node 'x' not found"):
        await cluster.service.cordon("x")


async def test_running_loops_converge_on_watch_events(cluster: Cluster) -> None:
    """The real run() loops, woken by store watches (the manual clock never moves)."""
    node_loop = await cluster.add_node("n1")
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await tg.start(node_loop.run)
        await cluster.service.apply([spec(replicas=3)])
        with anyio.fail_after(10):
            async for change in cluster.store.watch("/workloads/"):
                workload = await cluster.workload()
                if workload.status.ready_replicas == 3:
                    break
                del change
        assert len(await cluster.runtimes["n1"].list()) == 3
        tg.cancel_scope.cancel()


async def test_a_heartbeat_wakes_nothing_and_a_cordon_wakes_only_the_workloads_on_its_node(
    cluster: Cluster,
) -> None:
    """Heartbeats rewrite node records every few seconds; the leader sleeps through them.

    A change that matters wakes only the workloads it affects: those with an
    instance on the node.
    """
    await cluster.add_node("n1")
    await cluster.add_node("n2", cordoned=True)
    await cluster.service.apply([spec("on-n1", replicas=1), spec("other", replicas=0)])
    await cluster.settle()
    key = "/nodes/n1"
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await wait_all_tasks_blocked()  # the first batch is done; the manual clock never moves
        reconciled = cluster.control.reconciled

        def beat(node: Node) -> Node:
            return node.model_copy(update={"heartbeat_at": cluster.clock.now()})

        cluster.clock.advance(3)
        await cluster.control.repo.update(key, Node, beat)
        await wait_all_tasks_blocked()
        assert cluster.control.reconciled == reconciled

        woken: list[str] = []
        reconcile = cluster.control.reconcile

        async def spy(keys: Any) -> set[str]:
            woken.extend(keys)
            return await reconcile(keys)

        cluster.control.reconcile = spy  # type: ignore[method-assign]
        await cluster.control.repo.update(
            key, Node, lambda node: node.model_copy(update={"cordoned": True})
        )

        async def reconciled_once() -> bool:
            return bool(woken)

        await eventually(reconciled_once)
        await wait_all_tasks_blocked()
        assert woken == ["default/on-n1"]
        tg.cancel_scope.cancel()


def test_only_a_change_of_heartbeat_alone_counts_as_a_heartbeat() -> None:
    node = make_node("n1")
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def put(before: Node | None, after: Node, key: str = "/nodes/n1") -> WatchEvent:
        value = after.model_dump_json().encode()
        prev = None if before is None else before.model_dump_json().encode()
        return WatchEvent(EventKind.PUT, KeyValue(key, value, 1, 2, 1), prev)

    beat = node.model_copy(update={"heartbeat_at": at})
    assert only_heartbeat(put(node, beat))
    later = beat.model_copy(update={"heartbeat_at": at + timedelta(seconds=10)})
    assert only_heartbeat(put(beat, later))
    assert not only_heartbeat(put(beat, beat.model_copy(update={"cordoned": True})))
    assert not only_heartbeat(put(None, beat))  # created: the loops must see it
    assert not only_heartbeat(put(node, beat, key="/instances/default/web-1"))
    deleted = WatchEvent(EventKind.DELETE, KeyValue("/nodes/n1", b"", 0, 3, 0), b"{}")
    assert not only_heartbeat(deleted)


async def test_a_stuck_teardown_backs_off_says_so_once_and_finishes_when_it_can(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=1)])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    stuck = cluster.runtimes["n1"].faults.add(
        Fault.remove_fails(message='CNI plugin loopback DEL failed: unknown FS magic on "x"')
    )
    await cluster.service.delete_workload("web")
    loop = cluster.nodes["n1"]
    await cluster.control.reconcile_once()  # marks the instance deleting
    delays = [await loop.reconcile_once() for _ in range(5)]

    # No retry until its backoff is up: the pass asks to be run again then.
    assert delays[0] == pytest.approx(2.0)
    assert len(await cluster.runtimes["n1"].list()) == 1
    cluster.clock.advance(2.0)
    assert await loop.reconcile_once() == pytest.approx(4.0)  # tried again, doubled
    events = await cluster.service.list_events(kind="Instance", name=inst.name)
    failed = [e for e in events if e.reason == "TeardownFailed"]
    assert len(failed) == 1  # once per kind of failure, not per try
    assert "unknown FS magic" in failed[0].message and "shoal node reset" in failed[0].message
    assert failed[0].type == EventType.WARNING
    explained = await cluster.service.explain(inst.name)
    assert any(e.reason == "TeardownFailed" for e in explained.events)
    warnings = [r for r in caplog.records if "cannot remove the pod" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None  # one line, no traceback

    cluster.runtimes["n1"].faults.remove(stuck)
    cluster.clock.advance(4.0)
    await cluster.settle()
    assert await cluster.service.list_instances() == []
    assert await cluster.runtimes["n1"].list() == []


async def test_a_node_loop_reads_its_own_instances_from_its_cache_and_sleeps_through_others(
    cluster: Cluster,
) -> None:
    """The cost of a change elsewhere in the cluster is nothing for this node."""
    listed: list[str] = []

    class CountingLists:
        """The cluster's store as this node loop sees it, counting its lists."""

        def __getattr__(self, name: str) -> Any:
            return getattr(cluster.store, name)

        async def list(self, prefix: str) -> ListResult:
            listed.append(prefix)
            return await cluster.store.list(prefix)

    await cluster.add_node("busy")  # its loop never runs: its instances just sit there
    store = cast(StateStore, CountingLists())
    mine = NodeLoop(
        make_node("quiet"),
        LocalNodeState(store, "quiet"),
        MockRuntime(cluster.clock),
        cluster.clock,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(mine.run)
        await cluster.service.cordon("quiet")
        await cluster.service.apply([spec(name="elsewhere", replicas=20)])
        await cluster.control.reconcile_once()  # all 20 placed on "busy"
        await wait_all_tasks_blocked()
        passes = mine.passes
        for replicas in (25, 30):  # changes on another node
            await cluster.service.scale("elsewhere", replicas)
            await cluster.control.reconcile_once()
            await wait_all_tasks_blocked()
        assert mine.passes == passes  # no pass woke for them
        assert listed.count("/instances/") == 1  # the cache's first list, and no other

        await cluster.service.uncordon("quiet")
        await cluster.service.cordon("busy")
        await cluster.service.apply([spec(name="here", replicas=1)])
        await cluster.control.reconcile_once()  # placed on "quiet": its loop wakes and runs it

        async def started() -> bool:
            (inst,) = await cluster.service.list_instances(workload="here")
            return inst.state == InstanceState.RUNNING

        await eventually(started)
        assert listed.count("/instances/") == 1
        tg.cancel_scope.cancel()


async def test_a_node_loop_never_acts_on_a_cache_older_than_its_own_last_write(
    cluster: Cluster,
) -> None:
    """A watch that lags (as a worker's, through its server) must not lose a job's exit.

    Acting on a stale record (starting, while the job already ran and exited)
    once removed the finished pod as a leftover and reported the successful
    job as a missing container.
    """

    class LaggingWatch:
        """The cluster's store, each watch event a little late."""

        def __getattr__(self, name: str) -> Any:
            return getattr(cluster.store, name)

        async def watch(
            self, prefix: str, start_revision: int | None = None
        ) -> AsyncIterator[WatchEvent]:
            async for event in cluster.store.watch(prefix, start_revision):
                await anyio.sleep(0.05)  # the fake's lag, in real time
                yield event

    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=0, image="job")])
    store = cast(StateStore, LaggingWatch())
    loop = NodeLoop(make_node("n1"), LocalNodeState(store, "n1"), runtime, cluster.clock)
    await loop.register()
    await cluster.service.apply([spec(replicas=1, image="job", restart_policy="OnFailure")])
    await cluster.control.reconcile_once()
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)

        async def finished() -> bool:
            (inst,) = await cluster.service.list_instances()
            return inst.state in (InstanceState.STOPPED, InstanceState.FAILED)

        await eventually(finished)  # bounded: 10 s
        tg.cancel_scope.cancel()
    (inst,) = await cluster.service.list_instances()
    assert (inst.state, inst.reason, inst.exit_code) == (InstanceState.STOPPED, "Completed", 0)


async def test_a_new_leaders_loop_lists_the_whole_world_before_its_first_decision(
    cluster: Cluster,
) -> None:
    """A term's loop starts from a list, not from the last term's cache or a watch alone.

    What changed while no loop ran (a workload applied, a node cordoned) is in
    the caches before the first batch is reconciled, and that batch acts on it.
    """
    await cluster.add_node("n1")
    await cluster.add_node("n2")
    await cluster.service.apply([spec("before", replicas=1)])
    async with anyio.create_task_group() as tg:  # the first term
        await tg.start(cluster.control.run)
        await eventually(functools.partial(_placed, cluster, "before"))
        tg.cancel_scope.cancel()

    # Nobody leads: changes land in the store unseen by any cache.
    await cluster.service.apply([spec("meanwhile", replicas=2)])
    await cluster.service.cordon("n1")

    successor = ControlLoop(cluster.store, DefaultScheduler(), cluster.clock)
    first_views: list[tuple[set[str], bool]] = []
    reconcile = successor.reconcile

    async def spy(keys: Any) -> set[str]:
        if not first_views:
            names = {s.value.name for s in successor.workloads.values()}
            n1 = successor.nodes.get("/nodes/n1")
            first_views.append((names, n1 is not None and n1.value.cordoned))
        return await reconcile(keys)

    successor.reconcile = spy  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await tg.start(successor.run)
        await eventually(functools.partial(_placed, cluster, "meanwhile", count=2))
        tg.cancel_scope.cancel()
    assert first_views == [({"before", "meanwhile"}, True)]
    placed = [i for i in await cluster.service.list_instances() if i.workload == "meanwhile"]
    assert {i.node for i in placed} == {"n2"}  # n1 was cordoned while nobody led


async def _placed(cluster: Cluster, workload: str, count: int = 1) -> bool:
    instances = await cluster.service.list_instances()
    return sum(1 for i in instances if i.workload == workload and i.node) == count


async def test_a_control_loop_that_stopped_drops_its_caches(cluster: Cluster) -> None:
    """A term's loop holds the whole cluster in its caches: they must go when it stops.

    Its tasks end cancelled, and the cancellation's tracebacks hold their
    frames in a cycle: the loop itself lives on until the collector's rare
    full pass, so the caches in it must be dropped, and no change wakes it.
    """
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    loop = ControlLoop(cluster.store, DefaultScheduler(), cluster.clock)
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        await eventually(functools.partial(_placed, cluster, "web", count=2))
        tg.cancel_scope.cancel()
    assert (len(loop.workloads), len(loop.instances), len(loop.nodes)) == (0, 0, 0)
    assert loop.instances.by_index("workload", "default/web") == []
    queued = loop.queue.depth
    await loop.instances.refresh()  # were it still listening, this would queue the workload
    assert len(loop.instances) == 2
    assert loop.queue.depth == queued


async def test_an_instance_stops_with_its_templates_grace_period(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock)
    graces: dict[str, float] = {}
    stop = runtime.stop

    async def recorded(uid: str, grace: float) -> PodStatus:
        graces[uid] = grace
        return await stop(uid, grace)

    runtime.stop = recorded  # type: ignore[method-assign]
    await cluster.add_node("n1", runtime)
    quick: dict[str, object] = {"containers": [{"name": "main", "image": "busybox"}]}
    quick["termination_grace_period_seconds"] = 3
    await cluster.service.apply([spec("quick", replicas=1, template=quick), spec(replicas=1)])
    await cluster.settle()
    uids = {i.workload: i.uid for i in await cluster.service.list_instances()}
    await cluster.service.delete_workload("quick")
    await cluster.service.delete_workload("web")
    await cluster.settle()
    assert graces == {uids["quick"]: 3.0, uids["web"]: 10.0}  # the node's default when unset


async def test_the_start_sli_of_an_instance_that_waited_for_room_counts_from_its_placement(
    cluster: Cluster,
) -> None:
    """As Kubernetes' pod startup SLI counts schedulable pods: the wait for room is not a start."""
    metrics = PrometheusMetrics()
    observed: list[float] = []
    observe = metrics.observe

    def recorded(spec: MetricSpec, value: float, *labels: str) -> None:
        if spec == Catalogue.INSTANCE_START_DURATION:
            observed.append(value)
        observe(spec, value, *labels)

    metrics.observe = recorded  # type: ignore[method-assign,assignment]
    runtime = MockRuntime(cluster.clock)
    node = make_node("n1", cpu="1")
    cluster.nodes["n1"] = NodeLoop(
        node, LocalNodeState(cluster.store, "n1"), runtime, cluster.clock, metrics=metrics
    )
    await cluster.nodes["n1"].register()
    needs_a_core = {
        "containers": [
            {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}
        ]
    }
    await cluster.service.apply([spec("first", replicas=1, template=needs_a_core)])
    await cluster.settle()
    await cluster.service.apply([spec("second", replicas=1, template=needs_a_core)])
    await cluster.settle()  # no room: it waits
    cluster.clock.advance(120)
    await cluster.service.delete_workload("first")
    await cluster.settle()
    (second,) = await cluster.service.list_instances()
    assert second.state == InstanceState.RUNNING
    assert second.placed_at == cluster.clock.now() and second.created_at < second.placed_at
    assert len(observed) == 2 and max(observed) < 60  # not the 120 s it waited for room


async def test_no_pod_of_the_mock_runtime_is_said_to_outlive_the_agent(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Its pods live in the agent's process: 'the next agent adopts them' was not true."""
    runtime = MockRuntime(cluster.clock)
    await cluster.add_node("n1", runtime)
    await cluster.service.apply([spec(replicas=1)])
    await cluster.settle()
    assert len(await runtime.list()) == 1
    assert await report_survivors(cluster.control.repo, runtime, "n1", tmp_path) == 0


async def test_a_drain_is_over_when_only_daemons_instances_are_left(cluster: Cluster) -> None:
    await cluster.add_node("a")
    await cluster.service.apply([spec("agent", mode="daemon")])
    await cluster.settle()
    await cluster.service.drain("a")
    await cluster.settle()
    events = await cluster.service.list_events(kind="Node", name="a")
    (done,) = [e.message for e in events if e.reason == "DrainComplete"]
    assert "1 daemon instance(s) stay, serving the node" in done
    assert len(await cluster.runtimes["a"].list()) == 1  # as kubectl drain leaves them
