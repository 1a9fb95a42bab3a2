"""The control loop's decisions as tables: a workload's snapshot in, actions out. No store."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from shoal.core._applier import writes
from shoal.core._placement import InstanceFactory, UsageIndex
from shoal.core._reconcile import (
    Decision,
    Delete,
    Note,
    Pending,
    Settled,
    Write,
    decide,
    settle,
    workload_ref,
)
from shoal.core._repo import Stored
from shoal.interfaces import (
    EventType,
    GossipState,
    Instance,
    InstanceState,
    Node,
    Placements,
    Revision,
    ScheduleFailure,
    Workload,
    WorkloadPhase,
    WorkloadStatus,
)
from tests.core.support import make_node, spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def workload(replicas: int = 2, **fields: Any) -> Stored[Workload]:
    value = Workload(
        name="web",
        namespace="default",
        uid="w1",
        spec=spec(replicas=replicas),
        created_at=NOW,
        updated_at=NOW,
    )
    return Stored(value.model_copy(update=fields), "/workloads/default/web", 10, 10)


def instance(
    name: str, node: str | None, state: InstanceState, *, rev: int = 20, **fields: Any
) -> Stored[Instance]:
    wl = workload().value
    value = Instance(
        name=name,
        namespace="default",
        uid=f"uid-{name}",
        workload="web",
        workload_uid=wl.uid,
        generation=wl.generation,
        template=wl.spec.template,
        restart_policy=wl.spec.restart_policy,
        node=node,
        state=state,
        created_at=NOW,
        **fields,
    )
    return Stored(value, f"/instances/default/{name}", rev, rev)


def nodes(**states: GossipState | str) -> dict[str, Node]:
    """``n1="alive"`` or ``n1="draining"`` → node records."""
    out = {}
    for name, state in states.items():
        if state == "draining":
            out[name] = make_node(name, draining=True)
        else:
            out[name] = make_node(name, state=state)
    return out


@dataclass
class Case:
    id: str
    workload: Stored[Workload] | None
    instances: Sequence[Stored[Instance]]
    nodes: dict[str, Node]
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Instance name → fields its write sets (checked), for each write expected."""
    deletes: set[str] = field(default_factory=set)
    new: int = 0
    placing: set[str] = field(default_factory=set)
    """Existing unplaced instances to place."""
    delete_workload: bool = False
    notes: set[str] = field(default_factory=set)
    """Reasons of the events the ops record."""


