"""Traces as Shoal shows them: the spans of one request and of the work it caused.

A request (CLI, REST, MCP) is one OpenTelemetry trace: the front door's span,
the service call and, as events of it, its store calls. What a controller
does later is not part of that trace — it happens in another task, maybe on
another node — so it is its own trace whose root span *links* to the request (a Span Link, as
OpenTelemetry recommends for asynchronous work). The request's context
travels on the objects it wrote: a workload's and an instance's
``trace_context`` hold the W3C ``traceparent`` of the request that caused
them, and the events their controllers record carry that request's trace id.

:class:`TraceView` is what ``get_trace`` answers: the spans of the trace
asked for, of every trace that links to it (the work it caused) and of the
traces it links to (the request it served). Each node keeps the spans it
recorded; a server that answers asks the other nodes the trace passed through
for theirs (:class:`TraceQuery`, over gRPC) and merges them, so one answer
shows a request's work on every node.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import Field

from ._base import Model
from ._wire import TRACEPARENT_HEADER

__all__ = [
    "CALLER_NODE",
    "EVENT_DURATION",
    "EVENT_OUTCOME",
    "MAX_SPAN_EVENTS",
    "MAX_TRACE_NODES",
    "MAX_TRACE_SPANS",
    "MCP_TRACEPARENT_META",
    "ORIGIN_BAGGAGE",
    "SPAN_BUFFER",
    "TRACEPARENT_PATTERN",
    "TRACE_ID_PATTERN",
    "TRACE_QUERY_SECONDS",
    "SpanEvent",
    "SpanLink",
    "SpanRecord",
    "TraceQuery",
    "TraceSource",
    "TraceView",
    "check_trace_id",
]

MCP_TRACEPARENT_META = TRACEPARENT_HEADER
"""The key of ``params._meta`` that carries an MCP request's trace context (OpenTelemetry's
MCP conventions name it after the HTTP header); honoured only for admin callers, as the
header is."""
ORIGIN_BAGGAGE = "shoal.origin"
"""The OpenTelemetry baggage entry naming the request a piece of work serves (its
``traceparent``): set by the loops, carried over gRPC, so a server's span of a worker's
call links to that request too."""
TRACE_ID_PATTERN = r"^[0-9a-f]{32}$"
"""A trace id as Shoal stores it: 32 lower-case hex digits (W3C)."""
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C ``traceparent`` as the objects carry it (version-trace-span-flags)."""
SPAN_BUFFER = 20_000
"""Spans a node keeps in memory for ``get_trace`` (the oldest go first)."""
MAX_TRACE_SPANS = 500
"""The most spans one ``get_trace`` answer holds (the earliest first); more are counted."""
MAX_TRACE_NODES = 16
"""The most other nodes one ``get_trace`` asks for their spans; the others are named as
not asked."""

TRACE_QUERY_SECONDS = 3.0
"""How long ``get_trace`` waits for another node's spans before naming it as missing."""

CALLER_NODE = "shoal.caller_node"
"""The attribute of a node's span of another node's gRPC call that names the caller: a
server's ``get_trace`` asks the nodes it names for their own spans of the trace."""

MAX_SPAN_EVENTS = 16
"""The events a node keeps of one span (the last ones); the earlier are counted."""
EVENT_DURATION = "shoal.duration_ms"
"""The attribute of a span event that times a call (a store operation is an event of the
span it served, not a span of its own), in milliseconds."""
EVENT_OUTCOME = "shoal.outcome"
"""The attribute of a span event that says how a call ended when not as asked:
``conflict`` (a lost compare-and-swap: a compare that did not hold), ``not_found``,
``cancelled``, or the error's code (its type for an error that has none)."""


def check_trace_id(trace_id: str) -> str:
    """Return ``trace_id`` in lower case if it is a W3C trace id (32 hex digits, not all 0).

    Raises:
        ValueError: it is not one, with what a trace id looks like.
    """
    lowered = trace_id.strip().lower()
    if len(lowered) != 32 or any(c not in "0123456789abcdef" for c in lowered):
        raise ValueError(
            f"{trace_id!r} is not a trace id: a trace id is 32 hex digits, as an event's "
            "trace_id or the traceresponse header shows it"
        )
    if lowered == "0" * 32:
        raise ValueError("the all-zero trace id names no trace")
    return lowered


