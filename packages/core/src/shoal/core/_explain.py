"""Explain an instance: one sentence on its state and why, then the supporting facts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shoal.interfaces import (
    Event,
    Explanation,
    GossipState,
    Instance,
    InstanceState,
    Node,
    RestartPolicy,
    Workload,
)

__all__ = ["explain_instance"]

_ENDINGS = frozenset({"Error", "Unhealthy", "ContainerMissing", "LivenessProbeFailed"})
"""The reasons of the events that record an instance's containers ending by failure."""


def _restart_fate(inst: Instance) -> str:
    policy = inst.restart_policy
    if policy == RestartPolicy.ALWAYS or (
        policy == RestartPolicy.ON_FAILURE and inst.state == InstanceState.FAILED
    ):
        return f"restart policy {policy.value}: the control loop will restart it"
    return f"restart policy {policy.value}: it will not be restarted"


def explain_instance(
    inst: Instance,
    node: Node | None,
    workload: Workload | None,
    events: Sequence[Event],
    now: datetime,
) -> Explanation:
    """Build the explanation of ``inst`` from what is stored about it."""
    where = f"on node {inst.node}" if inst.node else "on no node"
    details: list[str] = []
    state = inst.state
    if inst.deleting:
        summary = f"being removed {where}: {inst.reason} {inst.message}".strip()
    elif state == InstanceState.PENDING:
        if inst.schedule_failure is not None:
            summary = f"pending: no node can run it ({inst.schedule_failure.message})"
            details.extend(
                f"node {name}: {reason}"
                for name, reason in sorted(inst.schedule_failure.nodes.items())
            )
            details.append(
                "fix: free or add capacity, relax placement constraints, or uncordon a node"
            )
        else:
            summary = "pending: waiting for the control loop to place it"
    elif state == InstanceState.SCHEDULED and inst.not_before and inst.not_before > now:
        wait = (inst.not_before - now).total_seconds()
        last = (
            f"last exit code {inst.exit_code}"
            if inst.exit_code is not None
            else f"last failure: {inst.message.rsplit('; restarting', 1)[0]}"
        )
        # restart_count counts the restart it waits for (the control loop counts it
        # when it decides it): restart N is due, N - 1 have happened.
        summary = (
            f"waiting {wait:.0f}s for restart {inst.restart_count} {where} ({inst.reason}): {last}"
        )
        details.append(
            "the container keeps exiting: read its logs and events to find out why"
            if inst.exit_code is not None
            else (
                "its last run ended without an exit code (it failed to start: image, command, "
                "limits; or its containers went away: a reset, a reboot): the last failure above "
                "and the events say which"
            )
        )
    elif state == InstanceState.SCHEDULED and inst.reason not in ("", "Scheduled"):
        # The node has said why it does not start it yet (a missing ConfigMap or Secret).
        summary = f"placed {where}; not started yet: {inst.reason}: {inst.message}"
    elif state == InstanceState.SCHEDULED:
        summary = f"placed {where}; waiting for that node to start it"
    elif state == InstanceState.STARTING:
        summary = f"starting {where}: {inst.message}"
    elif state == InstanceState.RUNNING:
        since = f" since {inst.started_at:%Y-%m-%d %H:%M:%S}" if inst.started_at else ""
        summary = f"running {where}{since}" + ("" if inst.ready else " (not ready)")
    elif state in (InstanceState.FAILED, InstanceState.STOPPED):
        code = "" if inst.exit_code is None else f" (exit code {inst.exit_code})"
        summary = f"{state.value} {where}{code}: {inst.reason} {inst.message}".strip()
        details.append(_restart_fate(inst))
    elif state == InstanceState.LOST:
        summary = f"lost: {inst.message}; a replacement is scheduled elsewhere"
    else:
        summary = f"{state.value} {where}"

    if inst.restart_count and state != InstanceState.SCHEDULED:
        cause = max((e for e in events if e.reason in _ENDINGS), key=lambda e: e.time, default=None)
        why = "" if cause is None else f"; the last time after {cause.reason}: {cause.message}"
        details.append(f"restarted {inst.restart_count} time(s){why}")
    if node is not None:
        flags = [f for f, on in (("cordoned", node.cordoned), ("draining", node.draining)) if on]
        shown = f"{node.state.value}" + (f", {', '.join(flags)}" if flags else "")
        details.append(f"node {node.name} is {shown}")
        if node.state != GossipState.ALIVE:
            details.append(f"node {node.name} is not alive: no new instances are placed on it")
    elif inst.node is not None:
        details.append(f"node {inst.node} is not registered")
    if workload is not None:
        status = workload.status
        details.append(
            f"workload {workload.key}: {status.ready_replicas}/{workload.wanted_replicas} ready, "
            f"phase {status.phase.value}"
        )
        if inst.generation != workload.generation and inst.template != workload.spec.template:
            details.append("runs an outdated template: it will be replaced")
    return Explanation(
        instance=inst,
        summary=summary,
        details=details,
        schedule_failure=inst.schedule_failure,
        events=list(events),
    )
