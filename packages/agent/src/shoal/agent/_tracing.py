"""The agent's tracing: OpenTelemetry's SDK, a bounded span buffer, OTLP when asked.

:func:`install_tracing` sets up the process's tracer provider once:

* a :class:`SpanRecorder` keeps the node's last spans in memory (bounded by
  count), indexed by trace and by the trace a span links to, so that
  ``get_trace`` (MCP, REST, ``shoal trace``) answers without a collector;
* an OTLP/HTTP exporter (protobuf) when the standard variables ask for one:
  ``OTEL_TRACES_EXPORTER=otlp`` or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_TRACES_EXPORTER=console``
  prints spans instead. The exporter reads the rest of ``OTEL_EXPORTER_OTLP_*``
  itself (headers, timeout, compression); ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES`` name the resource;
* nothing at all with ``OTEL_SDK_DISABLED=true``: the API's no-op tracer then
  answers every span, and ``get_trace`` has nothing to show.

A setting Shoal cannot honour (the gRPC protocol, an exporter it does not
ship) is refused at start with the fix, never ignored.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from datetime import UTC, datetime
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from shoal.interfaces import (
    EVENT_DURATION,
    EVENT_OUTCOME,
    MAX_SPAN_EVENTS,
    MAX_TRACE_SPANS,
    SPAN_BUFFER,
    InvalidInput,
    SpanEvent,
    SpanLink,
    SpanRecord,
    TraceView,
)

__all__ = ["SpanRecorder", "install_tracing", "tracing_exporter"]


_STATUS = {"UNSET": "unset", "OK": "ok", "ERROR": "error"}
_installed: SpanRecorder | None = None
_install_lock = threading.Lock()


class _Kept(NamedTuple):
    """What the buffer keeps of a finished span: only what a :class:`SpanRecord` shows.

    Plain values and tuples of them, not the SDK's span: the buffer holds
    thousands, and every object in them is one more the garbage collector
    walks on each full pass (its attributes mapping, lock, context, status).
    """

    trace_id: int
    span_id: int
    parent_span_id: int | None
    name: str
    kind: SpanKind
    start: int
    end: int
    status: StatusCode
    status_message: str
    attributes: tuple[tuple[str, object], ...]
    links: tuple[tuple[int, int], ...]
    """(trace id, span id) of each span it links to."""
    events: tuple[tuple[str, int, float | None, str], ...]
    """(name, time, duration in ms or None, outcome or "") of its last events: what
    :data:`~shoal.interfaces.EVENT_DURATION` and :data:`~shoal.interfaces.EVENT_OUTCOME`
    say, no other attribute (a store call's event has none), so that each costs the
    buffer a few small objects."""
    dropped_events: int
    node: str


class SpanRecorder(SpanProcessor):
    """Keeps the last ``capacity`` finished spans, by trace and by the traces they link to.

    Spans end on any thread (the SDK calls :meth:`on_end` where a span ends),
    so every access takes a lock; each costs O(1) but :meth:`trace`.
    """

    def __init__(self, capacity: int = SPAN_BUFFER) -> None:
        self.capacity = capacity
        self._spans: deque[_Kept] = deque()
        self._by_trace: dict[int, deque[_Kept]] = {}
        self._linking: dict[int, dict[int, int]] = {}
        """Trace → the traces with spans linking to it → how many such spans are kept."""
        self._lock = threading.Lock()
        self._resource: Resource | None = None
        self._node = ""
        """The node named by ``_resource`` (spans of one provider share one resource)."""
        self._since = datetime.now(UTC)
        """When this buffer began: it holds no span that ended before."""

    def on_end(self, span: ReadableSpan) -> None:
        """Keep what ``span`` shows; drop the oldest kept span past the capacity."""
        context = span.context
        if context is None:
            return
        parent = span.parent
        attributes = span.attributes
        status = span.status
        trace_id = context.trace_id
        span_links = span.links  # most link nowhere: no generator for those
        links = (
            tuple((k.context.trace_id, k.context.span_id) for k in span_links) if span_links else ()
        )
        span_events = span.events
        events = (
            tuple(_kept_event(e) for e in span_events[-MAX_SPAN_EVENTS:]) if span_events else ()
        )
        dropped_events = len(span_events) - len(events) + span.dropped_events
        with self._lock:
            if span.resource is not self._resource:
                self._resource = span.resource
                self._node = str(span.resource.attributes.get(SERVICE_INSTANCE_ID, ""))
            kept = _Kept(
                trace_id,
                context.span_id,
                None if parent is None else parent.span_id,
                span.name,
                span.kind,
                span.start_time or 0,
                span.end_time or 0,
                status.status_code,
                status.description or "",
                tuple(attributes.items()) if attributes else (),
                links,
                events,
                dropped_events,
                self._node,
            )
            self._spans.append(kept)
            self._by_trace.setdefault(trace_id, deque()).append(kept)
            for linked, _ in links:
                linking = self._linking.setdefault(linked, {})
                linking[trace_id] = linking.get(trace_id, 0) + 1
            if len(self._spans) > self.capacity:
                self._forget(self._spans.popleft())

    def _forget(self, span: _Kept) -> None:
        trace_id = span.trace_id
        kept = self._by_trace[trace_id]
        kept.popleft()  # spans are kept in the order they end, per trace as overall
        if not kept:
            del self._by_trace[trace_id]
        for linked, _ in span.links:
            linking = self._linking.get(linked)
            if linking is None:
                continue
            linking[trace_id] -= 1
            if linking[trace_id] == 0:
                del linking[trace_id]
            if not linking:
                del self._linking[linked]

    def __len__(self) -> int:
        with self._lock:
            return len(self._spans)

    def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
        """Return the kept spans of a trace and of the traces linked to it, earliest first.

        Those linking to it (the work it caused) and those it links to (the
        requests it served).
        """
        wanted = int(trace_id, 16)
        with self._lock:
            own = list(self._by_trace.get(wanted, ()))
            linked = sorted(self._linking.get(wanted, {}))
            links = {linked_trace for span in own for linked_trace, _ in span.links}
            causes = sorted(links - {wanted})
            spans = own + [
                span for tid in (*linked, *causes) for span in self._by_trace.get(tid, ())
            ]
            full = len(self._spans) >= self.capacity
            since = _time(self._spans[0].start) if full else self._since
        spans.sort(key=lambda s: s.start)
        return TraceView(
            trace_id=format_trace_id(wanted),
            spans=[_record(span) for span in spans[:limit]],
            linked_traces=[format_trace_id(t) for t in linked],
            cause_traces=[format_trace_id(t) for t in causes],
            truncated=max(len(spans) - limit, 0),
            node=spans[0].node if spans else "",
            kept_since=since,
        )

    def shutdown(self) -> None:
        """Nothing to release: the buffer goes with the process."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing to flush: spans are kept as they end."""
        return True


def _time(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, UTC)


def _kept_event(event: Event) -> tuple[str, int, float | None, str]:
    attributes = event.attributes or {}
    took = attributes.get(EVENT_DURATION)
    outcome = attributes.get(EVENT_OUTCOME)
    return (
        event.name,
        event.timestamp,
        float(took) if isinstance(took, int | float) else None,
        outcome if isinstance(outcome, str) else "",
    )


def _event_record(kept: tuple[str, int, float | None, str]) -> SpanEvent:
    name, at, took, outcome = kept
    attributes: dict[str, str | int | float | bool] = {}
    if took is not None:
        attributes[EVENT_DURATION] = took
    if outcome:
        attributes[EVENT_OUTCOME] = outcome
    return SpanEvent(name=name, time=_time(at), attributes=attributes)


def _shown(kept: tuple[tuple[str, object], ...]) -> dict[str, str | int | float | bool]:
    """Attributes as a record shows them: a sequence value as its text."""
    return {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in kept}


def _record(span: _Kept) -> SpanRecord:
    attributes = _shown(span.attributes)
    return SpanRecord(
        trace_id=format_trace_id(span.trace_id),
        span_id=format_span_id(span.span_id),
        parent_span_id=None if span.parent_span_id is None else format_span_id(span.parent_span_id),
        name=span.name,
        kind=span.kind.name.lower(),
        start=_time(span.start),
        end=_time(span.end),
        duration_ms=(span.end - span.start) / 1e6,
        status=_STATUS.get(span.status.name, "unset"),
        status_message=span.status_message,
        attributes=attributes,
        links=[
            SpanLink(trace_id=format_trace_id(trace_id), span_id=format_span_id(span_id))
            for trace_id, span_id in span.links
        ],
        events=[_event_record(event) for event in span.events],
        dropped_events=span.dropped_events,
        node=span.node,
    )


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def tracing_exporter() -> SpanExporter | None:
    """Return the exporter the ``OTEL_*`` variables ask for, or None (keep spans local).

    Raises:
        InvalidInput: they ask for what Shoal does not ship, with the fix.
    """
    names = [n.strip().lower() for n in _env("OTEL_TRACES_EXPORTER").split(",") if n.strip()]
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not names:
        names = ["otlp"] if endpoint else []
    if names == ["none"] or not names:
        return None
    if len(names) > 1:
        raise InvalidInput(
            f"OTEL_TRACES_EXPORTER={_env('OTEL_TRACES_EXPORTER')}: Shoal exports to one "
            "place; name one of otlp, console, none",
            variable="OTEL_TRACES_EXPORTER",
        )
    if names == ["console"]:
        return ConsoleSpanExporter()
    if names != ["otlp"]:
        raise InvalidInput(
            f"OTEL_TRACES_EXPORTER={names[0]} is not supported: use otlp (to a collector), "
            "console, or none",
            variable="OTEL_TRACES_EXPORTER",
        )
    protocol = (
        _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
    ).lower() or "http/protobuf"
    if protocol != "http/protobuf":
        raise InvalidInput(
            f"OTLP protocol {protocol} is not supported: Shoal exports OTLP over HTTP "
            "(http/protobuf, port 4318); unset OTEL_EXPORTER_OTLP_PROTOCOL or set it to "
            "http/protobuf",
            variable="OTEL_EXPORTER_OTLP_PROTOCOL",
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def install_tracing(node: str) -> SpanRecorder | None:
    """Set up this process's tracing once (see the module); return its span buffer.

    None with ``OTEL_SDK_DISABLED=true``. A second call returns the first
    call's buffer: the provider is the process's, whichever node asks.

    Raises:
        InvalidInput: the ``OTEL_*`` variables ask for what Shoal does not ship.
    """
    global _installed
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    with _install_lock:
        if _installed is not None:
            return _installed
        exporter = tracing_exporter()
        recorder = SpanRecorder()
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):  # the process set one up already: join it
            current.add_span_processor(recorder)
            if exporter is not None:
                current.add_span_processor(BatchSpanProcessor(exporter))
            _installed = recorder
            return recorder
        attributes = {SERVICE_INSTANCE_ID: node}
        if not _env("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = "shoal"
        # A span holds its last MAX_SPAN_EVENTS events while it is open, all the buffer
        # keeps (a reconcile of many workloads makes hundreds of store calls), unless
        # OTEL_SPAN_EVENT_COUNT_LIMIT asks for more for an exporter.
        limits = (
            None if _env("OTEL_SPAN_EVENT_COUNT_LIMIT") else SpanLimits(max_events=MAX_SPAN_EVENTS)
        )
        provider = TracerProvider(resource=Resource.create(attributes), span_limits=limits)
        provider.add_span_processor(recorder)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _installed = recorder
        return recorder
