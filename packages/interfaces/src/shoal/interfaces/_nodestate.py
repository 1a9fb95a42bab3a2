"""The NodeState protocol: what a node loop needs of the cluster state, and all it may change.

A node loop runs the instances placed on its node and reports how they do.
It needs exactly this of the cluster state, and nothing more:

* its own node record: :meth:`NodeState.register` and :meth:`NodeState.heartbeat`;
* its assignments: :meth:`NodeState.assignments` lists the instance records
  placed on the node at a revision, :meth:`NodeState.watch_assignments`
  streams their changes from a revision on (an informer lists once, then
  follows; it lists again after :class:`~shoal.interfaces.Compacted`);
* status reports: :meth:`NodeState.report` writes an instance's
  :data:`~shoal.interfaces.INSTANCE_STATUS_FIELDS` with compare-and-swap,
  :meth:`NodeState.remove` deletes the record of an instance it tore down;
* :meth:`NodeState.record` stores an event it made;
* :meth:`NodeState.config` reads a ConfigMap or Secret one of its pods uses.

Two implementations: ``shoal.core.LocalNodeState`` over a StateStore (a
server that also runs instances, or one machine), and
``shoal.cluster.RemoteNodeState`` for a worker, which keeps no store: each
call is a typed, signed gRPC call of a server's ``NodeState`` service, which
checks it against the caller (its own record, its own instances, their
status fields only, its own events, capped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._config import ConfigMapSpec, SecretSpec
    from ._event import Event
    from ._instance import Instance
    from ._node import Node
    from ._store import ListResult, WatchEvent

__all__ = ["POD_CONFIG_KINDS", "NodeState"]

POD_CONFIG_KINDS = ("ConfigMap", "Secret")
"""The kinds of configuration a pod reads, so the kinds :meth:`NodeState.config` answers."""


@runtime_checkable
class NodeState(Protocol):
    """One node's view of the cluster state: its record, its assignments, its reports."""

    async def register(self, node: Node) -> bool:
        """Create this node's record, or refresh it keeping what the cluster decided.

        A refresh keeps the stored record's ``cordoned``, ``draining`` and
        gossip ``state`` (through a server also its ``role``: the
        :data:`~shoal.interfaces.NODE_CLUSTER_FIELDS`): restarting a node
        cannot uncordon, undrain or revive it.

        Returns:
            True when the record was created (the node joined), False when refreshed.

        Raises:
            Unauthenticated: the server refused this node's credentials.
            Forbidden: the name is registered to another key, or ``node`` is not this node.
            Unavailable: the state cannot be reached.
        """
        ...

    async def heartbeat(self, at: datetime) -> None:
        """Set ``heartbeat_at`` of this node's record to ``at``, keeping everything else.

        Raises:
            NotFound: the node has no record (register first).
            Unavailable: the state cannot be reached.
        """
        ...

    async def assignments(self) -> ListResult:
        """Return the records of the instances placed on this node, and the revision they reflect.

        Raises:
            Unavailable: the state cannot be reached.
        """
        ...

    def watch_assignments(self, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Yield the changes of this node's instances from ``start_revision`` on, in order.

        A PUT when an instance is placed on this node or changes there; a DELETE
        (key only, empty value) when one is deleted or moves away. Revisions of
        other nodes' changes are skipped, so the stream has gaps; resume after
        the last revision seen.

        Raises:
            Compacted: the changes from ``start_revision`` are no longer known: list again.
            Unavailable: the state cannot be reached, or the stream broke.
        """
        ...

    async def report(self, instance: Instance, expected_revision: int) -> int:
        """Write the status fields of ``instance`` to its record; return the new revision.

        Only :data:`~shoal.interfaces.INSTANCE_STATUS_FIELDS` are written; the
        record must be placed on this node, hold the same uid and be at
        ``expected_revision`` (its ``mod_revision`` when read).

        Raises:
            RevisionConflict: the record changed since (or is gone): read it again.
            Forbidden: the instance is not placed on this node, or the report
                changes more than its status.
            Unavailable: the state cannot be reached.
        """
        ...

    async def remove(self, instance: Instance, expected_revision: int) -> int | None:
        """Delete the record of an instance this node tore down; return the delete's revision.

        None when there was nothing to delete.

        Raises:
            RevisionConflict: the record changed since.
            Forbidden: the instance is not placed on this node.
            Unavailable: the state cannot be reached.
        """
        ...

    async def record(self, event: Event) -> None:
        """Store ``event``, which this node made (``actor.id`` is its name), under its object.

        Raises:
            Forbidden: the event is not this node's, or the node records too many.
            Unavailable: the state cannot be reached.
        """
        ...

    async def config(
        self, kind: str, namespace: str, name: str
    ) -> ConfigMapSpec | SecretSpec | None:
        """Return a ConfigMap's or Secret's spec that a pod of this node uses; None if missing.

        Raises:
            Forbidden: no instance placed on this node uses it.
            InvalidInput: ``kind`` is neither ConfigMap nor Secret.
            Unavailable: the state cannot be reached.
        """
        ...
