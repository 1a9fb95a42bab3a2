"""Typed access to the state store: key layout, encoding, CAS updates, events.

The key layout is a contract with the worker scope, so it lives in
:mod:`shoal.interfaces._layout` (values are JSON)::

    /workloads/{namespace}/{name}                      Workload
    /instances/{namespace}/{name}                      Instance
    /nodes/{name}                                      Node
    /events/{kind}/{namespace|-}/{name}/{micros}-{seq}-{random}
                                                       Event, under its object, by time

Events are read per object (or per kind), and pruned by count and age from
their keys alone.

A node's ``heartbeat_at`` changes every 10 s; no pass of the leader's
loops needs to run for it (the membership sync times silence on its resync
timer): :func:`only_heartbeat` tells them which changes to sleep through.

Every write that depends on what was read is a compare-and-swap on the
key's ``mod_revision``; a lost race raises :class:`RevisionConflict` and the
caller re-reads. :meth:`Repository.update` wraps that loop for single keys.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from shoal.interfaces import (
    EVENTS,
    INSTANCES,
    MAX_EVENT_BYTES,
    NODES,
    WORKLOADS,
    Actor,
    Clock,
    DeleteOp,
    Event,
    EventKind,
    EventType,
    Instance,
    KeyValue,
    Node,
    NotFound,
    ObjectRef,
    PutOp,
    RevisionConflict,
    StateStore,
    WatchEvent,
    Workload,
    event_id_of,
    event_key,
    event_prefix,
    instance_key,
    node_key,
    workload_key,
)

from ._tracing import origin_trace_id

__all__ = [
    "EVENTS",
    "INSTANCES",
    "NODES",
    "WORKLOADS",
    "Repository",
    "Stored",
    "decoder_of",
    "event_store_key",
    "heartbeat_only",
    "instance_key",
    "new_event",
    "node_key",
    "only_heartbeat",
    "workload_key",
]


M = TypeVar("M", bound=BaseModel)
_SEQUENCE = itertools.count()


@dataclass(frozen=True, slots=True)
class Stored(Generic[M]):
    """A decoded value with the revisions a CAS write needs."""

    value: M
    key: str
    revision: int
    """The key's mod_revision when read."""
    created: int
    """The key's create_revision: orders objects by creation."""


def decoder_of(model: type[M]) -> Callable[[KeyValue], Stored[M]]:
    """Return a decoder of ``model`` records with their revisions (for an informer)."""

    def decode(kv: KeyValue) -> Stored[M]:
        return Stored(
            model.model_validate_json(kv.value), kv.key, kv.mod_revision, kv.create_revision
        )

    return decode


class Repository:
    """The store as Shoal's objects."""

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        *,
        on_write: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_write = on_write
        """Called with ``(key, revision)`` after each put or delete through this repository."""

    async def _get(self, key: str, model: type[M]) -> Stored[M] | None:
        kv = await self.store.get(key)
        return None if kv is None else decoder_of(model)(kv)

    async def _list(self, prefix: str, model: type[M]) -> list[Stored[M]]:
        decode = decoder_of(model)
        return [decode(kv) for kv in (await self.store.list(prefix)).items]

    async def get_workload(self, namespace: str, name: str) -> Stored[Workload] | None:
        """Return a workload, or None."""
        return await self._get(workload_key(namespace, name), Workload)

    async def list_workloads(self, namespace: str | None = None) -> list[Stored[Workload]]:
        """Return workloads of one namespace, or all."""
        prefix = WORKLOADS if namespace is None else f"{WORKLOADS}{namespace}/"
        return await self._list(prefix, Workload)

    async def get_instance(self, namespace: str, name: str) -> Stored[Instance] | None:
        """Return an instance, or None."""
        return await self._get(instance_key(namespace, name), Instance)

    async def list_instances(self, namespace: str | None = None) -> list[Stored[Instance]]:
        """Return instances of one namespace, or all."""
        prefix = INSTANCES if namespace is None else f"{INSTANCES}{namespace}/"
        return await self._list(prefix, Instance)

    async def get_node(self, name: str) -> Stored[Node] | None:
        """Return a node, or None."""
        return await self._get(node_key(name), Node)

    async def list_nodes(self) -> list[Stored[Node]]:
        """Return every node."""
        return await self._list(NODES, Node)

    async def put(self, key: str, value: BaseModel, expected_revision: int | None = None) -> int:
        """Write ``value`` (CAS when ``expected_revision`` is given); return the revision."""
        revision = await self.store.put(
            key, value.model_dump_json().encode(), expected_revision=expected_revision
        )
        if self.on_write is not None:
            self.on_write(key, revision)
        return revision

    async def delete(self, key: str, expected_revision: int | None = None) -> int | None:
        """Delete ``key`` (CAS when ``expected_revision`` is given); return the revision or None."""
        revision = await self.store.delete(key, expected_revision=expected_revision)
        if revision is not None and self.on_write is not None:
            self.on_write(key, revision)
        return revision

    async def update(
        self,
        key: str,
        model: type[M],
        change: Callable[[M], M | None],
        *,
        attempts: int = 20,
    ) -> M:
        """Read-modify-write one key with CAS, retrying lost races.

        ``change`` returns the new value, or None to leave the key as it is.

        Raises:
            NotFound: the key does not exist.
            RevisionConflict: still racing after ``attempts`` tries.
        """
        for _ in range(attempts):
            current = await self._get(key, model)
            if current is None:
                raise NotFound(f"{key} does not exist", key=key)
            updated = change(current.value)
            if updated is None or updated == current.value:
                return current.value
            try:
                await self.put(key, updated, expected_revision=current.revision)
            except RevisionConflict:
                continue
            return updated
        raise RevisionConflict(f"{key} kept changing; try again", key=key)

    def new_event(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        actor: Actor,
        *,
        event_type: EventType = EventType.NORMAL,
        details: dict[str, str] | None = None,
    ) -> Event:
        """Build an event stamped with this repository's clock (not yet stored)."""
        return new_event(
            self.clock, obj, reason, message, actor, event_type=event_type, details=details
        )

    @staticmethod
    def event_op(event: Event) -> PutOp:
        """Return the transaction operation that stores ``event``, filed under its object."""
        return PutOp(event_store_key(event), event.model_dump_json().encode())

    async def record(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        actor: Actor,
        *,
        event_type: EventType = EventType.NORMAL,
        details: dict[str, str] | None = None,
    ) -> Event:
        """Persist an event and return it."""
        event = self.new_event(obj, reason, message, actor, event_type=event_type, details=details)
        await self.put(event_store_key(event), event)
        return event

    async def list_events(
        self, kind: str | None = None, namespace: str | None = None, name: str | None = None
    ) -> list[Event]:
        """Return the events about one object (or of one kind, or all), oldest first.

        Reads only the object's (or the kind's) prefix, never every event. With
        ``kind`` and ``name`` but no ``namespace``, the kind's events of that name
        in any namespace.
        """
        exact = name is not None and (
            namespace is not None or (kind or "").lower() in _UNNAMESPACED_KINDS
        )
        prefix = event_prefix(kind, namespace, name if exact else None)
        result = await self.store.list(prefix)
        events = []
        for kv in sorted(result.items, key=lambda kv: event_id_of(kv.key)):
            event = Event.model_validate_json(kv.value)
            if name is None or event.object.name == name:
                events.append(event)
        return events

    async def prune_events(self, keep: int, max_age: float | None = None) -> int:
        """Delete all but the newest ``keep`` events, and any older than ``max_age`` s.

        Decides from the keys' event ids alone (they start with the time),
        decoding no event; deletes in transactions of up to :data:`DELETE_BATCH` keys.
        Returns how many were deleted.
        """
        result = await self.store.list(EVENTS)
        keys = sorted((kv.key for kv in result.items), key=event_id_of)
        doomed = keys[: max(len(keys) - keep, 0)]
        if max_age is not None:
            cutoff = int((self.clock.now().timestamp() - max_age) * 1_000_000)
            doomed += [k for k in keys[len(doomed) :] if _micros(event_id_of(k)) < cutoff]
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start : start + DELETE_BATCH]
            await self.store.txn([], [DeleteOp(key) for key in batch])
        return len(doomed)


