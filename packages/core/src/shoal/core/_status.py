"""Derive a workload's observed status from its instances, rollout included."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from shoal.interfaces import (
    PLACED_STATES,
    Condition,
    Instance,
    InstanceState,
    Workload,
    WorkloadMode,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)

from ._decision import JobProgress
from ._restarts import BACKOFF_REASONS, should_restart

_RUNNING, _FAILED, _STOPPED = InstanceState.RUNNING, InstanceState.FAILED, InstanceState.STOPPED
"""Read once: an enum member read costs a descriptor call, and the loop below reads three
for each of a workload's instances."""

__all__ = [
    "available",
    "awaiting_promotion",
    "deadline_at",
    "next_available_in",
    "rollout_complete",
    "runs_current",
    "workload_status",
]


def runs_current(inst: Instance, workload: Workload) -> bool:
    """Return whether ``inst`` runs the current template of ``workload``.

    An instance made at the workload's current revision does (a revision
    number names one template), and is told without comparing templates, which
    a control loop pass over many instances would spend most of its time on;
    any other is compared template to template (one stored before revisions,
    or of an earlier revision whose template came back).
    """
    if inst.revision and inst.revision == workload.revision and inst.workload_uid == workload.uid:
        return True
    return inst.template == workload.spec.template


def available(inst: Instance, min_ready_seconds: int, now: datetime) -> bool:
    """Return whether ``inst`` counts as available: running, ready, for ``min_ready_seconds``.

    An instance that became ready before ``ready_since`` was recorded counts
    from its start.
    """
    if inst.state != InstanceState.RUNNING or not inst.ready:
        return False
    since = inst.ready_since or inst.started_at
    return since is None or since + timedelta(seconds=min_ready_seconds) <= now


def next_available_in(
    spec: WorkloadSpec, instances: Sequence[Instance], now: datetime
) -> float | None:
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


def rollout_complete(workload: Workload, status: WorkloadStatus) -> bool:
    """Return whether every instance runs the current template and enough are available."""
    want = workload.wanted_with(status)
    return (
        status.updated_replicas == want
        and status.replicas == want
        and status.available_replicas >= want
    )


def awaiting_promotion(workload: Workload) -> bool:
    """Return whether the current revision's canaries wait for ``shoal rollout promote``."""
    return bool(workload.spec.update.canary) and workload.promoted_revision < workload.revision


def _holding(workload: Workload, status: WorkloadStatus) -> bool:
    """Return whether a rollout under way waits on purpose (paused, or canaries to promote)."""
    old_left = status.replicas > status.updated_replicas
    return workload.spec.paused or (awaiting_promotion(workload) and old_left)


def deadline_at(workload: Workload, status: WorkloadStatus) -> datetime | None:
    """Return when a rollout under way fails for want of progress (None: none is under way)."""
    if workload.spec.mode == WorkloadMode.JOB:
        return None  # a job's template never changes: it has no rollouts
    if rollout_complete(workload, status) or _holding(workload, status):
        return None
    if status.progress_at is None:
        return None
    return status.progress_at + timedelta(seconds=workload.spec.update.progress_deadline_seconds)


def workload_status(
    workload: Workload,
    instances: Sequence[Instance],
    unschedulable: str | None,
    now: datetime,
    *,
    desired: int | None = None,
    job: JobProgress | None = None,
) -> WorkloadStatus:
    """Summarise ``instances`` (the workload's live ones, old and new templates) into a status.

    Holds the time of the rollout's last progress and nothing else of the
    clock, so an unchanged world yields an equal status and the control loop
    writes nothing.

    Args:
        workload: The workload as stored.
        instances: Its live instances.
        unschedulable: Why some instance fits nowhere, or None.
        now: The time progress is judged at.
        desired: How many instances it wants, if not ``replicas`` (daemon, job).
        job: A job's counts and outcome.

    """
    if job is not None:
        return _job_status(workload, instances, unschedulable, desired or 0, job, now)
    spec = workload.spec
    want = spec.replicas if desired is None else desired
    previous = workload.status
    # One pass over the instances: a workload may have thousands.
    scheduled = running = ready = updated = ready_enough = 0
    crashing: list[Instance] = []
    finished: list[Instance] = []
    """Stopped for good: exited 0 under OnFailure or Never (nothing runs them again)."""
    placed_or_finished = 0
    ready_for = spec.update.min_ready_seconds
    for i in instances:
        placed = i.node is not None
        scheduled += placed
        state = i.state
        if state == _RUNNING:
            running += 1
            ready += i.ready
            ready_enough += available(i, ready_for, now)
        updated += runs_current(i, workload)
        if state == _FAILED or i.reason in BACKOFF_REASONS:
            crashing.append(i)
        elif state == _STOPPED and not should_restart(spec.restart_policy, i):
            finished.append(i)
        placed_or_finished += placed or state in PLACED_STATES

    if workload.deleting:
        phase = WorkloadPhase.DELETING
    elif ready >= want and len(instances) == want and updated == want:
        phase = WorkloadPhase.RUNNING
    elif crashing or unschedulable or finished:
        phase = WorkloadPhase.DEGRADED
    elif not placed_or_finished and want:
        phase = WorkloadPhase.PENDING
    else:
        phase = WorkloadPhase.PROGRESSING

    counts = WorkloadStatus(
        replicas=len(instances),
        desired_replicas=want,
        updated_replicas=updated,
        available_replicas=ready_enough,
    )
    moved = (
        previous.revision != workload.revision
        or previous.updated_replicas != updated
        or previous.available_replicas != ready_enough
        or previous.replicas != len(instances)
    )
    progress_at = now if moved or previous.progress_at is None else previous.progress_at
    conditions = [
        Condition(
            type="Available",
            status=ready >= want,
            reason="MinimumReplicasReady" if ready >= want else "ReplicasNotReady",
            message=f"{ready}/{want} ready",
        ),
        Condition(
            type="Scheduled",
            status=unschedulable is None,
            reason="AllPlaced" if unschedulable is None else "Unschedulable",
            message=unschedulable or "",
        ),
        _progressing(workload, counts, progress_at, now),
    ]
    if crashing:
        names = ", ".join(sorted(i.name for i in crashing)[:5])
        conditions.append(
            Condition(
                type="Crashing",
                status=True,
                reason="CrashLoopBackOff",
                message=f"{len(crashing)} instance(s) failing: {names}",
            )
        )
    if finished:
        names = ", ".join(sorted(i.name for i in finished)[:5])
        policy = spec.restart_policy.value
        conditions.append(
            Condition(
                type="Finished",
                status=True,
                reason="NotRestarted",
                message=f"{len(finished)} instance(s) exited 0 and restart_policy {policy} "
                f"does not run them again: {names}; for runs to completion use mode job, "
                "to keep them running restart_policy Always",
            )
        )
    done = rollout_complete(workload, counts)
    return WorkloadStatus(
        observed_generation=workload.generation,
        phase=phase,
        replicas=len(instances),
        desired_replicas=want,
        scheduled_replicas=scheduled,
        running_replicas=running,
        ready_replicas=ready,
        updated_replicas=updated,
        available_replicas=ready_enough,
        revision=workload.revision,
        complete_revision=workload.revision if done else previous.complete_revision,
        progress_at=progress_at,
        conditions=conditions,
    )