R = InstanceState.RUNNING
CASES = [
    Case(
        "settled: nothing to do",
        workload(2),
        [instance("a", "n1", R), instance("b", "n1", R)],
        nodes(n1="alive"),
    ),
    Case(
        "missing replicas are created",
        workload(3),
        [instance("a", "n1", R)],
        nodes(n1="alive"),
        new=2,
    ),
    Case(
        "an unplaced replica is placed again",
        workload(1),
        [instance("a", None, InstanceState.PENDING)],
        nodes(n1="alive"),
        placing={"a"},
    ),
    Case(
        "scale down: unplaced first, then newest",
        workload(1),
        [
            instance("old", "n1", R, rev=5),
            instance("new", "n1", R, rev=9),
            instance("u", None, InstanceState.PENDING, rev=1),
        ],
        nodes(n1="alive"),
        writes={"new": {"deleting": True, "reason": "ScaledDown"}},
        deletes={"u"},
    ),
    Case(
        "an instance of a failed node is lost and replaced",
        workload(1),
        [instance("a", "n1", R)],
        nodes(n1=GossipState.FAILED, n2="alive"),
        writes={"a": {"state": InstanceState.LOST, "deleting": True, "ready": False}},
        new=1,
        notes={"NodeLost"},
    ),
    Case(
        "an instance stopping on a node that failed is lost too, not left running there",
        workload(1),
        [
            instance("old", "n1", R, deleting=True, ready=True, reason="ScaledDown"),
            instance("new", "n2", R, rev=21, ready=True),
        ],
        nodes(n1=GossipState.FAILED, n2="alive"),
        writes={"old": {"state": InstanceState.LOST, "deleting": True, "ready": False}},
        notes={"NodeLost"},
    ),
    Case(
        "a deleted workload's instance stopping on a node that failed is deleted: none stops it",
        workload(1, deleting=True),
        [instance("a", "n1", R, deleting=True, ready=True), instance("b", "n2", R)],
        nodes(n1=GossipState.FAILED, n2="alive"),
        writes={"b": {"deleting": True, "reason": "WorkloadDeleting"}},
        deletes={"a"},
        notes={"WorkloadDeleting"},
    ),
    Case(
        "a deleted workload's instance on a failed node is asked to go, then deleted",
        workload(1, deleting=True),
        [instance("a", "n1", R)],
        nodes(n1=GossipState.FAILED),
        writes={"a": {"deleting": True, "reason": "WorkloadDeleting"}},
    ),
    Case(
        "a lost instance of a vanished node is deleted",
        workload(1),
        [instance("a", "gone", InstanceState.LOST, deleting=True), instance("b", "n1", R)],
        nodes(n1="alive"),
        deletes={"a"},
        notes={"NodeLost"},
    ),
    Case(
        "a suspect node keeps what it runs but loses what it has not started",
        workload(2),
        [instance("a", "n1", R), instance("b", "n1", InstanceState.SCHEDULED)],
        nodes(n1=GossipState.SUSPECT),
        writes={"b": {"state": InstanceState.LOST}},
        new=1,
        notes={"NodeLost"},
    ),
    Case(
        "an instance of a node that left is deleted and replaced",
        workload(1),
        [instance("a", "n1", R)],
        nodes(n1=GossipState.LEFT, n2="alive"),
        deletes={"a"},
        new=1,
        notes={"NodeLeft"},
    ),
    Case(
        "a finished instance restarts in place with a backoff",
        workload(1),
        [instance("a", "n1", InstanceState.FAILED, exit_code=3)],
        nodes(n1="alive"),
        writes={
            "a": {"state": InstanceState.SCHEDULED, "reason": "Restarting", "restart_count": 1}
        },
    ),
    Case(
        "an outdated template is replaced",
        workload(1, spec=spec(replicas=1, image="busybox:2")),
        [instance("a", "n1", R)],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "Replaced"}},  # not ready: counts for nothing
        new=1,
    ),
    Case(
        "draining: the replacement first, the running one stays while it is needed",
        workload(1),
        [instance("a", "n1", R)],
        nodes(n1="draining", n2="alive"),
        new=1,
    ),
    Case(
        "draining: once a replacement runs, the old one goes",
        workload(1),
        [instance("a", "n1", R, rev=1), instance("b", "n2", R, rev=2)],
        nodes(n1="draining", n2="alive"),
        writes={"a": {"deleting": True, "reason": "Drained"}},
    ),
    Case(
        "a deleting workload asks every instance to go",
        workload(2, deleting=True),
        [instance("a", "n1", R), instance("u", None, InstanceState.PENDING)],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "WorkloadDeleting"}},
        deletes={"u"},
    ),
    Case(
        "a deleting workload with no instance left is deleted",
        workload(2, deleting=True),
        [],
        nodes(n1="alive"),
        delete_workload=True,
    ),
    Case(
        "the instances of a workload that is gone are orphans",
        None,
        [instance("a", "n1", R), instance("b", "n1", R, deleting=True)],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "WorkloadDeleted"}},
    ),
]


