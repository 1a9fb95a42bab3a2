"""Typed access to the state store: key layout, encoding, CAS updates, events.

Key layout (values are JSON)::

    /workloads/{namespace}/{name}   Workload
    /instances/{namespace}/{name}   Instance
    /nodes/{name}                   Node
    /events/{micros}-{seq}-{random} Event, ordered by time

A node's ``heartbeat_at`` changes every 10 s; no pass of the leader's
loops needs to run for it (the membership sync times silence on its resync
timer): :func:`only_heartbeat` tells them which changes to sleep through.

Every write that depends on what was read is a compare-and-swap on the
key's ``mod_revision``; a lost race raises :class:`RevisionConflict` and the
caller re-reads. :meth:`Repository.update` wraps that loop for single keys.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from shoal.interfaces import (
    Actor,
    Clock,
    Event,
    EventKind,
    EventType,
    Instance,
    Node,
    NotFound,
    ObjectRef,
    PutOp,
    RevisionConflict,
    StateStore,
    WatchEvent,
    Workload,
)

__all__ = [
    "EVENTS",
    "INSTANCES",
    "NODES",
    "WORKLOADS",
    "Repository",
    "Stored",
    "instance_key",
    "node_key",
    "only_heartbeat",
    "workload_key",
]

WORKLOADS = "/workloads/"
INSTANCES = "/instances/"
NODES = "/nodes/"
EVENTS = "/events/"

M = TypeVar("M", bound=BaseModel)
_SEQUENCE = itertools.count()


def workload_key(namespace: str, name: str) -> str:
    """Return the store key of a workload."""
    return f"{WORKLOADS}{namespace}/{name}"


def instance_key(namespace: str, name: str) -> str:
    """Return the store key of an instance."""
    return f"{INSTANCES}{namespace}/{name}"


def node_key(name: str) -> str:
    """Return the store key of a node."""
    return f"{NODES}{name}"


@dataclass(frozen=True, slots=True)
class Stored(Generic[M]):
    """A decoded value with the revisions a CAS write needs."""

    value: M
    key: str
    revision: int
    """The key's mod_revision when read."""
    created: int
    """The key's create_revision: orders objects by creation."""


class Repository:
    """The store as Shoal's objects."""

    def __init__(self, store: StateStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def _get(self, key: str, model: type[M]) -> Stored[M] | None:
        kv = await self.store.get(key)
        if kv is None:
            return None
        return Stored(model.model_validate_json(kv.value), key, kv.mod_revision, kv.create_revision)

    async def _list(self, prefix: str, model: type[M]) -> list[Stored[M]]:
        result = await self.store.list(prefix)
        return [
            Stored(model.model_validate_json(kv.value), kv.key, kv.mod_revision, kv.create_revision)
            for kv in result.items
        ]

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
        return await self.store.put(
            key, value.model_dump_json().encode(), expected_revision=expected_revision
        )

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
        now = self.clock.now()
        micros = int(now.timestamp() * 1_000_000)
        return Event(
            # Time orders events across processes; the counter orders those of one
            # process within one microsecond (or under a clock that stands still).
            id=f"{micros:017d}-{next(_SEQUENCE):09d}-{secrets.token_hex(2)}",
            time=now,
            type=event_type,
            object=obj,
            reason=reason,
            message=message,
            actor=actor,
            details=details or {},
        )

    @staticmethod
    def event_op(event: Event) -> PutOp:
        """Return the transaction operation that stores ``event``."""
        return PutOp(f"{EVENTS}{event.id}", event.model_dump_json().encode())

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
        await self.put(f"{EVENTS}{event.id}", event)
        return event

    async def list_events(self) -> list[Event]:
        """Return every stored event, oldest first."""
        return [stored.value for stored in await self._list(EVENTS, Event)]

    async def prune_events(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; return how many were deleted."""
        result = await self.store.list(EVENTS)
        excess = result.items[: max(len(result.items) - keep, 0)]
        for kv in excess:
            await self.store.delete(kv.key)
        return len(excess)


def only_heartbeat(event: WatchEvent) -> bool:
    """Return whether ``event`` changed nothing of a node record but its ``heartbeat_at``.

    False whenever it cannot tell (a delete, no previous value, not JSON).
    """
    if (
        event.kind is not EventKind.PUT
        or event.prev_value is None
        or not event.kv.key.startswith(NODES)
    ):
        return False
    try:
        before, after = json.loads(event.prev_value), json.loads(event.kv.value)
    except ValueError:
        return False
    if not isinstance(before, dict) or not isinstance(after, dict):
        return False
    before.pop("heartbeat_at", None)
    after.pop("heartbeat_at", None)
    return bool(before == after)
