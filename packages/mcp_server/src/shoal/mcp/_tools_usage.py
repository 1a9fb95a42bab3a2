"""query_usage: an instance's or a node's usage history, as a bounded summary.

The node that runs an instance samples it every 10 s (kept an hour, then one
point a minute for a day); the tool digests a range of it into min, average,
maximum and latest CPU and memory, against the limits, restarts within the
range, and at most USAGE_SUMMARY_POINTS points — a constant size whatever the
range, so an agent's context does not grow with it.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from shoal.interfaces import (
    USAGE_DEFAULT_RANGE,
    USAGE_SUMMARY_POINTS,
    InvalidInput,
    ObjectRef,
    Role,
    UsageRange,
    UsageSummary,
    summarize_usage,
)

from ._audit import CLUSTER, Gate
from ._schema import SelfContained
from ._tools_read import READ

__all__ = ["register_usage_tools"]

UsageObject = Annotated[
    str,
    Field(
        min_length=1,
        max_length=260,
        description="What to look at: an instance as 'NAME' (namespace default) or "
        "'NAMESPACE/NAME' (list_instances shows them), or a node as 'node/NAME' (list_nodes).",
    ),
]
Range = Annotated[
    UsageRange,
    Field(description="How far back: 15m and 1h at 10 s resolution, 6h and 24h at 1 min."),
]


class UsageView(UsageSummary, SelfContained):
    """A usage summary whose output schema is self-contained (see :mod:`._schema`)."""


def parse_usage_object(text: str) -> tuple[str, str, str]:
    """Return (kind, namespace, name) of 'node/NAME', 'NAMESPACE/NAME' or 'NAME'.

    Raises:
        InvalidInput: more than two parts, or an empty one.
    """
    parts = text.strip().split("/")
    if any(not part for part in parts) or len(parts) > 2:
        raise InvalidInput(
            f"object {text!r} is not 'NAME', 'NAMESPACE/NAME' or 'node/NAME'", field="object"
        )
    if len(parts) == 1:
        return "instance", "default", parts[0]
    if parts[0] == "node":
        return "node", "", parts[1]
    return "instance", parts[0], parts[1]


def register_usage_tools(server: MCPServer[Any], gate: Gate) -> None:
    """Register query_usage on ``server``."""

    @server.tool(annotations=READ)
    async def query_usage(
        ctx: Context, object: UsageObject, range: Range = USAGE_DEFAULT_RANGE
    ) -> UsageView:
        """Summarize the CPU and memory use and restarts of an instance or a node over a range.

        Returns min/avg/max/last of CPU (millicores) and memory (bytes), the limits (0: none)
        and the peak as a fraction of each, restarts within the range, and at most
        24 averaged points. Use it to size limits or to see whether an instance was
        starved or leaking before it failed (then explain_instance).
        """
        ref = CLUSTER
        try:
            kind, namespace, name = parse_usage_object(object)
        except InvalidInput:
            pass  # raised again inside the gate, which renders and audits it
        else:
            ref = (
                ObjectRef(kind="Node", name=name)
                if kind == "node"
                else ObjectRef(kind="Instance", namespace=namespace, name=name)
            )
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            kind, namespace, name = parse_usage_object(object)
            if kind == "node":
                series = await call.service.usage("node", name, range=range)
            else:
                series = await call.service.usage("instance", name, namespace, range=range)
        summary = summarize_usage(series, USAGE_SUMMARY_POINTS)
        return UsageView.model_validate(summary.model_dump())
