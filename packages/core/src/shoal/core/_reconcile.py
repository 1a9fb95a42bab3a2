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

Workloads of mode ``daemon`` and ``job`` follow the rules of ``_modes``
instead of the last four.

"Asked to go" means deleted at once when nothing runs it (unplaced, node
left, lost on a node that is gone), else marked ``deleting`` for its node
loop to stop it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from shoal.interfaces import (
    EventType,
    Instance,
    InstanceState,
    Node,
    PlacementRequest,
    Placements,
    ScheduleFailure,
    UpdateType,
    Workload,
    WorkloadMode,
    WorkloadSpec,
    WorkloadStatus,
)

from ._decision import (
    NOT_PLACED,
    Deciding,
    Decision,
    Delete,
    Note,
    Pending,
    Settled,
    Write,
    workload_ref,
)
from ._modes import decide_daemon, decide_job
from ._repo import Stored
from ._status import (
    available,
    awaiting_promotion,
    deadline_at,
    next_available_in,
    runs_current,
    workload_status,
)

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
    deciding = Deciding(nodes, decision)
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
    if spec.mode == WorkloadMode.DAEMON:
        decide_daemon(deciding, workload.value, owned, now, backoff, fresh_uid)
        return decision
    if spec.mode == WorkloadMode.JOB:
        decide_job(deciding, workload.value, owned, now, backoff, fresh_uid)
        return decision
    live: list[tuple[Stored[Instance], Instance]] = []
    old: list[tuple[Stored[Instance], Instance]] = []
    rolling = spec.update.type == UpdateType.ROLLING
    outdated_left = False  # for recreate: an instance of an older template still exists
    for stored in owned:
        inst = deciding.lifecycle(workload.value, stored, now, backoff)
        current = runs_current(inst, workload.value)
        if not current:
            outdated_left = True
        if inst.deleting:
            deciding.going(stored, inst)
            continue
        if not current:
            if rolling:
                old.append((stored, inst))
            else:
                deciding.remove(stored, "TemplateChanged", "replaced by the current template")
            continue
        live.append((stored, inst))

    healthy: list[tuple[Stored[Instance], Instance]] = []
    evicting: list[tuple[Stored[Instance], Instance]] = []
    for pair in live:  # on a draining node or not
        node = nodes.get(pair[1].node or "")
        (evicting if node is not None and node.draining else healthy).append(pair)
    want = spec.replicas
    if old and not spec.paused and not awaiting_promotion(workload.value):
        healthy, old = _scale_down_proportionally(deciding, spec, healthy, old, now)

    if old and awaiting_promotion(workload.value):
        # Canaries: that many of the new template beside the old, until promoted
        # (by hand, or here once they are all available with auto_promote).
        missing, kept_old = max(0, spec.update.canary - len(healthy)), old
        ready_for = spec.update.min_ready_seconds
        up = sum(1 for _, inst in healthy if available(inst, ready_for, now))
        decision.promote = spec.update.auto_promote and up >= spec.update.canary
    elif old:
        missing, kept_old = _roll(deciding, spec, healthy, old, now)
    elif not rolling and outdated_left:
        missing, kept_old = 0, []  # recreate: the new template waits until the old is gone
    else:
        missing, kept_old = want - len(healthy), []
    name = workload.value.name
    for _ in range(missing):
        uid = fresh_uid(workload.value)
        decision.pending.append(Pending(None, f"{name}-{uid[:5]}", uid))
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
    decision.recheck = next_available_in(spec, [inst for _, inst in [*live, *kept_old]], now)
    return decision


def _scale_down_proportionally(
    deciding: Deciding,
    spec: WorkloadSpec,
    new: list[tuple[Stored[Instance], Instance]],
    old: list[tuple[Stored[Instance], Instance]],
    now: datetime,
) -> tuple[list[tuple[Stored[Instance], Instance]], list[tuple[Stored[Instance], Instance]]]:
    """Scale a rollout under way down as Kubernetes does: old and new in proportion.

    Only what is beyond ``replicas + max_surge`` goes (the rollout's own surge
    stays); each template gives up its share of that excess, rounded so the old
    one gives the remainder. New instances go unplaced first, then newest
    first; old ones unavailable first, then oldest first. Return what is left
    of both.
    """
    want = spec.replicas
    total = len(new) + len(old)
    excess = total - (want + spec.update.surge(want))
    if excess <= 0:
        return new, old
    from_new = excess * len(new) // total
    ready_for = spec.update.min_ready_seconds
    by_new = sorted(new, key=lambda p: (p[1].node is not None, -p[0].created))
    by_old = sorted(old, key=lambda p: (available(p[1], ready_for, now), p[0].created))
    message = f"replicas lowered to {want} during a rollout (old and new in proportion)"
    for stored, _ in [*by_new[:from_new], *by_old[: excess - from_new]]:
        deciding.remove(stored, "ScaledDown", message)
    return by_new[from_new:], by_old[excess - from_new :]


