"""The Traces service: the spans a node recorded of one trace, for the servers.

Each node keeps the spans it recorded in a buffer of its own (a
:class:`~shoal.interfaces.TraceSource`). A request's work crosses nodes — the
server's apply and reconcile, a worker's pull and start — so the server that
answers ``get_trace`` asks the other nodes for their part::

    server --RemoteTraces--> (gRPC shoal.cluster.v1.Traces) --TraceGateway--> span buffer

Every node serves :class:`TraceGateway` to authenticated callers that
``authorize`` admits (the composition root admits the servers of the cluster),
a node whose tracing is off too, so that it can say so;
:class:`RemoteTraces` is the calling side, a
:class:`~shoal.interfaces.TraceQuery`. The view travels as the JSON document
of a :class:`~shoal.interfaces.TraceView`, as the other services carry Shoal's
documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import grpc.aio

from shoal.interfaces import (
    MAX_TRACE_SPANS,
    AsyncClosing,
    InvalidInput,
    ShoalError,
    TraceSource,
    TraceView,
    Unavailable,
    check_trace_id,
)

from ._grpc_base import PACKAGE, AdmittingService, NodeChannel
from ._grpc_errors import abort_with
from ._nodeauth import Caller, CallVerifier
from ._pb import shoal_node_pb2 as pb

__all__ = ["RemoteTraces", "TraceGateway"]

_SERVICE = f"{PACKAGE}.Traces"
_TRACE = f"/{_SERVICE}/Trace"

_Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class TraceGateway(AdmittingService):
    """Serves ``source``'s spans of a trace to the nodes ``authorize`` admits.

    Args:
        source: The node's span buffer; None when its tracing is off (every
            call is then Unavailable, saying so).
        verifier: Checks the auth metadata of each call.
        authorize: Admits or refuses an authenticated caller.
    """

    def __init__(
        self,
        source: TraceSource | None,
        verifier: CallVerifier,
        authorize: Callable[[Caller], Awaitable[None]],
    ) -> None:
        super().__init__(verifier, authorize)
        self._source = source

    def handler(self) -> grpc.GenericRpcHandler:
        """Return the handler of ``shoal.cluster.v1.Traces``, for :func:`serve_grpc`."""
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Trace": grpc.unary_unary_rpc_method_handler(
                    self._trace,
                    request_deserializer=pb.TraceRequest.FromString,
                    response_serializer=pb.TraceReply.SerializeToString,
                ),
            },
        )

    async def _trace(self, request: pb.TraceRequest, context: _Context) -> pb.TraceReply:
        await self._admit(context, _TRACE, request)
        try:
            try:
                wanted = check_trace_id(request.trace_id)
            except ValueError as exc:
                raise InvalidInput(str(exc), trace_id=request.trace_id) from None
            if not 0 < request.limit <= MAX_TRACE_SPANS:
                raise InvalidInput(
                    f"limit {request.limit} is not between 1 and {MAX_TRACE_SPANS}",
                    limit=request.limit,
                )
            if self._source is None:
                raise Unavailable(
                    "this node records no spans: its tracing is off (OTEL_SDK_DISABLED=true)"
                )
            view = self._source.trace(wanted, request.limit)
        except ShoalError as exc:
            await abort_with(context, exc)
        return pb.TraceReply(view=view.model_dump_json().encode())


class RemoteTraces(AsyncClosing):
    """The spans another node recorded, through its Traces service: a TraceQuery over gRPC.

    Owns ``channel``: :meth:`aclose` (or leaving ``async with``) closes it.
    """

    def __init__(self, channel: NodeChannel) -> None:
        self._channel = channel

    async def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
        """Return the node's spans of ``trace_id`` and of the traces linked to it.

        Raises:
            Unavailable: the node cannot be reached, or its answer is not a trace view.
            Unauthenticated, Forbidden: the node refuses this one.
        """
        request = pb.TraceRequest(trace_id=trace_id, limit=limit)
        reply = await self._channel.unary(_TRACE, request, pb.TraceReply)
        try:
            return TraceView.model_validate_json(reply.view)
        except ValueError as exc:
            raise Unavailable(
                f"node at {self._channel.address} sent a trace view that cannot be read: {exc}"
            ) from None

    async def aclose(self) -> None:
        """Close the channel to the node."""
        await self._channel.aclose()
