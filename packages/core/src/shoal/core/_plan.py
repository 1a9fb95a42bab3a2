"""Plans: what an apply changes, field by field, and what that means for instances."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shoal.interfaces import (
    ChangeAction,
    FieldChange,
    Plan,
    PlannedChange,
    UpdateType,
    Workload,
    WorkloadMode,
    WorkloadSpec,
)

__all__ = ["diff_fields", "make_plan", "plan_change", "rollout_steps"]

MAX_STEPS = 20
"""A plan lists at most this many batches of a rollout, then says how many more."""


def diff_fields(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Return the leaf fields that differ between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            changes.extend(diff_fields(old.get(key), new.get(key), sub))
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            changes.extend(diff_fields(a, b, f"{path}[{index}]"))
        return changes
    return [] if old == new else [FieldChange(path=path, old=old, new=new)]


def plan_change(spec: WorkloadSpec, current: Workload | None) -> PlannedChange:
    """Return what applying ``spec`` over ``current`` does."""
    if current is None:
        return PlannedChange(
            action=ChangeAction.CREATE,
            namespace=spec.namespace,
            name=spec.name,
            changes=diff_fields({}, spec.model_dump(mode="json")),
            instances_to_create=_instances(spec, None),
            rollout=[_DAEMON] if spec.mode == WorkloadMode.DAEMON else [],
        )
    changes = diff_fields(current.spec.model_dump(mode="json"), spec.model_dump(mode="json"))
    if not changes:
        return PlannedChange(
            action=ChangeAction.UNCHANGED, namespace=spec.namespace, name=spec.name
        )
    old, new = _instances(current.spec, current), _instances(spec, current)
    template_changed = current.spec.template != spec.template
    return PlannedChange(
        action=ChangeAction.UPDATE,
        namespace=spec.namespace,
        name=spec.name,
        changes=changes,
        instances_to_create=max(new - old, 0),
        instances_to_delete=max(old - new, 0),
        # Paused: the new template waits for `shoal rollout resume`; nothing is replaced now.
        instances_to_replace=min(old, new) if template_changed and not spec.paused else 0,
        rollout=rollout_steps(spec, old) if template_changed else [],
    )


_DAEMON = "one instance on each eligible node (the control loop counts them as nodes come and go)"


def _instances(spec: WorkloadSpec, current: Workload | None) -> int:
    """Return how many instances ``spec`` wants, as far as a plan can tell without the nodes.

    A daemon wants as many as its status last counted eligible nodes (none known
    before it exists); a job as many as may run at once, none once it finished.
    """
    if spec.mode == WorkloadMode.DAEMON:
        return 0 if current is None else current.status.desired_replicas
    if spec.mode == WorkloadMode.JOB:
        if current is not None and current.status.finished_at is not None:
            return 0
        job = spec.job_spec
        done = 0 if current is None else current.status.succeeded
        return max(0, min(job.parallelism, job.completions - done))
    return spec.replicas


def rollout_steps(spec: WorkloadSpec, running: int) -> list[str]:
    """Return the batches a template change of ``spec`` over ``running`` instances goes in.

    The same budgets as the control loop's rolling step, with every new
    instance assumed to become available before the next batch.
    """
    want = running if spec.mode == WorkloadMode.DAEMON else spec.replicas
    if spec.paused:
        return ["paused: nothing is replaced until `shoal rollout resume`"]
    if spec.update.type == UpdateType.RECREATE:
        return [f"stop all {running} instance(s)", f"then start {want} new instance(s)"]
    if spec.mode == WorkloadMode.DAEMON:
        return _daemon_steps(spec, running)
    surge, unavailable = spec.update.surge(want), spec.update.unavailable(want)
    steps: list[str] = []
    updated, old = 0, running
    canary = min(spec.update.canary, want) if running else 0
    if canary:
        then = (
            "promoted once they are available (update.auto_promote)"
            if spec.update.auto_promote
            else "then waits for `shoal rollout promote`"
        )
        steps.append(f"canaries: start {canary} beside the {running} old; {then}")
        updated = canary
    while updated < want or old:
        creates = max(0, min(want - updated, want + surge - (updated + old)))
        stops = max(0, min(old, updated + old - (want - unavailable)))
        if not creates and not stops:
            steps.append("stuck: the budgets allow no step (check max_surge and max_unavailable)")
            break
        updated, old = updated + creates, old - stops
        steps.append(
            f"batch {len(steps) + 1}: start {creates}, stop {stops} old "
            f"({updated}/{want} updated, {old} old left)"
        )
    if len(steps) > MAX_STEPS:
        return [*steps[:MAX_STEPS], f"... and {len(steps) - MAX_STEPS} more batch(es)"]
    return steps


def _daemon_steps(spec: WorkloadSpec, nodes: int) -> list[str]:
    """A daemon's rollout: node by node, ``max_unavailable`` nodes (at least 1) at a time."""
    at_once = max(1, spec.update.unavailable(nodes))
    steps: list[str] = []
    for done in range(0, nodes, at_once):
        batch = min(at_once, nodes - done)
        steps.append(
            f"batch {len(steps) + 1}: stop {batch} old, then start {batch} new on the same "
            f"node(s) ({done + batch}/{nodes} nodes updated)"
        )
    if len(steps) > MAX_STEPS:
        return [*steps[:MAX_STEPS], f"... and {len(steps) - MAX_STEPS} more batch(es)"]
    return steps


def make_plan(changes: list[PlannedChange], basis: list[tuple[str, int]]) -> Plan:
    """Wrap ``changes`` in a plan whose id digests the changes and the state they start from.

    ``basis`` is each workload's (uid, generation) as read, so the same request
    against changed state yields a different id.
    """
    payload = json.dumps(
        {"changes": [c.model_dump(mode="json") for c in changes], "basis": basis},
        sort_keys=True,
        separators=(",", ":"),
    )
    return Plan(id=hashlib.sha256(payload.encode()).hexdigest()[:16], changes=changes)
