"""The decisions of the workload modes beyond ``replicas``: daemon and job. Pure.

:func:`~shoal.core._reconcile.decide` hands a workload of mode ``daemon`` or
``job`` to :func:`decide_daemon` or :func:`decide_job`; node loss, restarts
and "asked to go" work as for every workload (``_decision.Deciding``).

**daemon** (Kubernetes' DaemonSet): one instance on every eligible node,
``replicas`` ignored.

* A node is eligible for a *new* instance when it is alive, not cordoned, not
  server-only and its labels match ``placement.constraints``; the scheduler
  then checks resources and host ports on that node alone (a pinned request),
  and says why the node does not fit if it does not.
* A node *keeps* the instance it has while it is alive or suspect, not
  server-only and its labels match: cordoning or draining a node places no new
  daemon instance there but stops none (a daemon serves its node and has
  nowhere else to go, as ``kubectl drain --ignore-daemonsets`` leaves them). A
  node whose labels stop matching loses its instance; one that fails or leaves
  loses it as every instance does, and it is not placed anywhere else.
* A template change rolls node by node: an old instance stops, then the new
  one starts on its node (never two on one node, so host ports never clash).
  At most ``update.max_unavailable`` nodes (resolved against the eligible
  nodes, rounded down, at least 1) are without an available instance at a
  time; ``max_surge`` is not used. The Kubernetes translator writes a
  DaemonSet's defaults (max_unavailable 1, max_surge 0) explicitly; Shoal's own
  defaults (25%) mean a quarter of the nodes, at least one.

**job** (Kubernetes' Job): instances run to completion.

* Up to ``parallelism`` instances are active while fewer than ``completions``
  have succeeded. An instance that exits 0 counts as succeeded and is kept (its
  logs stay readable); it is neither restarted nor replaced.
* A failed run counts in ``status.failed``: under ``Never`` the instance stays
  failed and a new one is made after a backoff that grows with the failed
  runs (as a restart's does); under ``OnFailure`` it restarts in place, with
  its backoff, and its restarts count. An instance lost with its node counts as a failed run.
* More than ``backoff_limit`` failed runs: the job fails (BackoffLimitExceeded)
  and its active instances stop. Running longer than
  ``active_deadline_seconds`` since the workload was created: it fails
  (DeadlineExceeded). ``completions`` successes: it is complete. A finished job
  stays finished; ``ttl_seconds_after_finished`` after it finished the
  workload is deleted.
* The counts are read from the instances that exist, and never go down: a
  succeeded instance whose record went with its node before the job completed
  may be run once more (as Kubernetes did before it tracked finished pods).
* Jobs ignore draining: an instance finishes where it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from shoal.interfaces import (
    EventType,
    GossipState,
    Instance,
    InstanceState,
    Node,
    NodeRole,
    RestartPolicy,
    UpdateType,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
)

from ._decision import Deciding, Delete, JobProgress, Note, Pending, workload_ref
from ._repo import Stored
from ._status import available, next_available_in

__all__ = ["daemon_nodes", "decide_daemon", "decide_job", "job_progress"]

_Pair = tuple[Stored[Instance], Instance]


def _labels_fit(spec: WorkloadSpec, node: Node) -> bool:
    return all(node.labels.get(k) == v for k, v in spec.placement.constraints.items())


def daemon_nodes(spec: WorkloadSpec, nodes: Mapping[str, Node], occupied: set[str]) -> set[str]:
    """Return the nodes that should run one instance of daemon ``spec``.

    Those eligible for a new instance, and those of ``occupied`` (nodes with a
    live instance) that may keep theirs; see the module docstring.
    """
    wanted: set[str] = set()
    for name, node in nodes.items():
        if node.role == NodeRole.SERVER or not _labels_fit(spec, node):
            continue
        if node.state == GossipState.ALIVE and not node.cordoned:
            wanted.add(name)
        elif name in occupied and node.state in (GossipState.ALIVE, GossipState.SUSPECT):
            wanted.add(name)
    return wanted


def decide_daemon(
    deciding: Deciding,
    workload: Workload,
    owned: Sequence[Stored[Instance]],
    now: datetime,
    backoff: Callable[[int], float],
    fresh_uid: Callable[[Workload], str],
) -> None:
    """Fill ``deciding.decision`` for a daemon workload; see the module docstring."""
    spec = workload.spec
    decision = deciding.decision
    live: list[_Pair] = []
    held: set[str] = set()
    """Nodes whose instance is still stopping: the new one waits for it."""
    for stored in owned:
        inst = deciding.lifecycle(workload, stored, now, backoff)
        if inst.deleting:
            deciding.going(stored, inst)
            if inst.node is not None and not isinstance(decision.ops.get(stored.key), Delete):
                held.add(inst.node)
            continue
        live.append((stored, inst))

    occupied = {inst.node for _, inst in live if inst.node is not None}
    wanted = daemon_nodes(spec, deciding.nodes, occupied)
    per_node: dict[str, list[_Pair]] = {}
    unplaced: list[_Pair] = []
    for stored, inst in live:
        if inst.node is None:
            if inst.template == spec.template:
                unplaced.append((stored, inst))
            else:
                deciding.remove(stored, "Replaced", "replaced by the current template")
        elif inst.node not in wanted:
            deciding.remove(stored, "NodeIneligible", f"node {inst.node} no longer fits")
        else:
            per_node.setdefault(inst.node, []).append((stored, inst))
    kept: dict[str, _Pair] = {}
    for node, pairs in sorted(per_node.items()):
        # One per node: the current template first, then the oldest.
        pairs.sort(key=lambda p: (p[1].template != spec.template, p[0].created))
        kept[node] = pairs[0]
        for stored, _ in pairs[1:]:
            deciding.remove(stored, "Duplicate", f"node {node} runs one instance already")
            held.add(node)

    for node in _roll_daemon(deciding, spec, wanted, kept, now):
        del kept[node]
        held.add(node)
    to_fill = sorted(wanted - set(kept) - held)
    unplaced.sort(key=lambda p: p[0].key)
    for (stored, inst), node in zip(unplaced, to_fill, strict=False):
        decision.pending.append(Pending(stored, inst.name, inst.uid, node))
    for stored, _ in unplaced[len(to_fill) :]:
        deciding.remove(stored, "ScaledDown", "every eligible node has its instance")
    for node in to_fill[len(unplaced) :]:
        uid = fresh_uid(workload)
        decision.pending.append(Pending(None, f"{workload.name}-{uid[:5]}", uid, node))

    staying = [*kept.values(), *unplaced[: len(to_fill)]]
    decision.live = {inst.name: inst for _, inst in staying}
    decision.desired = len(wanted)
    decision.recheck = next_available_in(spec, [inst for _, inst in staying], now)


def _roll_daemon(
    deciding: Deciding,
    spec: WorkloadSpec,
    wanted: set[str],
    kept: dict[str, _Pair],
    now: datetime,
) -> list[str]:
    """Stop old-template instances, node by node, within max_unavailable; note the step.

    Returns the nodes whose instance this stops.
    """
    old = [pair for pair in kept.values() if pair[1].template != spec.template]
    if not old or spec.paused:
        return []
    ready_for = spec.update.min_ready_seconds
    if spec.update.type == UpdateType.RECREATE:
        going = old
    else:
        limit = max(1, spec.update.unavailable(len(wanted)))
        down = sum(
            1 for node in wanted if node not in kept or not available(kept[node][1], ready_for, now)
        )
        going = []
        # Unavailable ones first: replacing them costs nothing.
        for pair in sorted(old, key=lambda p: (available(p[1], ready_for, now), p[0].created)):
            if not available(pair[1], ready_for, now):
                going.append(pair)
            elif down < limit:
                going.append(pair)
                down += 1
    for stored, _ in going:
        deciding.remove(stored, "Replaced", "replaced by the current template (per node)")
    if going:
        updated = len(kept) - len(old)
        deciding.decision.notes.append(
            Note(
                workload_ref(old[0][1]),
                "RollingUpdate",
                f"{len(going)} node(s) switching to the current template; "
                f"{updated} of {len(wanted)} updated",
            )
        )
    return [inst.node for _, inst in going if inst.node is not None]


def _succeeded(inst: Instance) -> bool:
    return inst.state == InstanceState.STOPPED and inst.exit_code == 0


def _failed_runs(inst: Instance) -> int:
    failed_now = inst.state in (InstanceState.FAILED, InstanceState.LOST)
    return inst.restart_count + (1 if failed_now else 0)


def _finished_condition(status: WorkloadStatus) -> tuple[str, str, str] | None:
    for condition in status.conditions:
        if condition.type in ("Complete", "Failed") and condition.status:
            return (condition.type, condition.reason, condition.message)
    return None


def job_progress(workload: Workload, instances: Sequence[Instance], now: datetime) -> JobProgress:
    """Return a job's counts, and its outcome once it has one (a finished job stays so)."""
    job = workload.spec.job_spec
    status = workload.status
    succeeded = max(status.succeeded, sum(1 for inst in instances if _succeeded(inst)))
    failed = max(status.failed, sum(_failed_runs(inst) for inst in instances))
    finished = _finished_condition(status) if status.finished_at is not None else None
    deadline = job.active_deadline_seconds
    if finished is not None:
        pass
    elif succeeded >= job.completions:
        finished = ("Complete", "Completed", f"{succeeded}/{job.completions} completions")
    elif failed > job.backoff_limit:
        finished = (
            "Failed",
            "BackoffLimitExceeded",
            f"{failed} failed run(s), more than backoff_limit {job.backoff_limit}",
        )
    elif deadline is not None and now >= workload.created_at + timedelta(seconds=deadline):
        finished = (
            "Failed",
            "DeadlineExceeded",
            f"ran longer than active_deadline_seconds ({deadline} s)",
        )
    return JobProgress(succeeded=succeeded, failed=failed, finished=finished)


