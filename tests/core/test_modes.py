"""Workload modes daemon and job: decisions as tables, then the loops on the mock runtime."""

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from pydantic import ValidationError

from shoal.core import DefaultScheduler
from shoal.core._placement import InstanceFactory, UsageIndex
from shoal.core._plan import plan_change
from shoal.core._reconcile import Decision, Delete, Settled, Write, decide, settle
from shoal.core._repo import Stored
from shoal.interfaces import (
    Condition,
    GossipState,
    Instance,
    InstanceState,
    InvalidSpec,
    Node,
    NodeRole,
    PlacementRequest,
    Placements,
    Workload,
    WorkloadPhase,
    WorkloadStatus,
)
from shoal.runtime import Fault, MockRuntime
from tests.core.support import Cluster, eventually, make_node, spec

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 1, tzinfo=UTC)
R = InstanceState.RUNNING


def daemon(**extra: Any) -> Stored[Workload]:
    fields = extra.pop("fields", {})
    value = Workload(
        name="agent",
        namespace="default",
        uid="w1",
        spec=spec("agent", mode="daemon", **extra),
        created_at=NOW,
        updated_at=NOW,
    )
    return Stored(value.model_copy(update=fields), "/workloads/default/agent", 10, 10)


def job(
    restart_policy: str = "Never", fields: dict[str, Any] | None = None, **job: Any
) -> Stored[Workload]:
    value = Workload(
        name="agent",
        namespace="default",
        uid="w1",
        spec=spec("agent", mode="job", restart_policy=restart_policy, job=job),
        created_at=NOW,
        updated_at=NOW,
    )
    return Stored(value.model_copy(update=fields or {}), "/workloads/default/agent", 10, 10)


def instance(
    name: str,
    node: str | None,
    initial: InstanceState,
    *,
    of: Stored[Workload] | None = None,
    rev: int = 20,
    **fields: Any,
) -> Stored[Instance]:
    """An instance in state ``initial`` (or ``state`` among ``fields``, which win)."""
    state = fields.pop("state", initial)
    wl = (of or daemon()).value
    value = Instance(
        name=name,
        namespace="default",
        uid=f"uid-{name}",
        workload="agent",
        workload_uid=wl.uid,
        generation=wl.generation,
        template=wl.spec.template,
        restart_policy=wl.spec.restart_policy,
        node=node,
        state=state,
        created_at=NOW,
        **{"ready": state == R, **fields},
    )
    return Stored(value, f"/instances/default/{name}", rev, rev)


def nodes(*names: str, **fields: Any) -> dict[str, Node]:
    return {name: make_node(name, **fields) for name in names}


def _decide(
    workload: Stored[Workload], instances: Sequence[Stored[Instance]], where: dict[str, Node]
) -> Decision:
    uids = count()
    return decide(
        workload,
        instances,
        where,
        now=NOW,
        backoff=lambda n: 2.0**n,
        fresh_uid=lambda w: f"{next(uids):05d}" + "0" * 11,
    )


def _settle(decision: Decision, placements: Placements | None = None) -> Settled:
    assert decision.workload is not None
    new = InstanceFactory(NOW).maker(decision.workload.value)
    return settle(decision, placements or Placements(), new, NOW)


@dataclass
class Case:
    id: str
    workload: Stored[Workload]
    instances: Sequence[Stored[Instance]]
    nodes: dict[str, Node]
    pinned: list[str | None] = field(default_factory=list)
    """The node of each pending instance (new and existing), in order."""
    placing: set[str] = field(default_factory=set)
    """Existing unplaced instances to place."""
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    notes: set[str] = field(default_factory=set)
    """Reasons of the decision's events about the workload."""
    desired: int | None = None
    recheck: float | None = None
    expire: bool = False


def old_template(name: str, node: str, **fields: Any) -> Stored[Instance]:
    before = daemon(template={"containers": [{"name": "main", "image": "busybox:1"}]})
    return instance(name, node, R, of=before, **fields)


three = nodes("n1", "n2", "n3")
labelled = {
    **nodes("n1", labels={"disk": "ssd"}),
    **nodes("n2", labels={"disk": "hdd"}),
    **nodes("n3"),
}

