"""What the control loop decides for one workload: pure functions of its snapshot.

The control loop reconciles one workload at a time (its key came out of the
work queue). :func:`decide` takes the workload as stored (or None once it is
gone), its instances and the nodes, and returns what to do, with no store and
no clock of its own; :func:`settle` takes the scheduler's answer for the
instances the decision left to place and returns the rest: the placements to
write, the new instances, the events and the workload's status. The loop's
applier writes what they return. Each is tested as a table of cases
(``tests/core/test_reconcile.py``).

The rules, per instance (at most one write per instance per decision, so no
write of a decision conflicts with another of the same decision):

* an instance of a workload that is gone or being deleted is asked to go;
* an instance of a node that left is deleted (nobody is there to stop it);
  one of a failed or vanished node is marked ``lost`` and deleting, and once
  lost on a node that is gone it is deleted; its replacement is placed below;
* a finished instance is restarted in place per restart policy, with a
  growing backoff (``not_before``) reported as ``CrashLoopBackOff``;
* an instance of an outdated template is replaced (recreate);
* ``replicas`` healthy instances are kept: the missing ones are created,
  surplus unplaced ones go first, then the newest;
* instances on a draining node get a replacement elsewhere first; the old one
  stops only while the workload keeps enough running instances.

"Asked to go" means deleted at once when nothing runs it (unplaced, node
left, lost on a node that is gone), else marked ``deleting`` for its node
loop to stop it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shoal.interfaces import (
    EventType,
    GossipState,
    Instance,
    InstanceState,
    Node,
    ObjectRef,
    PlacementRequest,
    Placements,
    ScheduleFailure,
    UpdateType,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
)

from ._repo import Stored
from ._restarts import restart, should_restart
from ._status import available, awaiting_promotion, deadline_at, workload_status

__all__ = [
    "Decision",
    "Delete",
    "Note",
    "Pending",
    "Settled",
    "Write",
    "decide",
    "placement_requests",
    "settle",
    "workload_ref",
]

_FINISHED = frozenset({InstanceState.STOPPED, InstanceState.FAILED})
_NOT_PLACED = ScheduleFailure(message="the scheduler neither placed nor explained it")


@dataclass(frozen=True, slots=True)
class Note:
    """An event to record about ``obj``."""

    obj: ObjectRef
    reason: str
    message: str
    type: EventType = EventType.NORMAL


@dataclass(frozen=True, slots=True)
class Write:
    """Replace an instance as read with ``value`` (compare-and-swap); then record ``note``."""

    stored: Stored[Instance]
    value: Instance
    note: Note | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete an instance as read (compare-and-swap); then record ``note``."""

    stored: Stored[Instance]
    note: Note | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """An instance to place: an unplaced one as read, or a new one (``stored`` None)."""

    stored: Stored[Instance] | None
    name: str
    uid: str


@dataclass(slots=True)
class Decision:
    """What :func:`decide` returns for one workload."""

    workload: Stored[Workload] | None
    ops: dict[str, Write | Delete] = field(default_factory=dict)
    """Per instance key, its one write or delete."""
    pending: list[Pending] = field(default_factory=list)
    live: dict[str, Instance] = field(default_factory=dict)
    """The workload's live instances by name, as they stand after ``ops``."""
    delete_workload: bool = False
    """The workload is being deleted and has no instance left: delete its record."""
    recheck: float | None = None
    """Seconds after which to decide again even if nothing changes (a ready-for timer)."""
    notes: list[Note] = field(default_factory=list)
    """Events about the workload: a rollout step, a surge that fits nowhere."""


@dataclass(slots=True)
class Settled:
    """What :func:`settle` returns: the rest of the workload's writes."""

    ops: list[Write] = field(default_factory=list)
    created: list[Instance] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    status: WorkloadStatus | None = None
    """The workload's new status, or None if it is unchanged (or it has no record)."""
    unschedulable: str | None = None
    """Why some instance fits nowhere, or None if every one was placed."""
    recheck: float | None = None
    """Seconds after which to decide again even if nothing changes (min-ready, deadline)."""
    revert_to: int | None = None
    """The rollout failed and reverts: the revision whose template comes back."""