def _progressing(
    workload: Workload, counts: WorkloadStatus, progress_at: datetime, now: datetime
) -> Condition:
    """The rollout's condition: complete, paused, under way, or out of time."""
    want = counts.desired_replicas
    told = (
        f"revision {workload.revision}: {counts.updated_replicas}/{want} updated, "
        f"{counts.available_replicas} available"
    )
    if rollout_complete(workload, counts):
        return Condition(type="Progressing", status=True, reason="RolloutComplete", message=told)
    if workload.spec.paused:
        return Condition(type="Progressing", status=False, reason="RolloutPaused", message=told)
    if _holding(workload, counts):
        canaries = workload.spec.update.canary
        return Condition(
            type="Progressing",
            status=True,
            reason="AwaitingPromotion",
            message=f"{told}; {canaries} canary instance(s) run beside the old ones: "
            f"`shoal rollout promote {workload.name}` replaces the rest, `undo` goes back",
        )
    deadline = workload.spec.update.progress_deadline_seconds
    if now - progress_at > timedelta(seconds=deadline):
        return Condition(
            type="Progressing",
            status=False,
            reason="ProgressDeadlineExceeded",
            message=f"{told}; no progress for {deadline} s",
        )
    return Condition(type="Progressing", status=True, reason="RollingOut", message=told)


def _job_status(
    workload: Workload,
    instances: Sequence[Instance],
    unschedulable: str | None,
    desired: int,
    job: JobProgress,
    now: datetime,
) -> WorkloadStatus:
    """A job's status: its counts, and once it finished, its outcome (Complete or Failed)."""
    previous = workload.status
    running = sum(1 for i in instances if i.state == InstanceState.RUNNING)
    ready = sum(1 for i in instances if i.state == InstanceState.RUNNING and i.ready)
    placed = [i for i in instances if i.node is not None]
    finished_at = previous.finished_at
    if workload.deleting:
        phase = WorkloadPhase.DELETING
    elif job.finished is not None:
        phase = WorkloadPhase.COMPLETE if job.finished[0] == "Complete" else WorkloadPhase.FAILED
        finished_at = finished_at or now
    elif unschedulable:
        phase = WorkloadPhase.DEGRADED
    elif running:
        phase = WorkloadPhase.RUNNING
    elif not placed and not job.succeeded and not job.failed:
        phase = WorkloadPhase.PENDING
    else:
        phase = WorkloadPhase.PROGRESSING
    conditions = [
        Condition(
            type="Scheduled",
            status=unschedulable is None,
            reason="AllPlaced" if unschedulable is None else "Unschedulable",
            message=unschedulable or "",
        )
    ]
    if job.finished is not None:
        kind, reason, message = job.finished
        conditions.append(Condition(type=kind, status=True, reason=reason, message=message))
    return WorkloadStatus(
        observed_generation=workload.generation,
        phase=phase,
        replicas=len(instances),
        desired_replicas=desired,
        scheduled_replicas=len(placed),
        running_replicas=running,
        ready_replicas=ready,
        updated_replicas=sum(1 for i in instances if runs_current(i, workload)),
        available_replicas=ready,
        revision=workload.revision,
        complete_revision=workload.revision,
        conditions=conditions,
        succeeded=job.succeeded,
        failed=job.failed,
        finished_at=finished_at,
    )