DAEMON_CASES = [
    Case("one per eligible node", daemon(), [], three, pinned=["n1", "n2", "n3"], desired=3),
    Case(
        "replicas is ignored, a node with one gets none",
        daemon(replicas=7),
        [instance("a", "n2", R)],
        three,
        pinned=["n1", "n3"],
        desired=3,
    ),
    Case(
        "placement constraints choose the nodes",
        daemon(placement={"constraints": {"disk": "ssd"}}),
        [instance("a", "n2", R)],
        labelled,
        pinned=["n1"],
        writes={"a": {"deleting": True, "reason": "NodeIneligible"}},
        desired=1,
    ),
    Case(
        "a cordoned or draining node gets none but keeps its own; server-only and suspect "
        "nodes get none",
        daemon(),
        [instance("a", "n1", R)],
        {
            **nodes("n1", cordoned=True, draining=True),
            **nodes("n2", cordoned=True),
            **nodes("n3", role=NodeRole.SERVER),
            **nodes("n4", state=GossipState.SUSPECT),
            **nodes("n5"),
        },
        pinned=["n5"],
        desired=2,
    ),
    Case(
        "a failed node loses its instance and nobody gets a replacement",
        daemon(),
        [instance("a", "n1", R), instance("b", "n2", R)],
        {**nodes("n1", state=GossipState.FAILED), **nodes("n2")},
        writes={"a": {"state": InstanceState.LOST, "deleting": True}},
        desired=1,
    ),
    Case(
        "a node that left: its instance is deleted, not moved",
        daemon(),
        [instance("a", "n1", R)],
        {**nodes("n1", state=GossipState.LEFT), **nodes("n2", cordoned=True)},
        deletes={"a"},
        desired=0,
    ),
    Case(
        "an unplaced instance is pinned to a node without one; a surplus one goes",
        daemon(),
        [
            instance("a", "n1", R),
            instance("b", None, InstanceState.PENDING),
            instance("c", None, InstanceState.PENDING),
        ],
        nodes("n1", "n2"),
        pinned=["n2"],
        placing={"b"},
        deletes={"c"},
        desired=2,
    ),
    Case(
        "two on one node: the newer goes",
        daemon(),
        [instance("a", "n1", R, rev=5), instance("b", "n1", R, rev=9)],
        nodes("n1"),
        writes={"b": {"deleting": True, "reason": "Duplicate"}},
        desired=1,
    ),
    Case(
        "rolling: one node at a time (25% of 3 is 0, so 1), its new one waits for the old",
        daemon(),
        [old_template("a", "n1"), old_template("b", "n2"), old_template("c", "n3")],
        three,
        writes={"a": {"deleting": True, "reason": "Replaced"}},
        notes={"RollingUpdate"},
        desired=3,
    ),
    Case(
        "rolling: the old instance gone, its node gets the new one; the next waits",
        daemon(),
        [old_template("b", "n2"), old_template("c", "n3")],
        three,
        pinned=["n1"],
        desired=3,
    ),
    Case(
        "rolling with max_unavailable 2: two nodes at a time",
        daemon(update={"max_unavailable": 2, "max_surge": 0}),
        [old_template("a", "n1"), old_template("b", "n2"), old_template("c", "n3")],
        three,
        writes={
            "a": {"deleting": True, "reason": "Replaced"},
            "b": {"deleting": True, "reason": "Replaced"},
        },
        notes={"RollingUpdate"},
        desired=3,
    ),
    Case(
        "rolling: an old instance that is not available goes whatever the budget",
        daemon(update={"max_unavailable": 1, "max_surge": 0}),
        [
            old_template("a", "n1"),
            old_template("b", "n2", state=InstanceState.STARTING, ready=False),
            instance("c", "n3", InstanceState.STARTING, ready=False),
        ],
        three,
        writes={"b": {"deleting": True, "reason": "Replaced"}},
        notes={"RollingUpdate"},
        desired=3,
    ),
    Case(
        "a paused daemon replaces nothing",
        daemon(paused=True),
        [old_template("a", "n1")],
        nodes("n1"),
        desired=1,
    ),
]


def _finished(kind: str, reason: str, at: datetime) -> dict[str, Any]:
    return {
        "status": WorkloadStatus(
            finished_at=at,
            conditions=[Condition(type=kind, status=True, reason=reason)],
        )
    }