def _ref(inst: Instance) -> ObjectRef:
    return ObjectRef(kind="Instance", namespace=inst.namespace, name=inst.name)


def workload_ref(item: Workload | Instance) -> ObjectRef:
    """Return the workload an object is, or belongs to."""
    name = item.name if isinstance(item, Workload) else item.workload
    return ObjectRef(kind="Workload", namespace=item.namespace, name=name)


def _lost_because(node: Node | None, inst: Instance) -> str | None:
    """Return why ``inst`` is lost with its node (which it is placed on), or None if it is not.

    An instance of a failed or vanished node is lost; so is one that a
    suspect node (silent, or unsure in gossip) has not even started: moving
    it costs nothing, and if that node starts it after all, the instance's
    record tells it to stop the copy.
    """
    if node is None:
        return "is gone"
    if node.state == GossipState.FAILED:
        return "failed"
    if node.state == GossipState.SUSPECT and inst.state == InstanceState.SCHEDULED:
        return "is suspect and has not started it"
    return None


class _Deciding:
    """The working state of one :func:`decide` call."""

    def __init__(self, nodes: Mapping[str, Node], decision: Decision) -> None:
        self.nodes = nodes
        self.decision = decision

    def node_left(self, inst: Instance) -> bool:
        node = self.nodes.get(inst.node or "")
        return node is not None and node.state == GossipState.LEFT

    def remove(self, stored: Stored[Instance], reason: str, message: str) -> None:
        """Ask an instance to go; this replaces any other op of the decision on it."""
        inst = stored.value
        node = self.nodes.get(inst.node or "")
        gone_node = node is None or node.state in (GossipState.FAILED, GossipState.LEFT)
        if (
            inst.node is None
            or self.node_left(inst)
            or (inst.state == InstanceState.LOST and gone_node)
        ):
            note = None if inst.node is None else Note(_ref(inst), reason, f"removed: {message}")
            self.decision.ops[stored.key] = Delete(stored, note)
        elif not inst.deleting:
            update = {"deleting": True, "reason": reason, "message": message}
            self.decision.ops[stored.key] = Write(stored, inst.model_copy(update=update))

    def lifecycle(
        self,
        workload: Workload,
        stored: Stored[Instance],
        now: datetime,
        backoff: Callable[[int], float],
    ) -> Instance:
        """Apply node loss and restart policy to one instance; return it as it then stands."""
        inst = stored.value
        if inst.deleting:
            return inst
        if self.node_left(inst):
            # Not a failure: the node went away on purpose. The caller deletes the
            # record, and a replacement is placed elsewhere.
            return inst.model_copy(update={"deleting": True})
        if inst.node is not None and inst.state != InstanceState.LOST:
            why = _lost_because(self.nodes.get(inst.node), inst)
            if why is not None:
                lost = inst.transition(InstanceState.LOST, "NodeLost", f"node {inst.node} {why}")
                # Deleting: if the node comes back, its node loop stops the stale copy.
                lost = lost.model_copy(update={"deleting": True, "ready": False})
                note = Note(_ref(inst), "NodeLost", lost.message, EventType.WARNING)
                self.decision.ops[stored.key] = Write(stored, lost, note)
                return lost
        if inst.state in _FINISHED and inst.node is not None:
            if should_restart(workload.spec.restart_policy, inst):
                restarted = restart(inst, now, backoff)
                self.decision.ops[stored.key] = Write(stored, restarted)
                return restarted
        return inst


