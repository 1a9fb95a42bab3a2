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
    WorkloadPhase,
    WorkloadStatus,
)

__all__ = [
    "available",
    "awaiting_promotion",
    "deadline_at",
    "rollout_complete",
    "workload_status",
]


def available(inst: Instance, min_ready_seconds: int, now: datetime) -> bool:
    """Return whether ``inst`` counts as available: running, ready, for ``min_ready_seconds``.

    An instance that became ready before ``ready_since`` was recorded counts
    from its start.
    """
    if inst.state != InstanceState.RUNNING or not inst.ready:
        return False
    since = inst.ready_since or inst.started_at
    return since is None or since + timedelta(seconds=min_ready_seconds) <= now


def rollout_complete(workload: Workload, status: WorkloadStatus) -> bool:
    """Return whether every instance runs the current template and enough are available."""
    want = workload.spec.replicas
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
) -> WorkloadStatus:
    """Summarise ``instances`` (the workload's live ones, old and new templates) into a status.

    Holds the time of the rollout's last progress and nothing else of the
    clock, so an unchanged world yields an equal status and the control loop
    writes nothing.
    """
    spec = workload.spec
    want = spec.replicas
    previous = workload.status
    scheduled = sum(1 for i in instances if i.node is not None)
    running = sum(1 for i in instances if i.state == InstanceState.RUNNING)
    ready = sum(1 for i in instances if i.state == InstanceState.RUNNING and i.ready)
    updated = sum(1 for i in instances if i.template == spec.template)
    ready_enough = sum(1 for i in instances if available(i, spec.update.min_ready_seconds, now))
    crashing = [
        i for i in instances if i.reason == "CrashLoopBackOff" or i.state == InstanceState.FAILED
    ]
    placed_or_finished = [i for i in instances if i.state in PLACED_STATES or i.node is not None]

    if workload.deleting:
        phase = WorkloadPhase.DELETING
    elif ready >= want and len(instances) == want and updated == want:
        phase = WorkloadPhase.RUNNING
    elif crashing or unschedulable:
        phase = WorkloadPhase.DEGRADED
    elif not placed_or_finished and want:
        phase = WorkloadPhase.PENDING
    else:
        phase = WorkloadPhase.PROGRESSING

    counts = WorkloadStatus(
        replicas=len(instances), updated_replicas=updated, available_replicas=ready_enough
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
    done = rollout_complete(workload, counts)
    return WorkloadStatus(
        observed_generation=workload.generation,
        phase=phase,
        replicas=len(instances),
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
    want = workload.spec.replicas
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