def new_event(
    clock: Clock,
    obj: ObjectRef,
    reason: str,
    message: str,
    actor: Actor,
    *,
    event_type: EventType = EventType.NORMAL,
    details: dict[str, str] | None = None,
) -> Event:
    """Build an event stamped with ``clock`` (not yet stored).

    It carries the trace id of the request the current work serves (see
    :func:`~._tracing.origin_trace_id`).
    """
    now = clock.now()
    micros = int(now.timestamp() * 1_000_000)
    event = Event(
        # Time orders events across processes; the counter orders those of one
        # process within one microsecond (or under a clock that stands still).
        id=f"{micros:017d}-{next(_SEQUENCE):09d}-{secrets.token_hex(2)}",
        time=now,
        type=event_type,
        object=obj,
        reason=reason,
        # Long output (a runtime's error) is cut: an event says what happened.
        message=message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…",
        actor=actor,
        details=details or {},
        trace_id=origin_trace_id(),
    )
    if len(message) > MAX_MESSAGE // 4:  # wide characters or escapes may still be too many bytes
        while len(event.model_dump_json().encode()) > MAX_EVENT_BYTES and event.message:
            shorter = event.message[: len(event.message) // 2]
            event = event.model_copy(update={"message": shorter + "…" if shorter else ""})
    return event


MAX_MESSAGE = 4096
"""The longest event message kept (in characters); the rest is cut, and more while the event
is over :data:`~shoal.interfaces.MAX_EVENT_BYTES` as JSON (what a server takes from a worker)."""

DELETE_BATCH = 128
"""Most keys one pruning transaction deletes."""

_UNNAMESPACED_KINDS = frozenset({"node", "key", "cluster"})
"""Kinds of objects without a namespace: their events are filed under ``-``."""


def event_store_key(event: Event) -> str:
    """Return the key ``event`` is stored at: under the object it is about."""
    obj = event.object
    return event_key(obj.kind, obj.namespace, obj.name, event.id)


def _micros(event_id: str) -> int:
    """Return the time (µs since the epoch) an event id starts with; 0 if it has none."""
    head = event_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def only_heartbeat(event: WatchEvent) -> bool:
    """Return whether ``event`` changed nothing of a node record but its ``heartbeat_at``.

    False whenever it cannot tell (a delete, no previous value, not a node record).
    """
    if (
        event.kind is not EventKind.PUT
        or event.prev_value is None
        or not event.kv.key.startswith(NODES)
    ):
        return False
    try:
        before = Node.model_validate_json(event.prev_value)
        after = Node.model_validate_json(event.kv.value)
    except ValueError:
        return False
    return heartbeat_only(before, after)


def heartbeat_only(before: Node, after: Node) -> bool:
    """Return whether ``after`` differs from ``before`` in ``heartbeat_at`` alone, if at all."""
    return before.model_copy(update={"heartbeat_at": None}) == after.model_copy(
        update={"heartbeat_at": None}
    )