def decide(
    workload: Stored[Workload] | None,
    instances: Sequence[Stored[Instance]],
    nodes: Mapping[str, Node],
    *,
    now: datetime,
    backoff: Callable[[int], float],
    fresh_uid: Callable[[Workload], str],
) -> Decision:
    """Decide what to do for one workload; see the module docstring for the rules.

    Args:
        workload: The workload as stored, or None if it is gone.
        instances: Its instances as stored (those whose workload field names it).
        nodes: Every node by name.
        now: The time a restart's backoff counts from.
        backoff: The delay before restart number ``n + 1``.
        fresh_uid: A uid for a new instance whose name no instance has.

    """
    decision = Decision(workload)
    deciding = _Deciding(nodes, decision)
    owned = sorted(instances, key=lambda s: s.key)
    if workload is None or workload.value.deleting:
        reason, message = (
            ("WorkloadDeleted", "its workload no longer exists")
            if workload is None
            else ("WorkloadDeleting", "its workload is being deleted")
        )
        for stored in owned:
            deciding.remove(stored, reason, message)
        decision.delete_workload = workload is not None and not owned
        return decision

    spec = workload.value.spec
    live: list[tuple[Stored[Instance], Instance]] = []
    old: list[tuple[Stored[Instance], Instance]] = []
    rolling = spec.update.type == UpdateType.ROLLING
    outdated_left = False  # for recreate: an instance of an older template still exists
    for stored in owned:
        inst = deciding.lifecycle(workload.value, stored, now, backoff)
        if inst.template != spec.template:
            outdated_left = True
        if inst.deleting:
            if deciding.node_left(inst):
                deciding.remove(stored, "NodeLeft", f"node {inst.node} left the cluster")
            elif inst.state == InstanceState.LOST and inst.node not in nodes:
                if stored.key not in decision.ops:  # marked lost just now: deleted next time
                    deciding.remove(stored, "NodeLost", f"node {inst.node} is gone")
            continue
        if inst.template != spec.template:
            if rolling:
                old.append((stored, inst))
            else:
                deciding.remove(stored, "TemplateChanged", "replaced by the current template")
            continue
        live.append((stored, inst))

    def on_draining_node(inst: Instance) -> bool:
        node = nodes.get(inst.node or "")
        return node is not None and node.draining

    healthy = [pair for pair in live if not on_draining_node(pair[1])]
    evicting = [pair for pair in live if on_draining_node(pair[1])]
    want = spec.replicas

    if old and awaiting_promotion(workload.value):
        # Canaries: that many of the new template beside the old, until promoted.
        missing, kept_old = max(0, spec.update.canary - len(healthy)), old
    elif old:
        missing, kept_old = _roll(deciding, spec, healthy, old, now)
    elif not rolling and outdated_left:
        missing, kept_old = 0, []  # recreate: the new template waits until the old is gone
    else:
        missing, kept_old = want - len(healthy), []
    for _ in range(missing):
        uid = fresh_uid(workload.value)
        decision.pending.append(Pending(None, f"{workload.value.name}-{uid[:5]}", uid))
    if len(healthy) > want:
        # Unplaced first, then newest first.
        surplus = sorted(healthy, key=lambda p: (p[1].node is not None, -p[0].created))
        for stored, _ in surplus[: len(healthy) - want]:
            deciding.remove(stored, "ScaledDown", f"replicas lowered to {want}")
        healthy = surplus[len(healthy) - want :]
    for stored, inst in healthy:
        if inst.node is None:
            decision.pending.append(Pending(stored, inst.name, inst.uid))

    running = sum(1 for _, inst in healthy if inst.state == InstanceState.RUNNING)
    running_evicting = sum(1 for _, inst in evicting if inst.state == InstanceState.RUNNING)
    for stored, inst in sorted(evicting, key=lambda p: p[0].created):
        is_running = inst.state == InstanceState.RUNNING
        if running + running_evicting - (1 if is_running else 0) >= want or not is_running:
            deciding.remove(stored, "Drained", f"moved off draining node {inst.node}")
            running_evicting -= 1 if is_running else 0
    decision.live = {inst.name: inst for _, inst in [*live, *kept_old]}
    decision.recheck = _next_look(spec, [inst for _, inst in [*live, *kept_old]], now)
    return decision