J = job(completions=3, parallelism=2)
DONE: dict[str, Any] = {"state": InstanceState.STOPPED, "exit_code": 0, "ready": False}
FAILED: dict[str, Any] = {"state": InstanceState.FAILED, "exit_code": 1, "ready": False}
JOB_CASES = [
    Case("a job starts parallelism instances", J, [], nodes("n1"), pinned=[None, None]),
    Case(
        "a succeeded instance is kept and not replaced beyond completions",
        J,
        [
            instance("a", "n1", R, of=J),
            instance("b", "n1", R, of=J, **DONE),
            instance("c", "n1", R, of=J, **DONE),
        ],
        nodes("n1"),
        desired=1,
    ),
    Case(
        "one left to do and one running: nothing new",
        J,
        [instance("a", "n1", R, of=J), instance("b", "n1", R, of=J, **DONE)],
        nodes("n1"),
        pinned=[None],
        desired=2,
    ),
    Case(
        "completions reached: complete, with an event",
        J,
        [instance(x, "n1", R, of=J, **DONE) for x in "abc"],
        nodes("n1"),
        notes={"Completed"},
        desired=0,
    ),
    Case(
        "Never: a failed run stays failed and a new instance takes its place",
        J,
        [instance("a", "n1", R, of=J), instance("b", "n1", R, of=J, **FAILED)],
        nodes("n1"),
        pinned=[None],
        desired=2,
    ),
    Case(
        "Never: a new run waits out the backoff of the failed ones",
        job(completions=2),
        [
            instance("a", "n1", R, of=J, **FAILED, finished_at=NOW - timedelta(seconds=1)),
            instance("b", "n1", R, of=J, **FAILED, finished_at=NOW - timedelta(seconds=0.5)),
        ],
        nodes("n1"),
        recheck=1.5,  # backoff(1) is 2 s after the last failure
        desired=1,
    ),
    Case(
        "OnFailure: a failed run restarts in place",
        job("OnFailure", completions=1),
        [instance("a", "n1", R, of=job("OnFailure"), **FAILED)],
        nodes("n1"),
        writes={"a": {"state": InstanceState.SCHEDULED, "restart_count": 1}},
        desired=1,
    ),
    Case(
        "OnFailure past backoff_limit: no restart, the job fails",
        job("OnFailure", backoff_limit=2),
        [instance("a", "n1", R, of=job("OnFailure"), restart_count=2, **FAILED)],
        nodes("n1"),
        notes={"BackoffLimitExceeded"},
        desired=0,
    ),
    Case(
        "Never past backoff_limit: the job fails and its running instances stop",
        job(parallelism=3, completions=5, backoff_limit=1),
        [
            instance("a", "n1", R, of=J, **FAILED),
            instance("b", "n1", R, of=J, **FAILED),
            instance("c", "n1", R, of=J),
        ],
        nodes("n1"),
        writes={"c": {"deleting": True, "reason": "BackoffLimitExceeded"}},
        notes={"BackoffLimitExceeded"},
        desired=0,
    ),
    Case(
        "an instance lost with its node is a failed run",
        job(backoff_limit=0),
        [instance("a", "n1", R, of=J)],
        nodes("n1", state=GossipState.FAILED),
        writes={"a": {"state": InstanceState.LOST}},
        pinned=[None],  # it counts once the instance is lost (next pass)
        desired=1,
    ),
    Case(
        "before its active deadline: a timer for it",
        job(active_deadline_seconds=60, fields={"created_at": NOW - timedelta(seconds=20)}),
        [instance("a", "n1", R, of=J)],
        nodes("n1"),
        desired=1,
        recheck=40.0,
    ),
    Case(
        "past its active deadline: failed, its instances stop",
        job(active_deadline_seconds=60, fields={"created_at": NOW - timedelta(seconds=61)}),
        [instance("a", "n1", R, of=J)],
        nodes("n1"),
        writes={"a": {"deleting": True, "reason": "DeadlineExceeded"}},
        notes={"DeadlineExceeded"},
        desired=0,
    ),
    Case(
        "parallelism 0 suspends: running instances stop",
        job(parallelism=0),
        [instance("a", "n1", R, of=J)],
        nodes("n1"),
        writes={"a": {"deleting": True, "reason": "ScaledDown"}},
        desired=0,
    ),
    Case(
        "a finished job waits out its ttl",
        job(
            ttl_seconds_after_finished=60,
            fields=_finished("Complete", "Completed", NOW - timedelta(seconds=10)),
        ),
        [instance("a", "n1", R, of=J, **DONE)],
        nodes("n1"),
        recheck=50.0,
        desired=0,
    ),
    Case(
        "past its ttl a finished job is deleted",
        job(
            ttl_seconds_after_finished=5,
            fields=_finished("Failed", "BackoffLimitExceeded", NOW - timedelta(seconds=10)),
        ),
        [instance("a", "n1", R, of=J, **FAILED)],
        nodes("n1"),
        expire=True,
        desired=0,
    ),
    Case(
        "a finished job stays finished: no new instance, no second event",
        job(fields=_finished("Failed", "DeadlineExceeded", NOW)),
        [],
        nodes("n1"),
        desired=0,
    ),
]


