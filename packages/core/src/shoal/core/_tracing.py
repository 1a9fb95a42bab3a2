"""Spans of the service layer and the loops, and the request each piece of work serves.

Shoal records spans through the OpenTelemetry API only: without an SDK (a
test, a library user) every call here is a no-op; the agent installs the SDK
(see ``shoal.agent``). A front door's request is one trace. Work that a loop
does later for that request — a reconcile, a start on a node — is a trace of
its own whose root links to the request (:func:`linked_span`), because it
runs in another task, batched with other requests' work, maybe on another
node. The request's context travels on the objects (``trace_context`` of a
workload and its instances).

While a loop works for one object, :func:`serving` names the request it
serves: :func:`origin_trace_id` is then that request's trace id, which the
events recorded meanwhile carry — so the events of an apply, down to its
node's ``Started``, all name the apply's trace.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import Token

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shoal.interfaces import ORIGIN_BAGGAGE

__all__ = [
    "TRACER",
    "SpanAttributes",
    "as_current",
    "current_trace_id",
    "current_traceparent",
    "error_status",
    "linked_span",
    "origin_trace_id",
    "propagated_context",
    "serving",
    "span_context_of",
    "traced",
]

TRACER = trace.get_tracer("shoal.core")
"""The tracer of the service layer, the control loop and the node loop."""

SpanAttributes = dict[str, str | int | float | bool]
"""A span's attributes, as Shoal sets them."""

_PROPAGATOR = TraceContextTextMapPropagator()
MAX_LINKS = 32
"""Links on one batch span: one per request served, the first ones if more."""


def current_traceparent() -> str | None:
    """Return the current span's W3C ``traceparent``, or None outside a recorded span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """Return the current span's trace id (32 hex digits), or None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def span_context_of(traceparent: str | None) -> trace.SpanContext | None:
    """Return the span context ``traceparent`` names, or None if it names none (or is bad)."""
    return _parsed(traceparent) if traceparent else None


@functools.lru_cache(maxsize=1024)
def _parsed(traceparent: str) -> trace.SpanContext | None:
    """Parse ``traceparent`` once: the loops read the same few again and again.

    One request's context is read by each pass over its workload and each
    start of its instances (their links, the events they record).
    """
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def origin_trace_id() -> str | None:
    """Return the trace id (32 hex digits) of the request the current work serves.

    Inside :func:`serving`, the request it names; otherwise the current span's
    trace (a front door's request); None outside both.
    """
    origin = span_context_of(_origin())
    if origin is not None:
        return trace.format_trace_id(origin.trace_id)
    current = trace.get_current_span().get_span_context()
    return trace.format_trace_id(current.trace_id) if current.is_valid else None


def propagated_context() -> str | None:
    """Return the ``traceparent`` an object written now should carry.

    The request the current work serves (so a chain of loops links back to
    the request, not to each other), or else the current span.
    """
    return _origin() or current_traceparent()


def _origin() -> str | None:
    origin = baggage.get_baggage(ORIGIN_BAGGAGE)
    return origin if isinstance(origin, str) else None


@contextmanager
def serving(traceparent: str | None) -> Iterator[None]:
    """Mark the work inside as done for the request ``traceparent`` names (None: for none).

    The mark is OpenTelemetry baggage (:data:`~shoal.interfaces.ORIGIN_BAGGAGE`),
    so it travels with the work's calls to other nodes.
    """
    if traceparent:
        context = baggage.set_baggage(ORIGIN_BAGGAGE, traceparent)
    else:
        context = baggage.remove_baggage(ORIGIN_BAGGAGE)
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def linked_span(
    name: str,
    causes: Iterable[str | None],
    attributes: SpanAttributes | None = None,
    *,
    start_time: int | None = None,
) -> AbstractContextManager[Span]:
    """Start ``name`` as the root of a new trace, linked to the requests ``causes`` name.

    ``start_time`` (nanoseconds since the epoch): when the work began, if
    before now (the work decided first whether it is worth a span). A failure
    inside marks the span as failed (:func:`error_status`) and is raised again.
    The span starts when this is called: enter what it returns at once.
    """
    links: list[Link] = []
    seen: set[int] = set()
    for cause in causes:
        context = span_context_of(cause)
        if context is None or context.span_id in seen:
            continue
        seen.add(context.span_id)
        links.append(Link(context))
        if len(links) == MAX_LINKS:
            break
    span = TRACER.start_span(
        name,
        context=_ROOT,
        links=links,
        attributes=attributes,
        start_time=start_time,
        record_exception=False,
        set_status_on_exception=False,
    )
    return as_current(span)


def as_current(span: Span) -> AbstractContextManager[Span]:
    """Make ``span`` current inside the block; a failure there marks it failed; end it after.

    For a span started with the tracer's ``start_span``: cheaper than its
    ``start_as_current_span`` (see :class:`_Current`).
    """
    return _Current(span)


_ROOT = otel_context.Context()
"""No parent: a loop's work is not part of any request's trace (it links to them)."""


class _Current:
    """Makes ``span`` current inside the block, marks it failed on an error, ends it.

    A plain context manager rather than the tracer's ``start_as_current_span``
    (two nested generator-based managers): a loop opens one per batch and per
    start, and that pair cost more than the span.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        if isinstance(error, Exception):
            self._span.set_status(error_status(error))
        self._span.end()


def error_status(exc: BaseException) -> Status:
    """Return the status of a span whose work failed with ``exc``.

    It names the error's code (a :class:`~shoal.interfaces.ShoalError`) or
    type, never its message: a message may quote the input (a manifest, a
    Secret's value), and spans are shown to any viewer.
    """
    code = getattr(exc, "code", None)
    return Status(StatusCode.ERROR, code if isinstance(code, str) else type(exc).__name__)


class _Traced:
    """What :func:`traced` returns: a plain context manager, no generator per call.

    Runtime calls open one each, so it starts and ends its span
    itself rather than through the tracer's nested context managers.
    """

    __slots__ = ("_attributes", "_kind", "_name", "_span", "_token")

    def __init__(self, name: str, attributes: SpanAttributes | None, kind: SpanKind) -> None:
        self._name = name
        self._attributes = attributes
        self._kind = kind
        self._span: Span | None = None
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> Span | None:
        if not trace.get_current_span().is_recording():
            return None
        span = TRACER.start_span(
            self._name,
            kind=self._kind,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,  # the caller knows a failure from an answer
        )
        self._token = otel_context.attach(trace.set_span_in_context(span))
        self._span = span
        return span

    def __exit__(self, *exc_info: object) -> None:
        if self._span is not None and self._token is not None:
            otel_context.detach(self._token)
            self._span.end()


def traced(
    name: str,
    attributes: SpanAttributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> AbstractContextManager[Span | None]:
    """Record ``name`` as a child span, but only inside a recorded span (else yield None).

    Runtime calls use this: inside a request or a loop's work they
    are part of its trace; the background's many reads start no trace each.
    """
    return _Traced(name, attributes, kind)