def _roll(
    deciding: _Deciding,
    spec: WorkloadSpec,
    new: list[tuple[Stored[Instance], Instance]],
    old: list[tuple[Stored[Instance], Instance]],
    now: datetime,
) -> tuple[int, list[tuple[Stored[Instance], Instance]]]:
    """One step of a rolling update; return how many new instances to make, and the old kept.

    Within the budgets: at most ``replicas + max_surge`` instances at once, at
    least ``replicas - max_unavailable`` available. Old instances that are not
    available go first (they count for nothing); available ones go while the
    available count stays above the floor. A paused rollout only keeps the
    count at ``replicas``: it makes new instances for missing ones and removes
    surplus old ones, and replaces nothing.
    """
    want = spec.replicas
    total = len(new) + len(old)
    # Oldest first, so that the instances that go are those of the oldest template.
    old = sorted(old, key=lambda p: p[0].created)
    gone: set[str] = set()
    if spec.paused:
        for stored, _ in old[: max(0, total - want)]:
            deciding.remove(stored, "ScaledDown", f"replicas lowered to {want}")
            gone.add(stored.key)
        return max(0, want - total), [p for p in old if p[0].key not in gone]

    surge, unavailable = spec.update.surge(want), spec.update.unavailable(want)
    stuck = next((inst for _, inst in new if inst.schedule_failure is not None), None)
    if stuck is not None and surge:
        # The surge fits nowhere (no room, a host port taken everywhere): go on
        # without one, an old instance making room for each new one.
        surge, unavailable = 0, max(unavailable, 1)
    minimum = want - unavailable
    creates = max(0, min(want - len(new), want + surge - total))
    ready_for = spec.update.min_ready_seconds
    up = sum(1 for _, inst in [*new, *old] if available(inst, ready_for, now))
    for stored, inst in old:
        if not available(inst, ready_for, now):
            deciding.remove(stored, "Replaced", "replaced by the current template (rolling)")
            gone.add(stored.key)
    for stored, _ in old:
        if stored.key in gone or up <= minimum:
            continue
        deciding.remove(stored, "Replaced", "replaced by the current template (rolling)")
        gone.add(stored.key)
        up -= 1
    if creates or gone:  # a step: one event each, never one per look
        ref = workload_ref(old[0][1])
        if stuck is not None and stuck.schedule_failure is not None:
            deciding.decision.notes.append(
                Note(
                    ref,
                    "SurgeUnplaceable",
                    "the rollout goes on with max_surge 0, an old instance making room for "
                    f"each new one: {stuck.schedule_failure.message}",
                    EventType.WARNING,
                )
            )
        step = f"{creates} new instance(s), {len(gone)} old one(s) stopping"
        deciding.decision.notes.append(
            Note(ref, "RollingUpdate", f"{step}; {len(new)} of {want} updated")
        )
    return creates, [p for p in old if p[0].key not in gone]


def _next_look(spec: WorkloadSpec, instances: list[Instance], now: datetime) -> float | None:
    """Return in how many seconds an instance becomes available by time alone, if one will."""
    ready_for = timedelta(seconds=spec.update.min_ready_seconds)
    if not ready_for:
        return None
    waits = [
        ((inst.ready_since or inst.started_at or now) + ready_for - now).total_seconds()
        for inst in instances
        if inst.state == InstanceState.RUNNING and inst.ready
    ]
    pending = [wait for wait in waits if wait > 0]
    return min(pending) if pending else None


