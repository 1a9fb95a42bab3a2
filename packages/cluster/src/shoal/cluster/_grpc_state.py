"""The State service: a worker's scoped view of the cluster state, served by servers.

Workers keep no store. Their node loop runs against a
:class:`~shoal.cluster.RemoteStore` that calls this service on a server, and
:class:`StateGateway` answers from the server's own store — within the
caller's scope only, decided per call by :class:`WorkerScope`::

    key or prefix     Get          List / Watch   Put                            Delete
    /nodes/{caller}   yes          -              create (registering); then     -
                                                  CAS, and the server keeps
                                                  cordoned, draining, state and
                                                  role as stored
    /instances/...    if assigned  assigned only  assigned, CAS, same uid, node  assigned, CAS
                                                  and key; status fields only
    /events/...       -            -              a new key, actor = caller,     -
                                                  at most 600 a minute
    Revision: any authenticated caller.     Everything else: Forbidden.

"Assigned" means the Instance document's ``node`` is the caller's name. The
caller's identity is checked first: its node record ``/nodes/{name}`` binds
the name to the key that registered it, so another key presenting that name
is refused, and a key that has not registered may only register.

A node reports; the control loop and the operator decide. So a node may
change only the :data:`INSTANCE_STATUS_FIELDS` of an instance placed on it
(anything else — what it runs, where, under which name — is refused, naming
the fields it tried to change), and when it rewrites its own node record the
server keeps :data:`NODE_CLUSTER_FIELDS` as stored: the write succeeds (the
node loop's heartbeat and re-registration keep working) but cannot uncordon,
undrain, revive or promote the node. Events are capped per node
(``events_per_minute`` of :class:`StateGateway`), so one node cannot flood
the store.

A worker's Watch of ``/instances/`` forwards PUT events of the instances
assigned to it, and DELETE events *key only* (an empty value, as every delete
has): deletes of instances that were assigned to the caller, deletes whose
previous value the store does not know, and a PUT that moves an instance
away from the caller — it left the worker's view, so for the worker it is
gone. Everything else under the prefix is left out, so a worker sees gaps in
the revisions it receives; it resumes after the last one it saw as usual.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from shoal.interfaces import (
    Event,
    EventKind,
    Forbidden,
    Instance,
    InternalError,
    InvalidInput,
    KeyValue,
    Node,
    RevisionConflict,
    ShoalError,
    StateStore,
    Unauthenticated,
    WatchEvent,
)

from ._grpc_base import PACKAGE, authenticate
from ._grpc_errors import abort_with
from ._nodeauth import Caller, CallVerifier
from ._pb import shoal_node_pb2 as pb

__all__ = [
    "EVENTS_PER_MINUTE",
    "INSTANCE_STATUS_FIELDS",
    "NODE_CLUSTER_FIELDS",
    "SERVICE",
    "StateGateway",
    "WorkerScope",
    "Write",
]

SERVICE = f"{PACKAGE}.State"

NODES = "/nodes/"
INSTANCES = "/instances/"
EVENTS = "/events/"

# What a node reports about an instance it runs (shoal.core._nodeloop, _probes):
# Instance.transition sets state, reason and message; the reports add ready,
# exit_code, container_ids, started_at and finished_at, and starting a pod clears
# not_before (the restart backoff it waited out). restart_count is status too,
# though the control loop is the one that counts. Everything else says what to
# run, where and as whom: the control loop's.
INSTANCE_STATUS_FIELDS = (
    "state",
    "reason",
    "message",
    "ready",
    "restart_count",
    "exit_code",
    "container_ids",
    "started_at",
    "finished_at",
    "not_before",
)

# Fields of a node record that are not the node's to say: cordon and drain are
# the operator's, the gossip state is written by the leader's membership sync,
# and the role is what the node registered as. A node rewriting its record gets
# them kept as stored.
NODE_CLUSTER_FIELDS = ("cordoned", "draining", "state", "role")

# Events one node may record per minute: far above what a node loop reports
# (an event per instance change), low enough that a node cannot flood the store.
EVENTS_PER_MINUTE = 600

log = logging.getLogger(__name__)

_KINDS = {EventKind.PUT: pb.WatchEvent.PUT, EventKind.DELETE: pb.WatchEvent.DELETE}

Request = TypeVar("Request", bound=Message)
Reply = TypeVar("Reply", bound=Message)
M = TypeVar("M", bound=BaseModel)
Context = grpc.aio.ServicerContext[Any, Any]


def _parse(key: str, value: bytes, model: type[M]) -> M:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise InvalidInput(
            f"the value written to {key} is not a valid {model.__name__} document "
            f"({where}: {first['msg']})",
            key=key,
        ) from None


def _assigned_to(value: bytes | None, node: str) -> bool:
    if value is None:
        return False
    try:
        return Instance.model_validate_json(value).node == node
    except ValidationError:
        return False


class Write(NamedTuple):
    """What an allowed Put writes: the value (maybe rewritten) and its expected revision."""

    value: bytes
    expected_revision: int | None


@dataclass(frozen=True)
class WorkerScope:
    """What one authenticated node may read and write: the whole policy, free of I/O.

    Args:
        caller: the authenticated caller.
        registered_id: ``node_id`` of the stored record ``/nodes/{caller.name}``,
            or None when the name has not registered.
    """

    caller: Caller
    registered_id: str | None

    @property
    def node_key(self) -> str:
        """The key of the caller's own node record."""
        return f"{NODES}{self.caller.name}"

    def admit(self, method: str, key: str) -> None:
        """Check that the caller is who its node record says, before anything else.

        Raises:
            Forbidden: the name is registered to another key.
            Unauthenticated: the name has not registered and the call is not
                its registration (Get or Put of its own node record).
        """
        name = self.caller.name
        if self.registered_id is None:
            if method in ("Get", "Put") and key == self.node_key:
                return
            raise Unauthenticated(
                f"unknown node key: node {name!r} has not registered (no {self.node_key}); "
                "its node loop registers it first — start the node, then retry",
                node=name,
                node_id=self.caller.node_id,
            )
        if self.registered_id != self.caller.node_id:
            raise Forbidden(
                f"node name {name!r} is registered to another key "
                f"(id {self.registered_id or 'none'}, this call's key has id "
                f"{self.caller.node_id}); a node keeps its identity in <data-dir>/node.key — "
                "restore it, or pick another --name",
                node=name,
                node_id=self.caller.node_id,
                registered_id=self.registered_id,
            )

    def check_get(self, key: str) -> bool:
        """Allow a Get of ``key``; return True when the value must pass :meth:`sees`.

        Raises:
            Forbidden: ``key`` is outside the caller's scope.
        """
        if key == self.node_key:
            return False
        if key.startswith(INSTANCES):
            return True
        raise self._outside("read", key)

    def check_prefix(self, prefix: str) -> None:
        """Allow a List or Watch of ``prefix`` (``/instances/`` or a prefix under it).

        Raises:
            Forbidden: any other prefix.
        """
        if not prefix.startswith(INSTANCES):
            raise self._outside("list or watch", prefix)

    def sees(self, value: bytes) -> bool:
        """Whether an Instance document is assigned to the caller."""
        return _assigned_to(value, self.caller.name)

    def check_put(
        self, key: str, value: bytes, expected_revision: int | None, current: KeyValue | None
    ) -> Write:
        """Allow a Put; return what to write and the ``expected_revision`` to write it with.

        ``current`` is the key's value now; it matters for instances and the
        caller's node record. Registering and recording an event always create
        the key (0). A registered node's rewrite of its own record keeps
        :data:`NODE_CLUSTER_FIELDS` as stored.

        Raises:
            InvalidInput: the value is not the document the key holds.
            RevisionConflict: an instance or the node record is not at ``expected_revision``.
            Forbidden: anything outside the caller's scope.
        """
        if key == self.node_key:
            return self._check_own_record(key, value, expected_revision, current)
        if key.startswith(INSTANCES):
            self._check_status_report(key, value, expected_revision, current)
            return Write(value, expected_revision)
        if key.startswith(EVENTS) and len(key) > len(EVENTS):
            if expected_revision not in (None, 0):
                raise Forbidden(
                    f"events are only ever created: {key} cannot be written at revision "
                    f"{expected_revision}",
                    key=key,
                )
            event = _parse(key, value, Event)
            if event.actor.id != self.caller.name:
                raise Forbidden(
                    f"node {self.caller.name!r} may only record events it did itself "
                    f"(actor.id {self.caller.name!r}), not as {event.actor.id!r}",
                    key=key,
                )
            return Write(value, 0)
        raise self._outside("write", key)

    def _check_own_record(
        self, key: str, value: bytes, expected_revision: int | None, current: KeyValue | None
    ) -> Write:
        node = _parse(key, value, Node)
        if node.name != self.caller.name or node.node_id != self.caller.node_id:
            raise Forbidden(
                f"{key} must hold this node's own record (name {self.caller.name!r}, "
                f"node_id {self.caller.node_id!r}), not name {node.name!r} and "
                f"node_id {node.node_id!r}",
                key=key,
            )
        if self.registered_id is None:
            # Registering creates the record: never overwrite one another key made meanwhile.
            return Write(value, 0)
        self._at_revision("update", key, expected_revision, current)
        if current is None:
            return Write(value, 0)  # removed since: writing it again registers anew
        stored = _parse(key, current.value, Node)
        kept = node.model_copy(update={f: getattr(stored, f) for f in NODE_CLUSTER_FIELDS})
        return Write(value if kept == node else kept.model_dump_json().encode(), expected_revision)

    def _check_status_report(
        self, key: str, value: bytes, expected_revision: int | None, current: KeyValue | None
    ) -> None:
        name = self.caller.name
        replaced = self._assigned_current("write", key, expected_revision, current)
        new = _parse(key, value, Instance)
        old = _parse(key, replaced.value, Instance)
        if new.node != name or new.uid != old.uid:
            raise Forbidden(
                f"node {name!r} may only report the status of {key} "
                f"(uid {old.uid}, on {name}); it may not move it to node "
                f"{new.node!r} or give it another uid ({new.uid})",
                key=key,
            )
        if old.model_copy(update={f: getattr(new, f) for f in INSTANCE_STATUS_FIELDS}) != new:
            changed = [
                field
                for field in Instance.model_fields
                if field not in INSTANCE_STATUS_FIELDS
                and getattr(old, field) != getattr(new, field)
            ]
            raise Forbidden(
                f"node {name!r} may only report the status of {key} "
                f"({', '.join(INSTANCE_STATUS_FIELDS)}); it tried to change "
                f"{', '.join(changed)}",
                key=key,
                fields=changed,
            )
        if f"{INSTANCES}{new.key}" != key:
            raise Forbidden(
                f"{key} holds the instance {key.removeprefix(INSTANCES)}, but the document "
                f"written to it is {new.key} (namespace/name): a node reports an instance "
                "under its own key only",
                key=key,
            )

    def check_delete(
        self, key: str, expected_revision: int | None, current: KeyValue | None
    ) -> None:
        """Allow a Delete of an instance assigned to the caller, at ``expected_revision``.

        Raises:
            RevisionConflict: the instance is not at ``expected_revision``.
            Forbidden: anything else.
        """
        if not key.startswith(INSTANCES):
            raise self._outside("delete", key)
        if current is None and expected_revision == 0:
            return  # deletes nothing, as the store would
        self._assigned_current("delete", key, expected_revision, current)

    def forward(self, event: WatchEvent) -> WatchEvent | None:
        """Return what the caller's watch gets of ``event``, or None (see the module doc)."""
        name = self.caller.name
        if event.kind == EventKind.PUT:
            if self.sees(event.kv.value):
                return WatchEvent(EventKind.PUT, event.kv)
            if not _assigned_to(event.prev_value, name):
                return None
        elif event.prev_value is not None and not _assigned_to(event.prev_value, name):
            return None
        tombstone = KeyValue(event.kv.key, b"", 0, event.kv.mod_revision, 0)
        return WatchEvent(EventKind.DELETE, tombstone)

    def _assigned_current(
        self, verb: str, key: str, expected_revision: int | None, current: KeyValue | None
    ) -> KeyValue:
        """Return ``current`` if the caller may ``verb`` it at ``expected_revision``."""
        self._at_revision(verb, key, expected_revision, current)
        if current is None:
            raise Forbidden(
                f"nodes do not create instances ({key}): the control loop places them",
                key=key,
            )
        if not self.sees(current.value):
            raise Forbidden(
                f"{key} is not assigned to node {self.caller.name!r}: a node may {verb} "
                "only the instances placed on it",
                key=key,
            )
        return current

    @staticmethod
    def _at_revision(
        verb: str, key: str, expected_revision: int | None, current: KeyValue | None
    ) -> None:
        """Require compare-and-swap, and that ``current`` is at ``expected_revision``."""
        if expected_revision is None:
            raise Forbidden(
                f"a node must {verb} {key} with compare-and-swap: pass expected_revision "
                "(the mod_revision it read)",
                key=key,
            )
        actual = 0 if current is None else current.mod_revision
        if actual != expected_revision:
            # The write could not succeed anyway: the node re-reads and then sees
            # what it is allowed to see.
            state = "does not exist" if current is None else f"is at revision {actual}"
            raise RevisionConflict(
                f"{key!r} {state}, not {expected_revision}", key=key, expected=expected_revision
            )

    def _outside(self, action: str, key: str) -> Forbidden:
        name = self.caller.name
        return Forbidden(
            f"node {name!r} may not {action} {key}: a node's scope is its own record "
            f"({self.node_key}), the status of the instances assigned to it "
            f"({INSTANCES}...) and new events ({EVENTS}...); everything else goes "
            "through a server",
            key=key,
            node=name,
        )


