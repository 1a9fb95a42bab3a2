"""Spans of node-to-node calls: the caller's trace carried in gRPC metadata.

A call made inside a recorded span (a worker's start of an instance, which
reports its status to a server) is a client span, and its W3C context and
baggage travel in the call's metadata (OpenTelemetry's text-map
propagation), covered by the call's signature
(:data:`~shoal.cluster.grpc._nodeauth.SIGNED_TRACE_FIELDS`).

On the server, :class:`TracingInterceptor` notes that a unary call carries a
trace context; the span opens only once :func:`authenticated` says the
caller is a node of this cluster, admitted under its name (a call that
fails its checks leaves no span in anyone's trace). It is a server span in
the caller's trace, linked to the request the work serves as well (the baggage entry
:data:`~shoal.interfaces.ORIGIN_BAGGAGE`), so the server's own span buffer
shows a worker's calls under that request. A call made outside any trace
carries nothing and starts no span on either side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc
import grpc.aio
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shoal.interfaces import CALLER_NODE, ORIGIN_BAGGAGE, TRACEPARENT_HEADER

from ._nodeauth import SIGNED_TRACE_FIELDS

__all__ = ["TracingInterceptor", "authenticated", "client_span"]

TRACER = trace.get_tracer("shoal.cluster")
_TRACEPARENT = TraceContextTextMapPropagator()


def _attributes(method: str) -> dict[str, str]:
    service, _, name = method.strip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


@contextmanager
def client_span(method: str) -> Iterator[dict[str, str]]:
    """Record a call to ``method`` as a client span; yield the trace context it carries.

    Outside a recorded span: nothing recorded, an empty context.
    """
    if not trace.get_current_span().is_recording():
        yield {}
        return
    with TRACER.start_as_current_span(
        f"grpc {method.strip('/')}",
        kind=SpanKind.CLIENT,
        attributes=_attributes(method),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            yield {k: v for k, v in carrier.items() if k in SIGNED_TRACE_FIELDS}
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


class _Pending:
    """A traced call's server span: opened once its caller is authenticated and admitted."""

    def __init__(self, method: str, metadata: dict[str, str]) -> None:
        self.method = method
        self.metadata = metadata
        self.span: Span | None = None
        self._token: object = None

    def open(self, caller: str) -> None:
        parent = propagate.extract(self.metadata)
        links = []
        origin = baggage.get_baggage(ORIGIN_BAGGAGE, parent)
        if isinstance(origin, str):
            cause = trace.get_current_span(_TRACEPARENT.extract({TRACEPARENT_HEADER: origin}))
            if cause.get_span_context().is_valid:
                links.append(Link(cause.get_span_context()))
        self.span = TRACER.start_span(
            f"grpc {self.method.strip('/')}",
            context=parent,
            kind=SpanKind.SERVER,
            links=links,
            attributes={**_attributes(self.method), CALLER_NODE: caller},
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def close(self, code: grpc.StatusCode | None) -> None:
        if self.span is None:
            return
        if code not in (None, grpc.StatusCode.OK):
            self.span.set_status(Status(StatusCode.ERROR, str(code)))
        self.span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


_PENDING: ContextVar[_Pending | None] = ContextVar("shoal_grpc_pending_span", default=None)


def authenticated(caller: str) -> None:
    """Open the span of the call being served, if it carries a trace context.

    Called once the caller is authenticated and admitted: the context its
    signature covers is then a known node's. The span names that node
    (:data:`~shoal.interfaces.CALLER_NODE`): a server's ``get_trace`` asks it
    for the rest of the trace.
    """
    pending = _PENDING.get()
    if pending is not None and pending.span is None:
        pending.open(caller)


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Serves a unary call that carries a trace context inside a server span of that trace."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Wrap the handler of a traced unary call; leave every other call as it is."""
        details = handler_call_details
        handler = await continuation(details)
        pairs = details.invocation_metadata
        fields = {k: v for k, v in pairs if isinstance(v, str) and k in SIGNED_TRACE_FIELDS}
        if handler is None or handler.unary_unary is None or TRACEPARENT_HEADER not in fields:
            return handler
        behavior: Callable[..., Any] = handler.unary_unary
        method = str(details.method)

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            pending = _Pending(method, fields)
            token = _PENDING.set(pending)
            try:
                return await behavior(request, context)
            finally:
                pending.close(context.code())
                _PENDING.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