@pytest.mark.parametrize("case", DAEMON_CASES + JOB_CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    decision = _decide(case.workload, case.instances, case.nodes)
    placing = {p.name for p in decision.pending if p.stored is not None}
    assert sorted(p.node or "" for p in decision.pending) == sorted(n or "" for n in case.pinned)
    assert placing == case.placing
    writes = {op.stored.value.name: op for op in decision.ops.values() if isinstance(op, Write)}
    assert set(writes) == set(case.writes)
    for name, expected in case.writes.items():
        for key, value in expected.items():
            assert getattr(writes[name].value, key) == value, (name, key)
    deletes = {op.stored.value.name for op in decision.ops.values() if isinstance(op, Delete)}
    assert deletes == case.deletes
    assert {n.reason for n in decision.notes} == case.notes
    if case.desired is not None:
        assert decision.desired == case.desired
    assert decision.recheck == case.recheck
    assert decision.expire == case.expire


def test_daemon_status_counts_eligible_nodes() -> None:
    wl = daemon()
    decision = _decide(wl, [instance("a", "n1", R)], nodes("n1", "n2"))
    settled = _settle(decision)
    assert settled.status is not None
    assert settled.status.desired_replicas == 2
    assert settled.status.ready_replicas == 1
    assert settled.status.phase != WorkloadPhase.RUNNING
    done = _decide(wl, [instance("a", "n1", R), instance("b", "n2", R)], nodes("n1", "n2"))
    status = _settle(done).status
    assert status is not None
    assert status.phase == WorkloadPhase.RUNNING
    assert status.complete_revision == wl.value.revision


def test_job_status_complete_then_failed_phases() -> None:
    wl = job(completions=2, parallelism=2)
    done = [instance(x, "n1", R, of=wl, **DONE) for x in "ab"]
    status = _settle(_decide(wl, done, nodes("n1"))).status
    assert status is not None
    assert (status.phase, status.succeeded, status.failed) == (WorkloadPhase.COMPLETE, 2, 0)
    assert status.finished_at == NOW
    assert any(c.type == "Complete" and c.status for c in status.conditions)
    assert not any(c.type == "Progressing" for c in status.conditions)

    failing = job(backoff_limit=0)
    status = _settle(
        _decide(failing, [instance("a", "n1", R, of=failing, **FAILED)], nodes("n1"))
    ).status
    assert status is not None
    assert (status.phase, status.failed) == (WorkloadPhase.FAILED, 1)
    (failed,) = [c for c in status.conditions if c.type == "Failed"]
    assert failed.reason == "BackoffLimitExceeded"
    assert "backoff_limit 0" in failed.message


def test_job_counts_never_go_down_when_records_go() -> None:
    wl = job(completions=3, fields={"status": WorkloadStatus(succeeded=2, failed=1)})
    decision = _decide(wl, [], nodes("n1"))
    assert decision.job is not None
    assert (decision.job.succeeded, decision.job.failed) == (2, 1)
    assert len(decision.pending) == 1  # one completion to go


def test_a_pinned_request_considers_its_node_alone_and_says_why_it_does_not_fit() -> None:
    scheduler = DefaultScheduler()
    small = make_node("small", cpu="1")
    big = make_node("big", cpu="8")
    request = PlacementRequest(
        instance="default/a", group="default/agent", cpu=2000, memory=0, node="small"
    )
    placed = scheduler.place([request], [small, big], UsageIndex())
    assert not placed.assigned
    failure = placed.failed["default/a"]
    assert failure.message.startswith("node small does not fit: insufficient cpu")
    assert set(failure.nodes) == {"small"}
    fits = PlacementRequest(instance="default/b", group="default/agent", cpu=500, memory=0)
    pinned = [
        PlacementRequest(instance=f"default/{n}", group="default/agent", cpu=0, memory=0, node=n)
        for n in ("big", "gone")
    ]
    placed = scheduler.place([fits, *pinned], [small, big], UsageIndex())
    assert placed.assigned["default/big"] == "big"
    assert "default/b" in placed.assigned  # the unpinned request is placed as before
    assert (
        placed.failed["default/gone"].message
        == "node gone does not fit: node is not in the cluster"
    )


def test_a_plan_counts_a_daemons_nodes_and_a_jobs_parallel_runs() -> None:
    created = plan_change(daemon().value.spec, None)
    assert created.instances_to_create == 0
    assert created.rollout and "each eligible node" in created.rollout[0]
    running = daemon(fields={"status": WorkloadStatus(desired_replicas=4)}).value
    bumped = spec("agent", image="busybox:2", mode="daemon")
    change = plan_change(bumped, running)
    assert (change.instances_to_create, change.instances_to_replace) == (0, 4)
    assert len(change.rollout) == 4 and change.rollout[0].startswith("batch 1: stop 1 old")
    assert plan_change(job(completions=3, parallelism=2).value.spec, None).instances_to_create == 2
    finished = job(fields=_finished("Complete", "Completed", NOW)).value
    more = spec("agent", mode="job", restart_policy="Never", job={"parallelism": 4})
    assert plan_change(more, finished).instances_to_create == 0


def test_finished_runs_that_are_not_restarted_free_their_slot() -> None:
    usage = UsageIndex()
    on_failure = job("OnFailure")
    running = instance("a", "n1", R, of=on_failure).value
    assert not usage.change(None, running)
    assert usage["n1"].pods == 1
    failed = running.model_copy(update=FAILED)
    assert not usage.change(running, failed)  # OnFailure restarts it in place: the slot stays
    assert usage["n1"].pods == 1
    succeeded = running.model_copy(update=DONE)
    assert usage.change(running, succeeded)  # a succeeded run is kept, taking no room
    assert "n1" not in usage
    never = instance("b", "n1", R, of=job("Never")).value
    usage.change(None, never)
    assert usage.change(never, never.model_copy(update=FAILED))
    assert "n1" not in usage


def test_canaries_are_for_replicas_only() -> None:
    with pytest.raises(ValidationError, match=r"update\.canary is for mode replicas only"):
        spec("agent", replicas=2, mode="daemon", update={"canary": 1})


# --- the loops, on the mock runtime -----------------------------------------


async def _instances(cluster: Cluster, workload: str) -> list[Instance]:
    return await cluster.service.list_instances(workload=workload)


async def test_a_job_completes_with_completions_3_and_parallelism_2(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=5, exit_code=0, image="work")])
    await cluster.add_node("n1", runtime)
    job_spec = spec(
        "batch",
        image="work",
        mode="job",
        restart_policy="Never",
        job={"completions": 3, "parallelism": 2},
    )
    await cluster.service.apply([job_spec])
    await cluster.settle()
    first = await _instances(cluster, "batch")
    assert [i.state for i in first] == [R, R]  # parallelism 2
    cluster.clock.advance(5)
    await cluster.settle()
    states = sorted(i.state for i in await _instances(cluster, "batch"))
    assert states == sorted([R, InstanceState.STOPPED, InstanceState.STOPPED])
    workload = await cluster.workload("batch")
    assert (workload.status.succeeded, workload.status.phase) == (2, WorkloadPhase.RUNNING)
    cluster.clock.advance(5)
    await cluster.settle()
    workload = await cluster.workload("batch")
    assert workload.status.phase == WorkloadPhase.COMPLETE
    assert workload.status.succeeded == 3
    assert workload.status.finished_at is not None
    assert any(c.type == "Complete" and c.status for c in workload.status.conditions)
    kept = await _instances(cluster, "batch")
    assert len(kept) == 3 and {i.exit_code for i in kept} == {0}  # kept for `shoal logs`
    assert len(await runtime.list()) == 3
    events = await cluster.service.list_events(kind="Workload", name="batch")
    assert "Completed" in [e.reason for e in events]
    # Settled: nothing more to do, and nothing runs again.
    cluster.clock.advance(60)
    assert await cluster.settle() == 0


