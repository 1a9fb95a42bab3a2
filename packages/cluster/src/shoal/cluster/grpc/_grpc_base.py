"""The plumbing both gRPC services share: a signed client channel and the server.

:class:`NodeChannel` is one node's connection to another: every call is
signed (:func:`~shoal.cluster.grpc._nodeauth.sign_call`) and every failure comes
back as a :class:`~shoal.interfaces.ShoalError`. :func:`authenticate` is the
server side of the same check, and :func:`serve_grpc` runs a ``grpc.aio``
server for the services a node offers until cancelled. A unary call made
inside a trace is a span on both sides (see :mod:`._tracing`).

Services are registered as generic handlers over the protobuf messages of
``proto/shoal_node.proto`` rather than through protoc's ``_pb2_grpc``
modules: those are untyped, and the handlers here are a few lines each.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import anyio
import grpc
import grpc.aio
from anyio.abc import TaskStatus
from google.protobuf.message import Message

from shoal.cluster.serf._serf_wire import split_host_port
from shoal.interfaces import ShoalError, Unavailable

from ._grpc_errors import abort_with, error_from_rpc
from ._nodeauth import Caller, CallVerifier, NodeIdentity, sign_call
from ._tracing import TracingInterceptor, authenticated, client_span

__all__ = ["AdmittingService", "NodeChannel", "authenticate", "check_listenable", "serve_grpc"]

Reply = TypeVar("Reply", bound=Message)
T = TypeVar("T")

PACKAGE = "shoal.cluster.v1"


# Pings on idle connections, so a watch through a partition fails within
# seconds instead of hanging; the server accepts pings that often.
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 4000),
    ("grpc.http2.max_pings_without_data", 0),
]


class NodeChannel:
    """Signed calls from this node to the node at ``address`` (``host:port``)."""

    def __init__(
        self, identity: NodeIdentity, token: str, address: str, *, timeout: float = 10.0
    ) -> None:
        self.identity = identity
        self.address = address
        self.timeout = timeout
        self._token = token
        self._channel = grpc.aio.insecure_channel(address, options=_KEEPALIVE)

    async def unary(
        self, method: str, request: Message, reply: type[Reply], *, deadline: float | None = None
    ) -> Reply:
        """Call a unary ``method`` (``/shoal.cluster.v1.NodeState/Register``) and return its reply.

        ``deadline`` (seconds) overrides the channel's default for this call.

        Raises:
            ShoalError: the error the server raised, or Unavailable when it
                cannot be reached (or this channel was closed during the call).
        """
        body = request.SerializeToString(deterministic=True)
        stub = self._channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=reply.FromString
        )
        with client_span(method) as carried:
            metadata = sign_call(self.identity, self._token, method, body, trace=carried)
            call = stub(
                body,
                metadata=metadata,
                timeout=self.timeout if deadline is None else deadline,
            )
            done = anyio.Event()
            call.add_done_callback(_setter(done))
            result: Reply = await self._outcome(call, done, call)
        return result

    async def stream(
        self, method: str, request: Message, reply: type[Reply]
    ) -> AsyncIterator[Reply]:
        """Call a server-streaming ``method`` and yield its replies until it ends.

        Raises:
            ShoalError: as :meth:`unary`; raised from the iteration.
        """
        body = request.SerializeToString(deterministic=True)
        stub = self._channel.unary_stream(
            method, request_serializer=_identity, response_deserializer=reply.FromString
        )
        call = stub(body, metadata=sign_call(self.identity, self._token, method, body))
        try:
            while True:
                read = asyncio.ensure_future(call.read())
                done = anyio.Event()
                read.add_done_callback(_setter(done))
                item: object = await self._outcome(read, done, call)
                if item is grpc.aio.EOF:
                    return
                yield cast(Reply, item)
        finally:
            call.cancel()

    async def _outcome(self, pending: Awaitable[T], done: anyio.Event, call: grpc.aio.Call) -> T:
        """Wait for ``pending`` (``done`` is set when it is) and return its outcome.

        The caller waits on an anyio event, not on grpc's future: grpc.aio
        answers a cancellation by raising a CancelledError of its own, which
        anyio would not recognise as its cancel scope's and let escape it.
        So cancelling the caller cancels the call the anyio way, and a call
        that grpc cancelled itself (its channel was closed, e.g. by a
        RemoteNodeState dropping a server another call found gone) becomes
        Unavailable, which callers retry, instead of a bare cancellation.
        """
        try:
            await done.wait()
        except anyio.get_cancelled_exc_class():
            call.cancel()
            raise
        try:
            return await pending  # settled: returns or raises at once
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self.address) from None
        except asyncio.CancelledError:
            raise Unavailable(
                f"the call to {self.address} was cancelled: its channel was closed",
                target=self.address,
            ) from None

    async def aclose(self) -> None:
        """Close the connection."""
        with anyio.CancelScope(shield=True):
            await self._channel.close()


def _setter(event: anyio.Event) -> Callable[[object], None]:
    """Return a done-callback that sets ``event``."""
    return lambda _: event.set()


def _identity(body: bytes) -> bytes:
    return body


async def authenticate(
    verifier: CallVerifier,
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
    request: Message,
) -> Caller:
    """Return the authenticated caller of ``method``, or abort the call with why not."""
    metadata = context.invocation_metadata() or ()
    try:
        caller = verifier.verify(metadata, method, request.SerializeToString(deterministic=True))
    except ShoalError as exc:
        await abort_with(context, exc)
    return caller


class AdmittingService:
    """Base of a node-to-node service whose every call is authenticated, then authorized.

    Args:
        verifier: Checks the caller's node signature and join token.
        authorize: Admits or refuses an authenticated caller (raises a ShoalError).

    """

    def __init__(
        self, verifier: CallVerifier, authorize: Callable[[Caller], Awaitable[None]]
    ) -> None:
        self._verifier = verifier
        self._authorize = authorize

    async def _admit(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, request: Message
    ) -> None:
        """Return once the caller of ``method`` is who it says and may call it; else abort."""
        caller = await authenticate(self._verifier, context, method, request)
        try:
            await self._authorize(caller)
        except ShoalError as exc:
            await abort_with(context, exc)
        authenticated(caller.name)  # a traced call's span opens now, not before


async def serve_grpc(
    address: str,
    handlers: Sequence[grpc.GenericRpcHandler],
    *,
    grace: float = 2.0,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handlers`` on ``address`` until cancelled; report the bound port.

    Raises:
        Unavailable: the address cannot be bound (taken, or not on this host).
    """
    server = grpc.aio.server(options=_SERVER_OPTIONS, interceptors=[TracingInterceptor()])
    server.add_generic_rpc_handlers(tuple(handlers))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise _cannot_listen(address, str(exc)) from None
    await server.start()
    try:
        task_status.started(port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(grace)


def check_listenable(address: str) -> None:
    """Refuse early if gRPC could not listen on ``address`` now (``host:port``).

    A node checks this before it joins gossip, so that a taken port does not
    show the others a member that dies a moment later. (gRPC itself binds
    only when serving starts, which may be some seconds later: a process
    taking the port meanwhile is still caught then.)

    Raises:
        Unavailable: the port is taken, or the host is not an address of this machine.
    """
    host, port = split_host_port(address, field="--grpc-addr")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise _cannot_listen(address, exc.strerror or str(exc)) from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise _cannot_listen(address, exc.strerror or str(exc)) from None


def _cannot_listen(address: str, why: str) -> Unavailable:
    return Unavailable(
        f"cannot listen for node-to-node gRPC on {address} ({why}): choose a free "
        "address with --grpc-addr",
        address=address,
    )