def _roll(
    deciding: Deciding,
    spec: WorkloadSpec,
    new: list[tuple[Stored[Instance], Instance]],
    old: list[tuple[Stored[Instance], Instance]],
    now: datetime,
) -> tuple[int, list[tuple[Stored[Instance], Instance]]]:
    """One step of a rolling update; return how many new instances to make, and the old kept.

    Within the budgets: at most ``replicas + max_surge`` instances that are
    not going (an old instance told to stop counts no more, while it runs out
    its grace period, as in Kubernetes), at least ``replicas - max_unavailable``
    available. Old instances that are not
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
    # Those going count no more (as on the next pass): their replacements are made
    # now, a whole batch (max_surge + max_unavailable) at once.
    creates = max(0, min(want - len(new), want + surge - (total - len(gone))))
    deciding.decision.surging = bool(surge and creates)
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


def placement_requests(workload: Workload, pending: Sequence[Pending]) -> list[PlacementRequest]:
    """Return the scheduler's requests for the ``pending`` instances of ``workload``.

    What is the same for all of them (the template's requests and host ports,
    the placement rules) is worked out once.
    """
    template = workload.spec.template
    need = template.requests()
    ports = frozenset(template.host_ports())
    namespace, group = workload.namespace, workload.key
    constraints, strategy = workload.spec.placement.constraints, workload.spec.placement.strategy
    cpu, memory = need.cpu, need.memory
    # Positional: a named tuple's keywords take twice the time, once per instance.
    return [
        PlacementRequest(
            f"{namespace}/{p.name}", group, cpu, memory, ports, constraints, strategy, p.node
        )
        for p in pending
    ]


def settle(
    decision: Decision,
    placements: Placements,
    new_instance: Callable[[str, dict[str, Any]], Instance],
    now: datetime,
) -> Settled:
    """Turn the scheduler's answer for ``decision.pending`` into writes, events and a status.

    Args:
        decision: What :func:`decide` returned for a workload that exists.
        placements: The scheduler's answer, keyed by ``namespace/name``.
        new_instance: Builds a new instance of the workload from its uid and
            status fields (``new_instance(uid, status)``, which takes the dict over).
        now: The time the rollout's progress and deadline are judged at.

    """
    assert decision.workload is not None
    workload = decision.workload.value
    settled = Settled()
    live = dict(decision.live)
    per_node: dict[str, int] = {}
    failure: ScheduleFailure | None = None
    learnt = False  # that an instance fits nowhere, which the stored ones did not say
    namespace, scheduled = workload.namespace, InstanceState.SCHEDULED
    for pending in decision.pending:
        node = placements.assigned.get(f"{namespace}/{pending.name}")
        status: dict[str, Any]
        if node is not None:
            per_node[node] = per_node.get(node, 0) + 1
            status = {
                "state": scheduled,
                "node": node,
                "reason": "Scheduled",
                "message": f"placed on {node}",
                "schedule_failure": None,
            }
        else:
            failure = placements.failed.get(f"{namespace}/{pending.name}", NOT_PLACED)
            if pending.stored is None or pending.stored.value.schedule_failure is None:
                learnt = True
            status = {
                "reason": "Unschedulable",
                "message": failure.message,
                "schedule_failure": failure,
            }
        if pending.stored is None:
            created = new_instance(pending.uid, status)
            settled.created.append(created)
            live[created.name] = created
            continue
        existing = pending.stored.value
        if node is not None:
            placed: dict[str, Any] = {"node": node, "schedule_failure": None}
            if existing.restart_count == 0 and existing.started_at is None:
                placed["placed_at"] = now  # a first start that waited for room
            updated = existing.transition(
                InstanceState.SCHEDULED, "Scheduled", f"placed on {node}"
            ).model_copy(update=placed)
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
    observed = workload_status(
        workload,
        list(live.values()),
        settled.unschedulable,
        now,
        desired=decision.desired,
        job=decision.job,
    )
    settled.status = None if observed == workload.status else observed
    # A surge that fits nowhere is seen by decide only once its instances say so:
    # decide again at once, rather than at the next resync, to go on without it.
    settled.recheck = 0 if decision.surging and learnt else decision.recheck
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