async def test_a_job_fails_past_its_backoff_limit(cluster: Cluster) -> None:
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=1, image="bad")])
    await cluster.add_node("n1", runtime)
    job_spec = spec(
        "batch",
        image="bad",
        mode="job",
        restart_policy="Never",
        job={"completions": 1, "backoff_limit": 2, "ttl_seconds_after_finished": 30},
    )
    await cluster.service.apply([job_spec])
    await cluster.settle()
    for backoff in (1, 2):  # each new run waits out a growing backoff
        runs = await _instances(cluster, "batch")
        assert [i.state for i in runs] == [InstanceState.FAILED] * backoff
        assert (await cluster.workload("batch")).status.failed == backoff
        cluster.clock.advance(backoff - 0.5)
        await cluster.settle()
        assert len(await _instances(cluster, "batch")) == backoff
        cluster.clock.advance(0.5)
        await cluster.settle()
    workload = await cluster.workload("batch")
    assert workload.status.phase == WorkloadPhase.FAILED
    assert workload.status.failed == 3
    (failed,) = [c for c in workload.status.conditions if c.type == "Failed"]
    assert failed.reason == "BackoffLimitExceeded"
    runs = await _instances(cluster, "batch")
    assert [i.state for i in runs] == [InstanceState.FAILED] * 3  # kept, not restarted
    events = await cluster.service.list_events(kind="Workload", name="batch")
    assert [e.reason for e in events].count("BackoffLimitExceeded") == 1
    # ttl_seconds_after_finished: deleted 30 s after it failed.
    cluster.clock.advance(29)
    await cluster.settle()
    assert await cluster.service.list_workloads() != []
    cluster.clock.advance(2)
    await cluster.settle()
    assert await cluster.service.list_workloads() == []
    assert await runtime.list() == []


