"""The NodeState service: what a worker's node loop needs of the cluster state, served by servers.

Workers keep no store. Their node loop runs against a
:class:`~shoal.cluster.RemoteNodeState` that calls this service on a server,
and :class:`NodeStateGateway` answers from the server's own store, checking
every call against the caller with a
:class:`~shoal.cluster.grpc._worker_scope.WorkerScope` (its module has the
table of what a worker may do). The gateway adds what needs state across
calls: reading the caller's node record, the event rate cap per node, and
the assignment streams.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from shoal.interfaces import (
    INSTANCES,
    EventKind,
    Forbidden,
    InternalError,
    InvalidInput,
    KeyValue,
    Node,
    NotFound,
    RevisionConflict,
    ShoalError,
    StateStore,
    config_key,
    instance_key,
    node_key,
)

from ._assignments import Assignments
from ._grpc_base import PACKAGE, authenticate
from ._grpc_errors import abort_with
from ._nodeauth import CallVerifier
from ._pb import shoal_node_pb2 as pb
from ._tracing import authenticated
from ._worker_scope import EVENTS_PER_MINUTE, WorkerScope, parse_document

__all__ = ["SERVICE", "NodeStateGateway"]

SERVICE = f"{PACKAGE}.NodeState"

log = logging.getLogger(__name__)

Request = TypeVar("Request", bound=Message)
Reply = TypeVar("Reply", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]

_KINDS = {EventKind.PUT: pb.AssignmentEvent.PUT, EventKind.DELETE: pb.AssignmentEvent.DELETE}
_ATTEMPTS = 20
"""Tries of a read-modify-write of a node record before a RevisionConflict stands."""


class NodeStateGateway:
    """Serves ``shoal.cluster.v1.NodeState`` from ``store`` to the nodes ``verifier`` admits.

    Every call is authenticated, then checked by a
    :class:`~shoal.cluster.grpc._worker_scope.WorkerScope`; store
    errors (RevisionConflict, Unavailable, Compacted, ...) reach the caller as
    the same ShoalError class.

    Args:
        store: The server's store.
        verifier: Checks the join token and signature of every call.
        events_per_minute: How many events one node may record in any 60 s;
            beyond that its events are Forbidden until the window moves on.
        monotonic: The time source of that window.
        assignments: Per-node streams of the instances (run by the caller):
            a worker's assignments, and whether its instances use a ConfigMap
            or Secret, are answered from them while they follow the store, so
            a change costs one decode whoever is connected; without them, or
            while they list again, from the store, filtered per worker.
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
        unary = self._unary
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Ping": unary("Ping", pb.PingRequest, pb.PingReply, self._ping),
                "Register": unary("Register", pb.RegisterRequest, pb.RegisterReply, self._register),
                "Heartbeat": unary(
                    "Heartbeat", pb.HeartbeatRequest, pb.HeartbeatReply, self._heartbeat
                ),
                "ListAssignments": unary(
                    "ListAssignments", pb.AssignmentsRequest, pb.AssignmentsReply, self._list
                ),
                "WatchAssignments": grpc.unary_stream_rpc_method_handler(
                    self._watch,
                    request_deserializer=pb.WatchAssignmentsRequest.FromString,
                    response_serializer=pb.AssignmentEvent.SerializeToString,
                ),
                "ReportInstance": unary(
                    "ReportInstance",
                    pb.ReportInstanceRequest,
                    pb.ReportInstanceReply,
                    self._report,
                ),
                "RemoveInstance": unary(
                    "RemoveInstance",
                    pb.RemoveInstanceRequest,
                    pb.RemoveInstanceReply,
                    self._remove,
                ),
                "RecordEvent": unary(
                    "RecordEvent", pb.RecordEventRequest, pb.RecordEventReply, self._record
                ),
                "GetConfig": unary(
                    "GetConfig", pb.GetConfigRequest, pb.GetConfigReply, self._config
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
                log.exception("NodeState/%s from %s failed", name, scope.caller.name)
                await abort_with(context, InternalError(f"the server failed {name}: {exc!r}"))

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=request_type.FromString,
            response_serializer=reply_type.SerializeToString,
        )

    async def _scope(self, context: Context, name: str, request: Message) -> WorkerScope:
        """Authenticate the call, load the caller's identity and admit the call."""
        caller = await authenticate(self._verifier, context, f"/{SERVICE}/{name}", request)
        if name == "Ping":
            authenticated(caller.name)
            return WorkerScope(caller, None)
        try:
            record = await self._store.get(node_key(caller.name))
            registered = (
                None if record is None else parse_document(record.key, record.value, Node).node_id
            )
            scope = WorkerScope(caller, registered)
            scope.admit(name)
        except ShoalError as exc:
            await abort_with(context, exc)
        authenticated(caller.name)  # a traced call's span opens once the node is who it says
        return scope

    async def _ping(self, scope: WorkerScope, request: pb.PingRequest) -> pb.PingReply:
        return pb.PingReply()

    async def _register(self, scope: WorkerScope, request: pb.RegisterRequest) -> pb.RegisterReply:
        key = scope.node_key
        for _ in range(_ATTEMPTS):
            current = await self._store.get(key)
            write = scope.check_register(request.node, current)
            if current is not None and current.value == write.value:
                return pb.RegisterReply(created=False)
            try:
                await self._store.put(key, write.value, expected_revision=write.expected_revision)
            except RevisionConflict:
                continue  # changed meanwhile: read it again (and whose it is now)
            return pb.RegisterReply(created=current is None)
        raise RevisionConflict(f"{key} kept changing; try again", key=key)

    async def _heartbeat(
        self, scope: WorkerScope, request: pb.HeartbeatRequest
    ) -> pb.HeartbeatReply:
        try:
            at = datetime.fromisoformat(request.at)
        except ValueError:
            raise InvalidInput(f"heartbeat time {request.at!r} is not an RFC 3339 time") from None
        key = scope.node_key
        for _ in range(_ATTEMPTS):
            current = await self._store.get(key)
            if current is None:
                raise NotFound(f"{key} does not exist: register first", key=key)
            node = parse_document(key, current.value, Node)
            beat = node.model_copy(update={"heartbeat_at": at}).model_dump_json().encode()
            try:
                await self._store.put(key, beat, expected_revision=current.mod_revision)
            except RevisionConflict:
                continue
            return pb.HeartbeatReply()
        raise RevisionConflict(f"{key} kept changing; try again", key=key)

    async def _list(
        self, scope: WorkerScope, request: pb.AssignmentsRequest
    ) -> pb.AssignmentsReply:
        assignments = self._following()
        if assignments is not None:
            mine = assignments.list(scope.caller.name)
            return pb.AssignmentsReply(items=[_kv(kv) for kv in mine.items], revision=mine.revision)
        result = await self._store.list(INSTANCES)
        items = [_kv(kv) for kv in result.items if scope.sees(kv.value)]
        return pb.AssignmentsReply(items=items, revision=result.revision)

    async def _watch(
        self, request: pb.WatchAssignmentsRequest, context: Context
    ) -> AsyncIterator[pb.AssignmentEvent]:
        scope = await self._scope(context, "WatchAssignments", request)
        start = request.from_revision or None
        try:
            assignments = self._following()
            if assignments is not None:
                async for event in assignments.watch(scope.caller.name, start):
                    yield pb.AssignmentEvent(kind=_KINDS[event.kind], kv=_kv(event.kv))
                return
            async for event in self._store.watch(INSTANCES, start):
                forwarded = scope.forward(event)
                if forwarded is not None:
                    yield pb.AssignmentEvent(kind=_KINDS[forwarded.kind], kv=_kv(forwarded.kv))
        except ShoalError as exc:
            await abort_with(context, exc)

    def _following(self) -> Assignments | None:
        """Return the per-node streams if they can answer now."""
        assignments = self._assignments
        if assignments is None or not assignments.following:
            return None
        return assignments

    async def _report(
        self, scope: WorkerScope, request: pb.ReportInstanceRequest
    ) -> pb.ReportInstanceReply:
        key = instance_key(request.namespace, request.name)
        current = await self._store.get(key)
        value = scope.check_report(
            key, request.uid, request.status, request.expected_revision, current
        )
        revision = await self._store.put(key, value, expected_revision=request.expected_revision)
        return pb.ReportInstanceReply(revision=revision)

    async def _remove(
        self, scope: WorkerScope, request: pb.RemoveInstanceRequest
    ) -> pb.RemoveInstanceReply:
        key = instance_key(request.namespace, request.name)
        current = await self._store.get(key)
        scope.check_remove(key, request.uid, request.expected_revision, current)
        revision = await self._store.delete(key, expected_revision=request.expected_revision)
        return (
            pb.RemoveInstanceReply()
            if revision is None
            else pb.RemoveInstanceReply(revision=revision)
        )

    async def _record(
        self, scope: WorkerScope, request: pb.RecordEventRequest
    ) -> pb.RecordEventReply:
        filed = scope.check_event(request.event)
        self._count_event(scope.caller.name)
        await self._store.put(filed.key, filed.value, expected_revision=0)
        return pb.RecordEventReply()

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

    async def _config(self, scope: WorkerScope, request: pb.GetConfigRequest) -> pb.GetConfigReply:
        kind, namespace, name = request.kind, request.namespace, request.name
        scope.check_config_name(kind, namespace, name)  # before looking for who uses it
        assignments = self._following()
        if assignments is not None:
            used = assignments.uses(scope.caller.name, kind, namespace, name)
        else:
            listed = await self._store.list(INSTANCES)
            used = scope.uses([kv.value for kv in listed.items], kind, namespace, name)
        scope.check_config(kind, namespace, name, used=used)
        kv = await self._store.get(config_key(kind, namespace, name))
        return pb.GetConfigReply() if kv is None else pb.GetConfigReply(value=kv.value)


def _kv(kv: KeyValue) -> pb.KeyValue:
    return pb.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
    )