def _retry_in(
    workload: Workload,
    instances: Sequence[Instance],
    failed: int,
    now: datetime,
    backoff: Callable[[int], float],
) -> float:
    """Return how long a job under ``Never`` waits before a new run after failed ones (0: none).

    The delay grows with the failed runs, as a restart's does (Kubernetes does
    the same for a Job's new pods); it counts from the last failed run's end.
    """
    if workload.spec.restart_policy != RestartPolicy.NEVER or not failed:
        return 0.0
    ends = [i.finished_at for i in instances if i.state == InstanceState.FAILED and i.finished_at]
    if not ends:
        return 0.0
    return (max(ends) + timedelta(seconds=backoff(failed - 1)) - now).total_seconds()


def _done(inst: Instance) -> bool:
    """Whether an instance of a job has finished its run (succeeded, or failed for good)."""
    return inst.state in (InstanceState.STOPPED, InstanceState.FAILED)


def decide_job(
    deciding: Deciding,
    workload: Workload,
    owned: Sequence[Stored[Instance]],
    now: datetime,
    backoff: Callable[[int], float],
    fresh_uid: Callable[[Workload], str],
) -> None:
    """Fill ``deciding.decision`` for a job; see the module docstring."""
    job = workload.spec.job_spec
    decision = deciding.decision
    progress = job_progress(workload, [s.value for s in owned], now)
    decision.job = progress
    finished = progress.finished
    live: list[_Pair] = []
    for stored in owned:
        inst = deciding.lifecycle(workload, stored, now, backoff, restarts=finished is None)
        if inst.deleting:
            deciding.going(stored, inst)
            continue
        live.append((stored, inst))
    active = [pair for pair in live if not _done(pair[1])]
    gone: set[str] = set()
    ref = workload_ref(workload)

    if finished is not None:
        kind, reason, message = finished
        for stored, _ in active:
            deciding.remove(stored, reason, f"the job {kind.lower()}: {message}")
            gone.add(stored.key)
        if workload.status.finished_at is None:
            event = EventType.NORMAL if kind == "Complete" else EventType.WARNING
            decision.notes.append(Note(ref, reason, message, event))
        ttl = job.ttl_seconds_after_finished
        if ttl is not None and workload.status.finished_at is None:
            # It finishes now (this pass records finished_at = now): no later pass
            # follows that write, so come back when its time to live is up.
            decision.recheck = float(ttl)
        elif ttl is not None and workload.status.finished_at is not None:
            left = (workload.status.finished_at + timedelta(seconds=ttl) - now).total_seconds()
            if left <= 0:
                decision.expire = True
            else:
                decision.recheck = left
        decision.desired = 0
    else:
        want = min(job.parallelism, job.completions - progress.succeeded)
        if len(active) > want:
            # Unplaced first, then the newest.
            surplus = sorted(active, key=lambda p: (p[1].node is not None, -p[0].created))
            for stored, _ in surplus[: len(active) - want]:
                deciding.remove(stored, "ScaledDown", f"parallelism is {job.parallelism}")
                gone.add(stored.key)
        waits: list[float] = []
        retry_in = _retry_in(workload, [inst for _, inst in live], progress.failed, now, backoff)
        if want > len(active) and retry_in > 0:
            waits.append(retry_in)  # the next run waits out the backoff of the failed ones
        else:
            for _ in range(want - len(active)):
                uid = fresh_uid(workload)
                decision.pending.append(Pending(None, f"{workload.name}-{uid[:5]}", uid))
        for stored, inst in active:
            if inst.node is None and stored.key not in gone:
                decision.pending.append(Pending(stored, inst.name, inst.uid))
        if job.active_deadline_seconds is not None:
            ends = workload.created_at + timedelta(seconds=job.active_deadline_seconds)
            waits.append(max((ends - now).total_seconds(), 0.0))
        decision.recheck = min(waits, default=None)
        decision.desired = want
    decision.live = {inst.name: inst for stored, inst in live if stored.key not in gone}
