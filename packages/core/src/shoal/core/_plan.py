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
            instances_to_create=spec.replicas,
        )
    changes = diff_fields(current.spec.model_dump(mode="json"), spec.model_dump(mode="json"))
    if not changes:
        return PlannedChange(
            action=ChangeAction.UNCHANGED, namespace=spec.namespace, name=spec.name
        )
    old, new = current.spec.replicas, spec.replicas
    template_changed = current.spec.template != spec.template
    return PlannedChange(
        action=ChangeAction.UPDATE,
        namespace=spec.namespace,
        name=spec.name,
        changes=changes,
        instances_to_create=max(new - old, 0),
        instances_to_delete=max(old - new, 0),
        instances_to_replace=min(old, new) if template_changed else 0,
        rollout=rollout_steps(spec, old) if template_changed else [],
    )


def rollout_steps(spec: WorkloadSpec, running: int) -> list[str]:
    """Return the batches a template change of ``spec`` over ``running`` instances goes in.

    The same budgets as the control loop's rolling step, with every new
    instance assumed to become available before the next batch.
    """
    want = spec.replicas
    if spec.paused:
        return ["paused: nothing is replaced until `shoal rollout resume`"]
    if spec.update.type == UpdateType.RECREATE:
        return [f"stop all {running} instance(s)", f"then start {want} new instance(s)"]
    surge, unavailable = spec.update.surge(want), spec.update.unavailable(want)
    steps: list[str] = []
    updated, old = 0, running
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
