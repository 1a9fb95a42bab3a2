"""Tool argument types shared by the tools: the field descriptions agents read."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = [
    "MAX_LIST",
    "InstanceName",
    "Limit",
    "Namespace",
    "NodeName",
    "OptionalNamespace",
    "PlanId",
    "WorkloadName",
]

MAX_LIST = 1000
"""The most items a list tool returns in one answer (``limit``'s bound)."""

WorkloadName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        description="Workload name (a DNS label, e.g. 'web'); list_workloads shows them.",
    ),
]
InstanceName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=127,
        description="Instance name, e.g. 'web-3f2a1'; list_instances shows them.",
    ),
]
NodeName = Annotated[
    str,
    Field(min_length=1, max_length=253, description="Node name; list_nodes shows them."),
]
Namespace = Annotated[
    str,
    Field(min_length=1, max_length=63, description="Namespace of the object."),
]
OptionalNamespace = Annotated[
    str | None,
    Field(max_length=63, description="Only this namespace; all namespaces when omitted."),
]
PlanId = Annotated[
    str | None,
    Field(
        max_length=64,
        description="The plan_id of a plan made for exactly this change (plan_workload, "
        "plan_drain or plan_delete_config). Required for destructive changes unless the user "
        "confirms when asked.",
    ),
]
Limit = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_LIST,
        description=f"Most items to return (at most {MAX_LIST}); total and truncated say what "
        "was left out. Narrow with the other filters rather than raising it.",
    ),
]
