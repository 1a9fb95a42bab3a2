"""A node's view of the cluster state over a local store: the NodeState of a server or one machine.

A worker keeps no store and reaches its view through a server
(``shoal.cluster.RemoteNodeState``); a node that keeps the store itself (a
server that also runs instances, or ``shoal agent`` alone) uses
:class:`LocalNodeState`, which answers the same calls from it. It trusts its
node loop — it runs in the same process as the store — so it does not check
what a server checks of a worker; it checks only that reports are about
this node's instances.

Its assignment stream is the store's watch of ``/instances/`` filtered to this
node: each change is decoded as far as its ``node`` only, and an instance
that moves away is sent as a key-only delete, as a server sends it to a worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from shoal.interfaces import (
    INSTANCES,
    POD_CONFIG_KINDS,
    ConfigMapSpec,
    Event,
    EventKind,
    Forbidden,
    Instance,
    InvalidInput,
    KeyValue,
    ListResult,
    Node,
    NotFound,
    RevisionConflict,
    SecretSpec,
    StateStore,
    WatchEvent,
    instance_key,
    node_key,
)

from ._configs import read_used_config
from ._repo import event_store_key

__all__ = ["LocalNodeState"]

_ATTEMPTS = 20
"""Tries of a read-modify-write of the node record before a RevisionConflict stands."""


class _Placement(BaseModel):
    """The one field of an Instance document the filter needs (the rest is skipped)."""

    model_config = ConfigDict(extra="ignore")
    node: str | None = None


def _node_of(value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        return _Placement.model_validate_json(value).node
    except ValidationError:
        return None


class LocalNodeState:
    """The :class:`~shoal.interfaces.NodeState` of node ``name``, over ``store``.

    Args:
        store: The cluster's store, which this process keeps (or reaches itself).
        name: The node's name.
    """

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name
        self._mine: set[str] = set()
        """Keys of the instances last seen on this node: a PUT elsewhere removes one."""

    def __repr__(self) -> str:
        return f"LocalNodeState(node={self.name!r})"

    async def register(self, node: Node) -> bool:
        """Create this node's record, or refresh it keeping cordoned, draining and state."""
        self._check_own(node)
        key = node_key(node.name)
        for _ in range(_ATTEMPTS):
            kv = await self.store.get(key)
            try:
                if kv is None:
                    await self.store.put(key, node.model_dump_json().encode(), expected_revision=0)
                    return True
                current = Node.model_validate_json(kv.value)
                kept = node.model_copy(
                    update={
                        "cordoned": current.cordoned,
                        "draining": current.draining,
                        "state": current.state,
                    }
                )
                if kept != current:
                    await self.store.put(
                        key, kept.model_dump_json().encode(), expected_revision=kv.mod_revision
                    )
                return False
            except RevisionConflict:
                continue
        raise RevisionConflict(f"{key} kept changing; try again", key=key)

    async def heartbeat(self, at: datetime) -> None:
        """Set ``heartbeat_at`` of this node's record."""
        key = node_key(self.name)
        for _ in range(_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None:
                raise NotFound(f"{key} does not exist: node {self.name} registers first", key=key)
            beat = Node.model_validate_json(kv.value).model_copy(update={"heartbeat_at": at})
            try:
                await self.store.put(
                    key, beat.model_dump_json().encode(), expected_revision=kv.mod_revision
                )
            except RevisionConflict:
                continue
            return
        raise RevisionConflict(f"{key} kept changing; try again", key=key)

    async def assignments(self) -> ListResult:
        """Return the instances placed on this node, at the store's revision."""
        listed = await self.store.list(INSTANCES)
        mine = [kv for kv in listed.items if _node_of(kv.value) == self.name]
        self._mine = {kv.key for kv in mine}
        return ListResult(mine, listed.revision)

    async def watch_assignments(self, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Yield this node's instance changes from ``start_revision``; key-only deletes."""
        async for event in self.store.watch(INSTANCES, start_revision):
            key = event.kv.key
            if event.kind == EventKind.PUT and _node_of(event.kv.value) == self.name:
                self._mine.add(key)
                yield WatchEvent(EventKind.PUT, event.kv)
                continue
            was_mine = key in self._mine or _node_of(event.prev_value) == self.name
            unknown = event.kind == EventKind.DELETE and event.prev_value is None
            if was_mine or unknown:
                self._mine.discard(key)
                yield WatchEvent(EventKind.DELETE, KeyValue(key, b"", 0, event.kv.mod_revision, 0))

    async def report(self, instance: Instance, expected_revision: int) -> int:
        """Write ``instance`` (its node loop changed only its status) with compare-and-swap."""
        self._check_placed(instance)
        return await self.store.put(
            instance_key(instance.namespace, instance.name),
            instance.model_dump_json().encode(),
            expected_revision=expected_revision,
        )

    async def remove(self, instance: Instance, expected_revision: int) -> int | None:
        """Delete the record of ``instance`` with compare-and-swap."""
        self._check_placed(instance)
        return await self.store.delete(
            instance_key(instance.namespace, instance.name), expected_revision=expected_revision
        )

    async def record(self, event: Event) -> None:
        """Store ``event`` under its object."""
        await self.store.put(event_store_key(event), event.model_dump_json().encode())

    async def config(
        self, kind: str, namespace: str, name: str
    ) -> ConfigMapSpec | SecretSpec | None:
        """Return a ConfigMap's or Secret's spec, or None when it does not exist."""
        if kind not in POD_CONFIG_KINDS:
            raise InvalidInput(
                f"a pod uses ConfigMaps and Secrets, not {kind!r}", kind=kind, name=name
            )
        return await read_used_config(self.store, kind, namespace, name)

    def _check_own(self, node: Node) -> None:
        if node.name != self.name:
            raise Forbidden(
                f"the node state of {self.name!r} keeps that node's record only, not {node.name!r}",
                node=self.name,
            )

    def _check_placed(self, instance: Instance) -> None:
        if instance.node != self.name:
            raise Forbidden(
                f"instance {instance.key} is placed on {instance.node!r}, not on node "
                f"{self.name!r}: a node reports only the instances placed on it",
                node=self.name,
            )
