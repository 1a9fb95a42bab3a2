"""get_trace: what one request did and the work it caused, as a bounded list of spans.

Every tool that changes something returns the trace id of its call; events
carry the trace id of the request behind them, and explain_instance names
the trace of an instance's last start. get_trace turns one of those ids
into the spans recorded on every node the trace crossed: the call itself
(tool, service, and its store calls as events) and the traces that link to
it (the control loop's placement, the worker's pull, create and start). At
most MCP_TRACE_SPANS spans, earliest first, so the answer has a fixed bound
whatever the request did.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from shoal.interfaces import Role, SpanRecord, TraceView

from ._audit import Gate
from ._schema import SelfContained
from ._tools_read import READ

__all__ = ["MCP_TRACE_SPANS", "register_trace_tools"]

MCP_TRACE_SPANS = 100
"""The most spans get_trace returns to an agent (the service's own bound is larger)."""

TraceId = Annotated[
    str,
    Field(
        min_length=32,
        max_length=32,
        pattern="^[0-9a-fA-F]{32}$",
        description="A trace id (32 hex digits): the trace_id of a change tool's result or "
        "of an event, or explain_instance's start_trace_id.",
    ),
]


class TraceReport(TraceView, SelfContained):
    """A trace whose output schema is self-contained (see :mod:`._schema`)."""


def _compact(span: SpanRecord) -> SpanRecord:
    """The span without its attributes of no use to an agent (HTTP plumbing)."""
    keep = {k: v for k, v in span.attributes.items() if not k.startswith(("http.", "url."))}
    return span.model_copy(update={"attributes": keep})


def register_trace_tools(server: MCPServer[Any], gate: Gate) -> None:
    """Register get_trace on ``server``."""

    @server.tool(annotations=READ)
    async def get_trace(trace_id: TraceId, ctx: Context) -> TraceReport:
        """Show the spans of one request and of the work it caused, earliest first.

        The request's own spans (tool call, service call; its store writes are events of
        the span they served) and those of the traces linking to it: the control loop's
        reconcile and scheduling, each node's start of an instance (image pull, create,
        start). Given a start's trace (explain_instance's
        start_trace_id), also the request that caused it (cause_traces). A span with status
        'error' is where it failed; each span names its node. The spans come from every node
        the trace crossed (nodes); a node whose spans could not be had is in missing, with why.
        """
        async with gate.call(ctx, Role.VIEWER) as call:
            view = await call.service.get_trace(trace_id)
        shown = view.spans[:MCP_TRACE_SPANS]
        # Every field of the view as it is (one added to TraceView comes along), but the spans.
        return TraceReport(
            **{
                **dict(view),
                "spans": [_compact(s) for s in shown],
                "truncated": view.truncated + len(view.spans) - len(shown),
            }
        )