async def test_timers_alone_fail_a_job_past_its_deadline_and_delete_it_after_its_ttl(
    cluster: Cluster,
) -> None:
    """The real run() loops: nothing changes in the store, the clock alone moves the job on."""
    node_loop = await cluster.add_node("n1")  # its containers never exit
    job_spec = spec(
        "batch",
        mode="job",
        restart_policy="OnFailure",
        job={"active_deadline_seconds": 30, "ttl_seconds_after_finished": 60},
    )
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await tg.start(node_loop.run)
        await cluster.service.apply([job_spec])

        async def failed() -> bool:
            status = (await cluster.workload("batch")).status
            return status.phase == WorkloadPhase.FAILED

        await eventually(failed, cluster.clock, step=5)
        workload = await cluster.workload("batch")
        assert workload.status.finished_at is not None
        assert workload.status.finished_at - workload.created_at >= timedelta(seconds=30)
        (condition,) = [c for c in workload.status.conditions if c.type == "Failed"]
        assert condition.reason == "DeadlineExceeded"

        async def gone() -> bool:
            return not await cluster.service.list_workloads()

        await eventually(gone, cluster.clock, step=5)
        assert cluster.clock.now() - workload.status.finished_at >= timedelta(seconds=60)
        assert await cluster.runtimes["n1"].list() == []
        tg.cancel_scope.cancel()


async def test_a_jobs_template_cannot_change(cluster: Cluster) -> None:
    job_spec = spec("batch", mode="job", restart_policy="OnFailure")
    await cluster.service.apply([job_spec])
    changed = spec("batch", image="busybox:2", mode="job", restart_policy="OnFailure")
    with pytest.raises(InvalidSpec, match="the template of a job cannot change"):
        await cluster.service.apply([changed])
    with pytest.raises(InvalidSpec, match="mode cannot change between job and replicas"):
        await cluster.service.apply([spec("batch")])
    more = spec("batch", mode="job", restart_policy="OnFailure", job={"parallelism": 3})
    await cluster.service.apply([more])  # the rest may change (as parallelism may in Kubernetes)