def placement_requests(workload: Workload, names: Sequence[str]) -> list[PlacementRequest]:
    """Return the scheduler's requests for instances ``names`` of ``workload``.

    The template's requests and host ports are worked out once for all of them.
    """
    template = workload.spec.template
    need = template.requests()
    ports = frozenset(template.host_ports())
    placement = workload.spec.placement
    return [
        PlacementRequest(
            instance=f"{workload.namespace}/{name}",
            group=workload.key,
            cpu=need.cpu,
            memory=need.memory,
            host_ports=ports,
            constraints=placement.constraints,
            strategy=placement.strategy,
        )
        for name in names
    ]


def settle(
    decision: Decision,
    placements: Placements,
    new_instance: Callable[..., Instance],
    now: datetime,
) -> Settled:
    """Turn the scheduler's answer for ``decision.pending`` into writes, events and a status.

    Args:
        decision: What :func:`decide` returned for a workload that exists.
        placements: The scheduler's answer, keyed by ``namespace/name``.
        new_instance: Builds a new instance of the workload from its uid and
            status fields (``new_instance(uid, **status)``).
        now: The time the rollout's progress and deadline are judged at.

    """
    assert decision.workload is not None
    workload = decision.workload.value
    settled = Settled()
    live = dict(decision.live)
    per_node: dict[str, int] = {}
    failure: ScheduleFailure | None = None
    for pending in decision.pending:
        node = placements.assigned.get(f"{workload.namespace}/{pending.name}")
        status: dict[str, Any]
        if node is not None:
            per_node[node] = per_node.get(node, 0) + 1
            status = {
                "state": InstanceState.SCHEDULED,
                "node": node,
                "reason": "Scheduled",
                "message": f"placed on {node}",
                "schedule_failure": None,
            }
        else:
            failure = placements.failed.get(f"{workload.namespace}/{pending.name}", _NOT_PLACED)
            status = {
                "reason": "Unschedulable",
                "message": failure.message,
                "schedule_failure": failure,
            }
        if pending.stored is None:
            created = new_instance(pending.uid, **status)
            settled.created.append(created)
            live[created.name] = created
            continue
        existing = pending.stored.value
        if node is not None:
            updated = existing.transition(
                InstanceState.SCHEDULED, "Scheduled", f"placed on {node}"
            ).model_copy(update={"node": node, "schedule_failure": None})
        else:
            updated = existing.model_copy(update=status)
        live[updated.name] = updated
        if updated != existing:
            settled.ops.append(Write(pending.stored, updated))

    ref = workload_ref(workload)
    if per_node:
        where = ", ".join(f"{n} ({count})" for n, count in sorted(per_node.items()))
        total = sum(per_node.values())
        settled.notes.append(Note(ref, "Scheduled", f"placed {total} instance(s) on {where}"))
    if failure is not None:
        settled.unschedulable = failure.message
        reported = any(
            c.type == "Scheduled" and not c.status and c.message == failure.message
            for c in workload.status.conditions
        )
        if not reported:  # said already: do not repeat the event every pass
            settled.notes.append(Note(ref, "FailedScheduling", failure.message, EventType.WARNING))
    observed = workload_status(workload, list(live.values()), settled.unschedulable, now)
    settled.status = None if observed == workload.status else observed
    settled.recheck = decision.recheck
    deadline = deadline_at(workload, observed)
    if deadline is not None and deadline > now:
        wait = (deadline - now).total_seconds()
        settled.recheck = wait if settled.recheck is None else min(settled.recheck, wait)
    if _failed(observed) and not _failed(workload.status):
        message = next(c.message for c in observed.conditions if c.type == "Progressing")
        settled.notes.append(Note(ref, "ProgressDeadlineExceeded", message, EventType.WARNING))
        back = observed.complete_revision
        if workload.spec.update.auto_revert and back and back != workload.revision:
            if any(r.number == back for r in workload.revisions):
                settled.revert_to = back
    return settled


def _failed(status: WorkloadStatus) -> bool:
    return any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded"
        for c in status.conditions
    )