class StateGateway:
    """Serves ``shoal.cluster.v1.State`` from ``store`` to the nodes ``verifier`` admits.

    Every call is authenticated, then checked by a :class:`WorkerScope`; store
    errors (RevisionConflict, Unavailable, Compacted, ...) reach the caller as
    the same ShoalError class.

    Args:
        store: The server's store.
        verifier: Checks the join token and signature of every call.
        events_per_minute: How many events one node may record in any 60 s;
            beyond that its event writes are Forbidden until the window moves on.
        monotonic: The time source of that window.
    """

    def __init__(
        self,
        store: StateStore,
        verifier: CallVerifier,
        *,
        events_per_minute: int = EVENTS_PER_MINUTE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
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
            registered = None if record is None else _parse(record.key, record.value, Node).node_id
            scope = WorkerScope(caller, registered)
            if name != "Revision":
                scope.admit(name, key)
        except ShoalError as exc:
            await abort_with(context, exc)
        return scope

    async def _get(self, scope: WorkerScope, request: pb.GetRequest) -> pb.GetReply:
        filtered = scope.check_get(request.key)
        kv = await self._store.get(request.key)
        if kv is None or (filtered and not scope.sees(kv.value)):
            # An instance of another node reads as missing: a node cannot probe for them.
            return pb.GetReply()
        return pb.GetReply(kv=_kv(kv))

    async def _list(self, scope: WorkerScope, request: pb.ListRequest) -> pb.ListReply:
        scope.check_prefix(request.prefix)
        result = await self._store.list(request.prefix)
        items = [_kv(kv) for kv in result.items if scope.sees(kv.value)]
        return pb.ListReply(items=items, revision=result.revision)

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