class SpanLink(Model):
    """A span's link to a span of another trace (the request that caused the work)."""

    trace_id: str
    """The linked span's trace (32 hex digits)."""
    span_id: str
    """The linked span (16 hex digits)."""


class SpanEvent(Model):
    """Something a span did that is not a span of its own: a store operation.

    Its name says what (``store.txn``, ``store.get``…), ``time`` when it
    began, the :data:`EVENT_DURATION` attribute how long it took, and
    :data:`EVENT_OUTCOME` how it ended when not as asked.
    """

    name: str
    """What was done, e.g. ``store.txn``."""
    time: datetime
    """When it began."""
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Its duration (:data:`EVENT_DURATION`) and, if it did not succeed, its outcome."""


class SpanRecord(Model):
    """One finished span."""

    trace_id: str
    """Its trace (32 hex digits)."""
    span_id: str
    """The span (16 hex digits)."""
    parent_span_id: str | None = None
    """None for a trace's root span."""
    name: str
    """What was done, e.g. ``POST /v1/workloads/apply``, ``shoal.apply``, ``runtime.run``."""
    kind: str = "internal"
    """OpenTelemetry's span kind in lower case: internal, server, client, producer, consumer."""
    start: datetime
    """When it began."""
    end: datetime
    """When it ended."""
    duration_ms: float
    """How long it took, in milliseconds."""
    status: Literal["unset", "ok", "error"] = "unset"
    """``error`` where the work failed."""
    status_message: str = ""
    """What failed, for a failed span."""
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """What it acted on: ``shoal.object``, ``shoal.instance``, ``shoal.node``, HTTP route…"""
    links: list[SpanLink] = Field(default_factory=list)
    """The requests this work was done for (a reconcile's, a node's start's)."""
    events: list[SpanEvent] = Field(default_factory=list)
    """Its last store operations (at most :data:`MAX_SPAN_EVENTS`), earliest first."""
    dropped_events: int = 0
    """Events it had before those shown."""
    node: str = ""
    """The node that recorded the span."""


class TraceView(Model):
    """The spans of one trace, of the traces that link to it and of those it links to."""

    trace_id: str
    """The trace asked for."""
    spans: list[SpanRecord] = Field(default_factory=list)
    """Its spans and those of the traces linking to it, earliest first."""
    linked_traces: list[str] = Field(default_factory=list)
    """Traces whose root links to this one: the asynchronous work the request caused."""
    cause_traces: list[str] = Field(default_factory=list)
    """Traces this one links to: the requests its work was done for (for a start's trace,
    the apply that caused it)."""
    truncated: int = 0
    """Spans left out past :data:`MAX_TRACE_SPANS`."""
    node: str = ""
    """The node that answered."""
    kept_since: datetime | None = None
    """Since when the answering node's buffer holds its spans: its start, or once full, its
    oldest span. Its spans of a trace older than that are gone."""
    nodes: list[str] = Field(default_factory=list)
    """The nodes whose recorded spans were read: the one that answered, and each other
    node that answered it."""
    missing: dict[str, str] = Field(default_factory=dict)
    """Nodes the trace passed through whose spans are not (all) here, and why (unreachable,
    no answer in time, more than :data:`MAX_TRACE_NODES` to ask, or restarted since)."""


class TraceSource(Protocol):
    """The spans a node has recorded recently (a bounded buffer, not a trace store)."""

    def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
        """Return the spans of ``trace_id`` and of the traces linked to it (empty if none).

        Linked either way: those linking to it and those it links to.
        """
        ...


class TraceQuery(Protocol):
    """Another node's recorded spans, reached over the network."""

    async def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
        """Return that node's :meth:`TraceSource.trace` of ``trace_id``.

        Raises:
            Unavailable: the node cannot be reached or did not answer.
        """
        ...