async def test_a_daemon_runs_one_per_node_and_follows_nodes(cluster: Cluster) -> None:
    """Driven by the real run() loops: a node's arrival or change wakes the daemon."""
    for name in ("n1", "n2", "n3"):
        await cluster.add_node(name, labels={"pool": "edge"})

    async def per_node() -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in await _instances(cluster, "agent"):
            if inst.node is not None and inst.state == R:
                counts[inst.node] = counts.get(inst.node, 0) + 1
        return counts

    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        for loop in cluster.nodes.values():
            await tg.start(loop.run)
        await cluster.service.apply(
            [spec("agent", replicas=1, mode="daemon", placement={"constraints": {"pool": "edge"}})]
        )

        async def on(expected: dict[str, int]) -> bool:
            return await per_node() == expected

        await eventually(functools.partial(on, {"n1": 1, "n2": 1, "n3": 1}))
        workload = await cluster.workload("agent")
        assert workload.status.desired_replicas == 3

        n4 = await cluster.add_node("n4", labels={"pool": "edge"})
        await tg.start(n4.run)
        await eventually(functools.partial(on, {"n1": 1, "n2": 1, "n3": 1, "n4": 1}))

        n2 = cluster.nodes["n2"]
        n2.node = n2.node.model_copy(update={"labels": {"pool": "core"}})
        await n2.register()  # the agent restarted with other labels
        await eventually(functools.partial(on, {"n1": 1, "n3": 1, "n4": 1}))

        async def settled_status() -> bool:
            status = (await cluster.workload("agent")).status
            return status.desired_replicas == 3 and status.phase == WorkloadPhase.RUNNING

        await eventually(settled_status)
        assert await cluster.runtimes["n2"].list() == []
        (one, *_) = await _instances(cluster, "agent")
        explained = await cluster.service.explain(one.name)
        assert "workload default/agent: 3/3 ready, phase running" in explained.details  # not 3/1
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()


async def test_a_daemon_rolls_node_by_node_within_max_unavailable(cluster: Cluster) -> None:
    for name in ("n1", "n2", "n3"):
        await cluster.add_node(name)
    ports = [{"container_port": 9100, "host_port": 9100}]

    def agent(image: str) -> Any:
        template = {"containers": [{"name": "main", "image": image, "ports": ports}]}
        update = {"max_unavailable": 1, "max_surge": 0}
        return spec("agent", mode="daemon", template=template, update=update)

    await cluster.service.apply([agent("busybox:1")])
    await cluster.settle()
    await cluster.service.apply([agent("busybox:2")])
    lowest = 3
    for _ in range(40):
        before = await cluster.store.revision()
        await cluster.control.reconcile_once()
        for loop in cluster.nodes.values():
            await loop.reconcile_once()
        running = [i for i in await _instances(cluster, "agent") if i.state == R and i.ready]
        assert len({i.node for i in running}) == len(running)  # never two on one node
        lowest = min(lowest, len(running))
        if await cluster.store.revision() == before:
            break
    assert lowest == 2  # one node at a time
    final = await _instances(cluster, "agent")
    assert sorted(i.node or "" for i in final) == ["n1", "n2", "n3"]
    assert {i.template.containers[0].image for i in final} == {"busybox:2"}
    workload = await cluster.workload("agent")
    assert workload.status.phase == WorkloadPhase.RUNNING
    assert workload.status.complete_revision == workload.revision == 2
    events = await cluster.service.list_events(kind="Workload", name="agent", limit=500)
    assert [e.reason for e in events].count("RollingUpdate") == 3


async def test_a_node_added_wakes_daemons_not_every_workload(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec("agent", mode="daemon"), spec("web", replicas=1)])
    await cluster.settle()
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await wait_all_tasks_blocked()
        woken: list[str] = []
        reconcile = cluster.control.reconcile

        async def spy(keys: Any) -> set[str]:
            woken.extend(keys)
            return await reconcile(keys)

        cluster.control.reconcile = spy  # type: ignore[method-assign]
        await cluster.add_node("n2")

        async def reconciled_once() -> bool:
            return bool(woken)

        await eventually(reconciled_once)
        await wait_all_tasks_blocked()
        assert set(woken) == {"default/agent"}
        (placed,) = [i for i in await _instances(cluster, "agent") if i.node == "n2"]
        assert placed.state == InstanceState.SCHEDULED
        tg.cancel_scope.cancel()
