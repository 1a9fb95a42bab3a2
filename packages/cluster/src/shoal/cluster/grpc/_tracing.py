"""Spans of node-to-node calls: the caller's trace carried in gRPC metadata.

A call made inside a recorded span (a worker's start of an instance, which
reports its status to a server) is a client span, and its W3C context and
baggage travel in the call's metadata (OpenTelemetry's text-map propagation).
The server records the call as a server span in the caller's trace, linked
to the request the work serves as well (the baggage entry
:data:`~shoal.interfaces.ORIGIN_BAGGAGE`), so the server's own span buffer
shows a worker's calls under that request. A call made outside any trace
carries nothing and starts no span on either side.

The context is taken from authenticated nodes only: a call's signature is
checked before its handler (and so this span) runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import grpc
import grpc.aio
from opentelemetry import baggage, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shoal.interfaces import ORIGIN_BAGGAGE, TRACEPARENT_HEADER

__all__ = ["TracingInterceptor", "client_span"]

TRACER = trace.get_tracer("shoal.cluster")
_TRACEPARENT = TraceContextTextMapPropagator()


def _attributes(method: str) -> dict[str, str]:
    service, _, name = method.strip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


@contextmanager
def client_span(method: str, metadata: list[tuple[str, str]]) -> Iterator[None]:
    """Record a call to ``method`` as a client span and add its context to ``metadata``.

    Outside a recorded span: nothing recorded, nothing added.
    """
    if not trace.get_current_span().is_recording():
        yield
        return
    with TRACER.start_as_current_span(
        f"grpc {method.strip('/')}",
        kind=SpanKind.CLIENT,
        attributes=_attributes(method),
        record_exception=False,
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata.extend(carrier.items())
        yield


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Runs a unary call that carries a trace context inside a server span of that trace."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Wrap the handler of a traced unary call; leave every other call as it is."""
        details = handler_call_details
        handler = await continuation(details)
        pairs = details.invocation_metadata
        metadata = {k: v for k, v in pairs if isinstance(v, str)}
        if handler is None or handler.unary_unary is None or TRACEPARENT_HEADER not in metadata:
            return handler
        behavior: Callable[..., Any] = handler.unary_unary
        method = str(details.method)

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            parent = propagate.extract(metadata)
            links = []
            origin = baggage.get_baggage(ORIGIN_BAGGAGE, parent)
            if isinstance(origin, str):
                cause = trace.get_current_span(_TRACEPARENT.extract({TRACEPARENT_HEADER: origin}))
                if cause.get_span_context().is_valid:
                    links.append(Link(cause.get_span_context()))
            with TRACER.start_as_current_span(
                f"grpc {method.strip('/')}",
                context=parent,
                kind=SpanKind.SERVER,
                links=links,
                attributes=_attributes(method),
                record_exception=False,
            ) as span:
                try:
                    return await behavior(request, context)
                finally:
                    code = context.code()
                    if code not in (None, grpc.StatusCode.OK):
                        span.set_status(Status(StatusCode.ERROR, str(code)))

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