def _decide(case: Case) -> Decision:
    uids = count()
    return decide(
        case.workload,
        case.instances,
        case.nodes,
        now=NOW,
        backoff=lambda n: 2.0**n,
        fresh_uid=lambda wl: f"{next(uids):05d}{'0' * 11}",
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    decision = _decide(case)
    writes = {op.stored.value.name: op for op in decision.ops.values() if isinstance(op, Write)}
    deletes = {op.stored.value.name for op in decision.ops.values() if isinstance(op, Delete)}
    assert set(writes) == set(case.writes)
    for name, fields in case.writes.items():
        for field_name, value in fields.items():
            assert getattr(writes[name].value, field_name) == value, (name, field_name)
        assert writes[name].stored.value.name == name
    assert deletes == case.deletes
    assert sum(1 for p in decision.pending if p.stored is None) == case.new
    assert {p.name for p in decision.pending if p.stored is not None} == case.placing
    assert decision.delete_workload == case.delete_workload
    notes = {op.note.reason for op in decision.ops.values() if op.note is not None}
    assert notes == case.notes


def test_a_restart_backoff_grows_with_the_streak() -> None:
    failing = instance("a", "n1", InstanceState.FAILED, exit_code=1, restart_count=3)
    decision = _decide(Case("", workload(1), [failing], nodes(n1="alive")))
    (op,) = decision.ops.values()
    assert isinstance(op, Write)
    assert op.value.reason == "CrashLoopBackOff"
    assert op.value.not_before is not None
    assert (op.value.not_before - NOW).total_seconds() == 8.0


def _settle(decision: Decision, placements: Placements) -> Settled:
    assert decision.workload is not None
    new = InstanceFactory(NOW).maker(decision.workload.value)
    return settle(decision, placements, new, NOW)


def test_settle_places_new_and_existing_and_says_where() -> None:
    stored = workload(2)
    unplaced = instance("a", None, InstanceState.PENDING)
    decision = Decision(
        stored, pending=[Pending(None, "web-bbbbb", "b" * 16), Pending(unplaced, "a", "uid-a")]
    )
    placements = Placements(assigned={"default/web-bbbbb": "n1", "default/a": "n2"})
    settled = _settle(decision, placements)
    (created,) = settled.created
    assert (created.name, created.node, created.state) == (
        "web-bbbbb",
        "n1",
        InstanceState.SCHEDULED,
    )
    (write,) = settled.ops
    assert (write.value.node, write.value.state) == ("n2", InstanceState.SCHEDULED)
    assert [n.message for n in settled.notes] == ["placed 2 instance(s) on n1 (1), n2 (1)"]
    assert settled.unschedulable is None
    assert settled.status is not None and settled.status.scheduled_replicas == 2


def test_settle_reports_what_fits_nowhere_once() -> None:
    failure = ScheduleFailure(
        message="0/1 nodes fit: 1 insufficient cpu", nodes={"n1": "insufficient cpu"}
    )
    decision = Decision(workload(1), pending=[Pending(None, "web-ccccc", "c" * 16)])
    settled = _settle(decision, Placements(failed={"default/web-ccccc": failure}))
    assert settled.unschedulable == failure.message
    assert [(n.reason, n.type) for n in settled.notes] == [("FailedScheduling", EventType.WARNING)]
    assert settled.created[0].schedule_failure == failure
    assert settled.status is not None and settled.status.phase == WorkloadPhase.DEGRADED

    # Once the workload's status says so, the same failure records no second event.
    said = workload(1, status=settled.status)
    again = _settle(
        Decision(said, pending=[Pending(None, "web-ddddd", "d" * 16)]),
        Placements(failed={"default/web-ddddd": failure}),
    )
    assert again.notes == []
    assert again.status is None  # unchanged: nothing to write


def test_the_usage_index_follows_changes_and_frees_slots() -> None:
    usage = UsageIndex()
    placed = instance("a", "n1", InstanceState.SCHEDULED).value
    assert usage.change(None, placed) is False
    assert usage["n1"].pods == 1
    running = placed.model_copy(update={"state": InstanceState.RUNNING})
    assert usage.change(placed, running) is False  # a status change keeps its slot
    assert usage["n1"].groups == {"default/web": 1}
    assert usage.change(running, None) is True
    assert "n1" not in usage


def rolled(replicas: int, image: str = "busybox:2", **update: Any) -> Stored[Workload]:
    """The workload after an image change, with an update strategy of ``update``."""
    changed = spec(replicas=replicas, image=image, update=update or {})
    return workload(replicas, spec=changed, revision=2)


def up(
    name: str, *, rev: int = 20, since: datetime = NOW - timedelta(hours=1), **fields: Any
) -> Stored[Instance]:
    """A running instance of the old template on n1, ready for an hour."""
    return instance(name, "n1", R, rev=rev, ready=True, ready_since=since, **fields)


def new_up(
    name: str, *, rev: int = 30, since: datetime = NOW - timedelta(hours=1)
) -> Stored[Instance]:
    """A running, ready instance of the new template (busybox:2) on n1."""
    stored = up(name, rev=rev, since=since)
    template = spec(image="busybox:2").template
    return Stored(stored.value.model_copy(update={"template": template}), stored.key, rev, rev)


ROLLING = [
    Case(
        "max_unavailable 0: one surge instance first, nothing stops",
        rolled(3, max_surge=1, max_unavailable=0),
        [up("a"), up("b"), up("c")],
        nodes(n1="alive"),
        new=1,
    ),
    Case(
        "max_unavailable 0: once the surge instance is available, one old one goes",
        rolled(3, max_surge=1, max_unavailable=0),
        [up("a", rev=1), up("b", rev=2), up("c", rev=3), new_up("d")],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "Replaced"}},  # the oldest
        new=1,  # and the next surge instance in the same step
    ),
    Case(
        "max_surge 0: one old instance goes first, its replacement comes with it",
        rolled(3, max_surge=0, max_unavailable=1),
        [up("a", rev=1), up("b", rev=2), up("c", rev=3)],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "Replaced"}},
        new=1,  # the one going no longer counts: its replacement is made in the same step
    ),
    Case(
        "the defaults (25%) on 4 replicas: one surge, one unavailable",
        rolled(4),
        [up("a", rev=1), up("b", rev=2), up("c", rev=3), up("d", rev=4)],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "Replaced"}},
        new=2,  # a whole batch at once: the surge one and the one replacing "a"
    ),
    Case(
        "an old instance that is not available goes at once, whatever the budget",
        rolled(2, max_surge=1, max_unavailable=0),
        [up("a"), instance("b", "n1", InstanceState.FAILED, exit_code=1)],
        nodes(n1="alive"),
        writes={"b": {"deleting": True, "reason": "Replaced"}},
        new=2,  # the surge one and the one replacing "b"
    ),
    Case(
        "min_ready_seconds: a ready new instance is not yet available, so no old one goes",
        rolled(2, max_surge=1, max_unavailable=0, min_ready_seconds=30),
        [up("a", rev=1), up("b", rev=2), new_up("c", since=NOW)],
        nodes(n1="alive"),
    ),
    Case(
        "paused: nothing is replaced",
        workload(2, spec=spec(replicas=2, image="busybox:2", paused=True), revision=2),
        [up("a"), up("b")],
        nodes(n1="alive"),
    ),
    Case(
        "paused and scaled down: surplus old instances go, nothing is replaced",
        workload(1, spec=spec(replicas=1, image="busybox:2", paused=True), revision=2),
        [up("a", rev=1), up("b", rev=2)],
        nodes(n1="alive"),
        writes={"a": {"deleting": True, "reason": "ScaledDown"}},
    ),
    Case(
        "recreate: every old instance goes, the new ones wait for them",
        rolled(2, type="recreate"),
        [up("a"), up("b")],
        nodes(n1="alive"),
        writes={
            "a": {"deleting": True, "reason": "TemplateChanged"},
            "b": {"deleting": True, "reason": "TemplateChanged"},
        },
    ),
    Case(
        "scaled from 8 to 4 mid-rollout: old and new give up their share of the excess",
        rolled(4, max_surge=1, max_unavailable=0),
        [up("a", rev=1), up("b", rev=2), up("c", rev=3), up("d", rev=4)]
        + [new_up(n, rev=r) for n, r in (("e", 30), ("f", 31), ("g", 32), ("h", 33))],
        nodes(n1="alive"),
        writes={
            "a": {"deleting": True, "reason": "ScaledDown"},  # old: the oldest two
            "b": {"deleting": True, "reason": "ScaledDown"},
            "h": {"deleting": True, "reason": "ScaledDown"},  # new: the newest one
            "c": {"deleting": True, "reason": "Replaced"},  # then the rollout's own step
        },
        new=1,  # with the surge instance that makes up for it
    ),
    Case(
        "canaries awaiting promotion beyond max_surge: no old instance goes",
        Stored(
            rolled(3, canary=2, max_surge=1, max_unavailable=0).value.model_copy(
                update={"promoted_revision": 1}
            ),
            "/workloads/default/web",
            10,
            10,
        ),
        [up("a", rev=1), up("b", rev=2), up("c", rev=3), new_up("d"), new_up("e", rev=31)],
        nodes(n1="alive"),
    ),
    Case(
        "recreate: the new ones start once no old instance is left",
        rolled(2, type="recreate"),
        [],
        nodes(n1="alive"),
        new=2,
    ),
]


