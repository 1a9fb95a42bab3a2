"""Derive a workload's observed status from its instances."""

from __future__ import annotations

from collections.abc import Sequence

from shoal.interfaces import (
    PLACED_STATES,
    Condition,
    Instance,
    InstanceState,
    Workload,
    WorkloadPhase,
    WorkloadStatus,
)

__all__ = ["workload_status"]


def workload_status(
    workload: Workload, instances: Sequence[Instance], unschedulable: str | None
) -> WorkloadStatus:
    """Summarise ``instances`` (the workload's live ones) into a status.

    Holds no timestamps, so an unchanged world yields an equal status and the
    control loop writes nothing.
    """
    want = workload.spec.replicas
    scheduled = sum(1 for i in instances if i.node is not None)
    running = sum(1 for i in instances if i.state == InstanceState.RUNNING)
    ready = sum(1 for i in instances if i.state == InstanceState.RUNNING and i.ready)
    crashing = [
        i for i in instances if i.reason == "CrashLoopBackOff" or i.state == InstanceState.FAILED
    ]
    placed_or_finished = [i for i in instances if i.state in PLACED_STATES or i.node is not None]

    if workload.deleting:
        phase = WorkloadPhase.DELETING
    elif ready >= want and len(instances) == want:
        phase = WorkloadPhase.RUNNING
    elif crashing or unschedulable:
        phase = WorkloadPhase.DEGRADED
    elif not placed_or_finished and want:
        phase = WorkloadPhase.PENDING
    else:
        phase = WorkloadPhase.PROGRESSING

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
    return WorkloadStatus(
        observed_generation=workload.generation,
        phase=phase,
        replicas=len(instances),
        scheduled_replicas=scheduled,
        running_replicas=running,
        ready_replicas=ready,
        conditions=conditions,
    )
