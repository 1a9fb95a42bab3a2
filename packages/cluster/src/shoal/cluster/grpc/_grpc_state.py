"""The State service: a worker's scoped view of the cluster state, served by servers.

Workers keep no store. Their node loop runs against a
:class:`~shoal.cluster.RemoteStore` that calls this service on a server, and
:class:`StateGateway` answers from the server's own store, within the
caller's scope only: :class:`~shoal.cluster.grpc._worker_scope.WorkerScope` decides
per call (its module has the table of what a worker may do). The gateway adds
what needs state across calls: reading the caller's node record, the event
rate cap per node, and the filtered Watch stream.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from shoal.interfaces import (
    EventKind,
    Forbidden,
    InternalError,
    KeyValue,
    Node,
    ShoalError,
    StateStore,
)

from ._assignments import Assignments
from ._grpc_base import PACKAGE, authenticate
from ._grpc_errors import abort_with
from ._nodeauth import CallVerifier
from ._pb import shoal_node_pb2 as pb
from ._worker_scope import (
    EVENTS,
    EVENTS_PER_MINUTE,
    INSTANCES,
    NODES,
    WorkerScope,
    is_config_key,
    parse_document,
)

__all__ = ["SERVICE", "StateGateway"]

SERVICE = f"{PACKAGE}.State"

log = logging.getLogger(__name__)

Request = TypeVar("Request", bound=Message)
Reply = TypeVar("Reply", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]

_KINDS = {EventKind.PUT: pb.WatchEvent.PUT, EventKind.DELETE: pb.WatchEvent.DELETE}


class StateGateway:
    """Serves ``shoal.cluster.v1.State`` from ``store`` to the nodes ``verifier`` admits.

    Every call is authenticated, then checked by a
    :class:`~shoal.cluster.grpc._worker_scope.WorkerScope`; store
    errors (RevisionConflict, Unavailable, Compacted, ...) reach the caller as
    the same ShoalError class.

    Args:
        store: The server's store.
        verifier: Checks the join token and signature of every call.
        events_per_minute: How many events one node may record in any 60 s;
            beyond that its event writes are Forbidden until the window moves on.
        monotonic: The time source of that window.
        assignments: Per-node streams of the instances (run by the caller):
            a worker's list and watch of ``/instances/`` are answered from
            them while they follow the store, so a change costs one decode
            whoever is connected; without them, or while they list again,
            from the store, filtered per worker.
    """

    def __init__(
        self,
        store: StateStore,
        verifier: CallVerifier,
        *,
        events_per_minute: int = EVENTS_PER_MINUTE,
        monotonic: Callable[[], float] = time.monotonic,
        assignments: Assignments | None = None,
    ) -> None:
        self._store = store
        self._assignments = assignments
        self._verifier = verifier
        self._events_per_minute = events_per_minute
        self._monotonic = monotonic
        self._recorded: dict[str, deque[float]] = {}
        """Node name → when its last (up to ``events_per_minute``) events were allowed."""

    def handler(self) -> grpc.GenericRpcHandler:
        """Return the generic handler to pass to :func:`~shoal.cluster.serve_grpc`."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Get": self._unary("Get", pb.GetRequest, pb.GetReply, self._get),
                "List": self._unary("List", pb.ListRequest, pb.ListReply, self._list),
                "Put": self._unary("Put", pb.PutRequest, pb.PutReply, self._put),
                "Delete": self._unary("Delete", pb.DeleteRequest, pb.DeleteReply, self._delete),
                "Revision": self._unary(
                    "Revision", pb.RevisionRequest, pb.RevisionReply, self._revision
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self._watch,
                    request_deserializer=pb.WatchRequest.FromString,
                    response_serializer=pb.WatchEvent.SerializeToString,
                ),
            },
        )

    def _unary(
        self,
        name: str,
        request_type: type[Request],
        reply_type: type[Reply],
        serve: Callable[[WorkerScope, Request], Awaitable[Reply]],
    ) -> grpc.RpcMethodHandler[Request, Reply]:
        async def behavior(request: Request, context: Context) -> Reply:
            scope = await self._scope(context, name, request)
            try:
                return await serve(scope, request)
            except ShoalError as exc:
                await abort_with(context, exc)
            except Exception as exc:
                log.exception("State/%s from %s failed", name, scope.caller.name)
                await abort_with(context, InternalError(f"the server failed {name}: {exc!r}"))

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=request_type.FromString,
            response_serializer=reply_type.SerializeToString,
        )

    async def _scope(self, context: Context, name: str, request: Message) -> WorkerScope:
        """Authenticate the call, load the caller's identity and admit the call."""
        caller = await authenticate(self._verifier, context, f"/{SERVICE}/{name}", request)
        key = getattr(request, "key", "") or getattr(request, "prefix", "")
        try:
            record = None if name == "Revision" else await self._store.get(f"{NODES}{caller.name}")
            registered = (
                None if record is None else parse_document(record.key, record.value, Node).node_id
            )
            scope = WorkerScope(caller, registered)
            if name != "Revision":
                scope.admit(name, key)
        except ShoalError as exc:
            await abort_with(context, exc)
        return scope

    async def _get(self, scope: WorkerScope, request: pb.GetRequest) -> pb.GetReply:
        if is_config_key(request.key):
            scope.check_config_get(request.key, await self._instances_of(scope.caller.name))
            kv = await self._store.get(request.key)
            return pb.GetReply() if kv is None else pb.GetReply(kv=_kv(kv))
        filtered = scope.check_get(request.key)
        kv = await self._store.get(request.key)
        if kv is None or (filtered and not scope.sees(kv.value)):
            # An instance of another node reads as missing: a node cannot probe for them.
            return pb.GetReply()
        return pb.GetReply(kv=_kv(kv))

    async def _list(self, scope: WorkerScope, request: pb.ListRequest) -> pb.ListReply:
        scope.check_prefix(request.prefix)
        assignments = self._assignments_for(request.prefix)
        if assignments is not None:
            mine = assignments.list(scope.caller.name)
            return pb.ListReply(items=[_kv(kv) for kv in mine.items], revision=mine.revision)
        result = await self._store.list(request.prefix)
        items = [_kv(kv) for kv in result.items if scope.sees(kv.value)]
        return pb.ListReply(items=items, revision=result.revision)

    async def _instances_of(self, node: str) -> list[bytes]:
        """Return the documents of the instances assigned to ``node``."""
        assignments = self._assignments_for(INSTANCES)
        if assignments is not None:
            return [kv.value for kv in assignments.list(node).items]
        return [kv.value for kv in (await self._store.list(INSTANCES)).items]

    def _assignments_for(self, prefix: str) -> Assignments | None:
        """Return the per-node streams if they can answer for ``prefix`` now."""
        assignments = self._assignments
        if prefix != INSTANCES or assignments is None or not assignments.following:
            return None
        return assignments

    async def _put(self, scope: WorkerScope, request: pb.PutRequest) -> pb.PutReply:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        key = request.key
        needs_current = key.startswith(INSTANCES) or (
            key == scope.node_key and scope.registered_id is not None
        )
        current = await self._store.get(key) if needs_current else None
        write = scope.check_put(key, request.value, expected, current)
        if key.startswith(EVENTS):
            self._count_event(scope.caller.name)
        revision = await self._store.put(
            key, write.value, expected_revision=write.expected_revision
        )
        return pb.PutReply(revision=revision)

    def _count_event(self, node: str) -> None:
        """Admit one more event of ``node`` within the sliding minute, or refuse it."""
        now = self._monotonic()
        recent = self._recorded.setdefault(node, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= self._events_per_minute:
            raise Forbidden(
                f"node {node!r} records too many events: at most {self._events_per_minute} "
                "a minute; this one is dropped",
                node=node,
                limit=self._events_per_minute,
            )
        recent.append(now)

    async def _delete(self, scope: WorkerScope, request: pb.DeleteRequest) -> pb.DeleteReply:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        current = await self._store.get(request.key) if request.key.startswith(INSTANCES) else None
        scope.check_delete(request.key, expected, current)
        revision = await self._store.delete(request.key, expected_revision=expected)
        return pb.DeleteReply() if revision is None else pb.DeleteReply(revision=revision)

    async def _revision(self, scope: WorkerScope, request: pb.RevisionRequest) -> pb.RevisionReply:
        return pb.RevisionReply(revision=await self._store.revision())

    async def _watch(
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncIterator[pb.WatchEvent]:
        scope = await self._scope(context, "Watch", request)
        start = request.start_revision if request.HasField("start_revision") else None
        try:
            scope.check_prefix(request.prefix)
            assignments = self._assignments_for(request.prefix)
            if assignments is not None:
                async for event in assignments.watch(scope.caller.name, start):
                    yield pb.WatchEvent(kind=_KINDS[event.kind], kv=_kv(event.kv))
                return
            async for event in self._store.watch(request.prefix, start):
                forwarded = scope.forward(event)
                if forwarded is None:
                    continue
                yield pb.WatchEvent(kind=_KINDS[forwarded.kind], kv=_kv(forwarded.kv))
        except ShoalError as exc:
            await abort_with(context, exc)


def _kv(kv: KeyValue) -> pb.KeyValue:
    return pb.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
    )
