"""What a worker may do through the State service: the policy, without I/O.

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
                                                  filed under its object,
                                                  at most 600 a minute
    /configmaps/...,  if an instance -            -                              -
    /secrets/...      assigned to it
                      uses it
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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from shoal.interfaces import (
    CONFIGMAPS,
    EVENTS,
    INSTANCE_STATUS_FIELDS,
    INSTANCES,
    NODE_CLUSTER_FIELDS,
    NODES,
    SECRETS,
    Event,
    EventKind,
    Forbidden,
    Instance,
    InvalidInput,
    KeyValue,
    Node,
    RevisionConflict,
    Unauthenticated,
    WatchEvent,
    event_key,
)

from ._nodeauth import Caller

__all__ = [
    "EVENTS",
    "EVENTS_PER_MINUTE",
    "INSTANCES",
    "INSTANCE_STATUS_FIELDS",
    "NODES",
    "NODE_CLUSTER_FIELDS",
    "WorkerScope",
    "Write",
    "is_config_key",
    "parse_document",
]


# Events one node may record per minute: far above what a node loop reports
# (an event per instance change), low enough that a node cannot flood the store.
EVENTS_PER_MINUTE = 600

M = TypeVar("M", bound=BaseModel)


def parse_document(key: str, value: bytes, model: type[M]) -> M:
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


def is_config_key(key: str) -> bool:
    """Whether ``key`` is a ConfigMap's or a Secret's."""
    return key.startswith((CONFIGMAPS, SECRETS))


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

    def check_config_get(self, key: str, instances: Iterable[bytes]) -> None:
        """Allow a Get of a ConfigMap or Secret only if one of ``instances`` uses it.

        ``instances`` are the documents of the instances assigned to the caller,
        so a worker receives only the configuration its own pods reference.

        Raises:
            Forbidden: no instance of the caller uses it, or the key is not one.
        """
        kind = "ConfigMap" if key.startswith(CONFIGMAPS) else "Secret"
        parts = key.split("/")
        namespace, name = (parts[2], parts[3]) if len(parts) == 4 else ("", "")
        if not namespace or not name:
            raise self._outside("read", key)
        for value in instances:
            if not _assigned_to(value, self.caller.name):
                continue
            instance = Instance.model_validate_json(value)
            if instance.namespace == namespace and (kind, name) in instance.template.config_refs():
                return
        raise Forbidden(
            f"node {self.caller.name!r} runs no instance that uses {kind} {namespace}/{name}: "
            "a node reads only the configuration of its own pods",
            key=key,
        )

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
            event = parse_document(key, value, Event)
            about = event.object
            filed = event_key(about.kind, about.namespace, about.name, event.id)
            if key != filed:
                raise Forbidden(
                    f"an event is filed under its object and id: {key} should be {filed}",
                    key=key,
                )
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
        node = parse_document(key, value, Node)
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
        stored = parse_document(key, current.value, Node)
        kept = node.model_copy(update={f: getattr(stored, f) for f in NODE_CLUSTER_FIELDS})
        return Write(value if kept == node else kept.model_dump_json().encode(), expected_revision)

    def _check_status_report(
        self, key: str, value: bytes, expected_revision: int | None, current: KeyValue | None
    ) -> None:
        name = self.caller.name
        replaced = self._assigned_current("write", key, expected_revision, current)
        new = parse_document(key, value, Instance)
        old = parse_document(key, replaced.value, Instance)
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