@pytest.mark.parametrize("case", ROLLING, ids=[c.id for c in ROLLING])
def test_rolling_update(case: Case) -> None:
    test_decide(case)


@pytest.mark.parametrize(
    ("auto", "canaries_up", "promote"), [(True, 1, True), (True, 0, False), (False, 1, False)]
)
def test_canaries_are_promoted_by_the_loop_only_with_auto_promote_once_available(
    auto: bool, canaries_up: int, promote: bool
) -> None:
    wl = rolled(3, canary=1, auto_promote=auto, max_surge=1, max_unavailable=0)
    wl = Stored(wl.value.model_copy(update={"promoted_revision": 1}), wl.key, 10, 10)
    canary = new_up("d") if canaries_up else new_up("d", since=NOW + timedelta(seconds=5))
    ready = (
        canary
        if canaries_up
        else Stored(canary.value.model_copy(update={"ready": False}), canary.key, 30, 30)
    )
    decision = _decide(Case("", wl, [up("a"), up("b"), up("c"), ready], nodes(n1="alive")))
    assert decision.promote is promote
    assert not decision.ops and not decision.pending  # nothing replaced before the promotion


def test_min_ready_seconds_asks_to_look_again_when_an_instance_becomes_available() -> None:
    decision = _decide(
        Case(
            "",
            rolled(2, max_surge=1, max_unavailable=0, min_ready_seconds=30),
            [up("a", rev=1), up("b", rev=2), new_up("c", since=NOW - timedelta(seconds=10))],
            nodes(n1="alive"),
        )
    )
    assert decision.recheck == 20.0


def test_a_rollout_without_progress_past_its_deadline_fails_and_reverts() -> None:
    stuck = rolled(
        2, max_surge=1, max_unavailable=0, progress_deadline_seconds=60, auto_revert=True
    )
    earlier = NOW - timedelta(seconds=61)
    history = [
        Revision(number=1, template_hash="h1", template=spec().template, created_at=earlier),
        Revision(
            number=2, template_hash="h2", template=stuck.value.spec.template, created_at=earlier
        ),
    ]
    status = WorkloadStatus(
        revision=2,
        complete_revision=1,
        replicas=3,
        updated_replicas=1,
        available_replicas=2,
        progress_at=earlier,
    )
    failing = Stored(
        stuck.value.model_copy(update={"revisions": history, "status": status}),
        stuck.key,
        stuck.revision,
        stuck.created,
    )
    pending_new = new_up("c")
    not_ready = Stored(
        pending_new.value.model_copy(update={"ready": False}), pending_new.key, 30, 30
    )
    decision = _decide(
        Case("", failing, [up("a", rev=1), up("b", rev=2), not_ready], nodes(n1="alive"))
    )
    settled = _settle(decision, Placements())
    assert settled.status is not None
    progressing = next(c for c in settled.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == (False, "ProgressDeadlineExceeded")
    assert [n.reason for n in settled.notes] == ["ProgressDeadlineExceeded"]
    assert settled.revert_to == 1


def test_a_completed_rollout_says_so_and_remembers_its_revision() -> None:
    done = rolled(2)
    decision = _decide(Case("", done, [new_up("a"), new_up("b")], nodes(n1="alive")))
    settled = _settle(decision, Placements())
    assert settled.status is not None
    assert (settled.status.updated_replicas, settled.status.available_replicas) == (2, 2)
    assert settled.status.complete_revision == 2
    progressing = next(c for c in settled.status.conditions if c.type == "Progressing")
    assert progressing.reason == "RolloutComplete"


def test_a_surge_that_fits_nowhere_lets_the_rollout_go_on_without_one() -> None:
    """max_unavailable 0, and the surge instance is unschedulable: one old one makes room."""
    failure = ScheduleFailure(message="0/1 nodes fit: 1 host port 80/tcp already in use")
    surge = new_up("d")
    unplaced = surge.value.model_copy(
        update={
            "node": None,
            "state": InstanceState.PENDING,
            "ready": False,
            "schedule_failure": failure,
        }
    )
    case = Case(
        "",
        rolled(3, max_surge=1, max_unavailable=0),
        [up("a", rev=1), up("b", rev=2), up("c", rev=3), Stored(unplaced, surge.key, 30, 30)],
        nodes(n1="alive"),
    )
    decision = _decide(case)
    removed = [op.stored.value.name for op in decision.ops.values()]
    assert removed == ["a"]  # the oldest makes room
    assert [p.name for p in decision.pending] == ["d"]  # placed again, now into a's room
    reasons = [note.reason for note in decision.notes]
    assert reasons == ["SurgeUnplaceable", "RollingUpdate"]
    assert "host port 80/tcp already in use" in decision.notes[0].message


def test_each_rollout_step_is_one_event() -> None:
    decision = _decide(ROLLING[0])  # max_unavailable 0: one surge instance
    assert [(n.reason, n.message) for n in decision.notes] == [
        ("RollingUpdate", "1 new instance(s), 0 old one(s) stopping; 0 of 3 updated")
    ]
    waiting = _decide(ROLLING[5])  # min_ready_seconds not yet passed: no step, no event
    assert waiting.notes == []


def test_a_batch_writes_when_any_decision_or_settlement_asks_for_a_write() -> None:
    """What the control loop checks before it records a batch's span (an idle one has none)."""
    wl, inst = workload(), instance("web-a", "n1", InstanceState.RUNNING)
    note = Note(workload_ref(wl.value), "Scaled", "up")
    idle = [("default/web", Decision(wl))], [Settled()]
    assert not writes(*idle)
    assert not writes([("default/gone", Decision(None))], [])
    decisions = [
        Decision(wl, ops={inst.key: Delete(inst)}),
        Decision(None, ops={inst.key: Delete(inst)}),  # a gone workload's instance
        Decision(wl, delete_workload=True),
        Decision(wl, expire=True),
        Decision(wl, promote=True),
        Decision(wl, notes=[note]),
    ]
    for decision in decisions:
        assert writes([("default/web", decision)], [Settled()]), decision
    settlements = [
        Settled(created=[inst.value]),
        Settled(ops=[Write(inst, inst.value)]),
        Settled(notes=[note]),
        Settled(status=wl.value.status),
        Settled(revert_to=1),
    ]
    for settled in settlements:
        assert writes([("default/web", Decision(wl))], [settled]), settled
