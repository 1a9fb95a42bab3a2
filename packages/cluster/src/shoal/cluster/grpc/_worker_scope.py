"""What a worker may do through the NodeState service: the policy, without I/O.

Workers keep no store. Their node loop reaches the cluster state through a
:class:`~shoal.cluster.RemoteNodeState`, whose every call is one typed call of
``shoal.cluster.v1.NodeState`` on a server; :class:`NodeStateGateway` answers
from the server's own store, checking each call against the caller with a
:class:`WorkerScope`::

    call               what the caller may do
    Register           create /nodes/{caller}, or refresh it: the server keeps
                       cordoned, draining, state and role as stored
    Heartbeat          set heartbeat_at of /nodes/{caller}
    ListAssignments,   the instances placed on the caller, nothing else
    WatchAssignments
    ReportInstance     the status fields of an instance placed on it, same
                       uid, compare-and-swap
    RemoveInstance     the record of an instance placed on it, same uid, CAS
    RecordEvent        a new event whose actor is the caller, filed under its
                       object by the server; at most 600 a minute
    GetConfig          a ConfigMap or Secret an instance placed on it uses
    Ping               any authenticated caller (checks the join token)

There is no key on the wire: the server derives every key from the caller's
name and the object named, so a worker cannot reach outside its scope.

"Placed on it" means the Instance document's ``node`` is the caller's name.
The caller's identity is checked first: its node record ``/nodes/{name}``
binds the name to the key that registered it, so another key presenting that
name is refused, and a key that has not registered may only register.

A node reports; the control loop and the operator decide. So a report
carries only the :data:`INSTANCE_STATUS_FIELDS` (naming any other field is
refused, listing the fields it tried to change), and when a node refreshes
its record the server keeps :data:`NODE_CLUSTER_FIELDS` as stored: the call
succeeds (the node loop's re-registration keeps working) but cannot
uncordon, undrain, revive or promote the node. Events are capped per node
(``events_per_minute`` of :class:`NodeStateGateway`), so one node cannot
flood the store.

A worker's assignment stream carries PUT events of the instances placed on
it, and DELETE events *key only* (an empty value, as every delete has):
deletes of instances that were placed on it, deletes whose previous value
the store does not know, and a PUT that moves an instance away from the
caller — it left the worker's view, so for the worker it is gone. Everything
else is left out, so a worker sees gaps in the revisions it receives; it
resumes after the last one it saw as usual. :class:`Assignments` makes these
streams for all workers from one watch; :meth:`WorkerScope.forward` is the
same rule for one watch of the store (while Assignments lists again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from shoal.interfaces import (
    INSTANCE_STATUS_FIELDS,
    MAX_EVENT_BYTES,
    NODE_CLUSTER_FIELDS,
    POD_CONFIG_KINDS,
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
    node_key,
)

from ._nodeauth import Caller

__all__ = [
    "EVENTS_PER_MINUTE",
    "Filed",
    "WorkerScope",
    "Write",
    "parse_document",
]

# Events one node may record per minute: far above what a node loop reports
# (an event per instance change), low enough that a node cannot flood the store.
EVENTS_PER_MINUTE = 600

M = TypeVar("M", bound=BaseModel)


def parse_document(what: str, value: bytes, model: type[M]) -> M:
    """Return ``value`` as a ``model`` document, or raise InvalidInput naming ``what`` and why."""
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise InvalidInput(
            f"{what} is not a valid {model.__name__} document ({where}: {first['msg']})",
        ) from None


def _assigned_to(value: bytes | None, node: str) -> bool:
    if value is None:
        return False
    try:
        return Instance.model_validate_json(value).node == node
    except ValidationError:
        return False


class Write(NamedTuple):
    """What an allowed write writes: the value (maybe rewritten) and its expected revision."""

    value: bytes
    expected_revision: int


class Filed(NamedTuple):
    """Where an allowed event goes: its key (under its object) and its value."""

    key: str
    value: bytes


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
        return node_key(self.caller.name)

    def admit(self, method: str) -> None:
        """Check that the caller is who its node record says, before anything else.

        Raises:
            Forbidden: the name is registered to another key.
            Unauthenticated: the name has not registered and the call is not Register.
        """
        name = self.caller.name
        if self.registered_id is None:
            if method == "Register":
                return
            raise Unauthenticated(
                f"unknown node key: node {name!r} has not registered (no {self.node_key}); "
                "its node loop registers it first — start the node, then retry",
                node=name,
                node_id=self.caller.node_id,
            )
        if self.registered_id != self.caller.node_id:  # Register included
            raise Forbidden(
                f"node name {name!r} is registered to another key "
                f"(id {self.registered_id or 'none'}, this call's key has id "
                f"{self.caller.node_id}); a node keeps its identity in <data-dir>/node.key — "
                "restore it, or pick another --name",
                node=name,
                node_id=self.caller.node_id,
                registered_id=self.registered_id,
            )

    def check_register(self, value: bytes, current: KeyValue | None) -> Write:
        """Allow a registration; return what to write at the caller's record, and at which revision.

        A record that does not exist is created (revision 0: never overwriting
        one another key made meanwhile); an existing one is rewritten at its
        revision, keeping :data:`NODE_CLUSTER_FIELDS` as stored.

        Raises:
            InvalidInput: the value is not a Node document.
            Forbidden: it is not the caller's own record, or the name is
                registered to another key.
        """
        node = parse_document("the node record sent", value, Node)
        if node.name != self.caller.name or node.node_id != self.caller.node_id:
            raise Forbidden(
                f"{self.node_key} must hold this node's own record (name {self.caller.name!r}, "
                f"node_id {self.caller.node_id!r}), not name {node.name!r} and "
                f"node_id {node.node_id!r}",
                key=self.node_key,
            )
        if current is None:
            return Write(value, 0)
        stored = parse_document(self.node_key, current.value, Node)
        if stored.node_id != self.caller.node_id:  # registered by another key meanwhile
            WorkerScope(self.caller, stored.node_id).admit("Register")
        kept = node.model_copy(update={f: getattr(stored, f) for f in NODE_CLUSTER_FIELDS})
        return Write(kept.model_dump_json().encode(), current.mod_revision)

    def check_report(
        self, key: str, uid: str, status: bytes, expected_revision: int, current: KeyValue | None
    ) -> bytes:
        """Allow a status report of the instance at ``key``; return the record to write.

        ``status`` is a JSON object of status fields; the record written is
        ``current`` with those fields replaced, at ``expected_revision``.

        Raises:
            RevisionConflict: the record is not at ``expected_revision`` (or is gone).
            Forbidden: it is not placed on the caller, holds another uid, or the
                report names fields other than the status fields.
            InvalidInput: ``status`` is not a JSON object of valid status values.
        """
        name = self.caller.name
        replaced = self._placed_current(
            "report the status of", key, uid, expected_revision, current
        )
        try:
            fields = json.loads(status)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise InvalidInput(
                f"the status reported for {key} is not a JSON object of status fields", key=key
            )
        others = sorted(set(fields) - set(INSTANCE_STATUS_FIELDS))
        if others:
            raise Forbidden(
                f"node {name!r} may only report the status of {key} "
                f"({', '.join(INSTANCE_STATUS_FIELDS)}); it tried to change {', '.join(others)}",
                key=key,
                fields=others,
            )
        old = parse_document(key, replaced.value, Instance)
        try:
            new = Instance.model_validate({**old.model_dump(mode="json"), **fields})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInput(
                f"the status reported for {key} is not valid ({where}: {first['msg']})", key=key
            ) from None
        return new.model_dump_json().encode()

    def check_remove(
        self, key: str, uid: str, expected_revision: int, current: KeyValue | None
    ) -> None:
        """Allow deleting the record of an instance placed on the caller, at ``expected_revision``.

        Raises:
            RevisionConflict: the record is not at ``expected_revision`` (or is gone,
                unless 0 was expected: then nothing is deleted).
            Forbidden: it is not placed on the caller, or holds another uid.
        """
        if current is None and expected_revision == 0:
            return  # deletes nothing and returns None, as LocalNodeState's does
        self._placed_current("remove", key, uid, expected_revision, current)

    def check_event(self, value: bytes) -> Filed:
        """Allow recording an event; return the key it is filed under (by its object and id).

        Raises:
            InvalidInput: the value is not an Event document, or is over
                :data:`~shoal.interfaces.MAX_EVENT_BYTES`.
            Forbidden: its actor is not the caller.
        """
        if len(value) > MAX_EVENT_BYTES:
            raise InvalidInput(
                f"an event of {len(value)} bytes is over the {MAX_EVENT_BYTES}-byte limit: "
                "say what happened in a sentence, not with the whole output",
                limit=MAX_EVENT_BYTES,
            )
        event = parse_document("the event sent", value, Event)
        if event.actor.id != self.caller.name:
            raise Forbidden(
                f"node {self.caller.name!r} may only record events it did itself "
                f"(actor.id {self.caller.name!r}), not as {event.actor.id!r}",
                actor=event.actor.id,
            )
        about = event.object
        return Filed(event_key(about.kind, about.namespace, about.name, event.id), value)

    def check_config_name(self, kind: str, namespace: str, name: str) -> None:
        """Allow asking for a ConfigMap or Secret by namespace and name (before who uses it).

        Raises:
            InvalidInput: ``kind`` is not ConfigMap or Secret, or no name is given.
        """
        if kind not in POD_CONFIG_KINDS or not namespace or not name:
            raise InvalidInput(
                f"a node reads a ConfigMap or a Secret by namespace and name, not "
                f"{kind!r} {namespace!r}/{name!r}",
                kind=kind,
            )

    def check_config(self, kind: str, namespace: str, name: str, used: bool) -> None:
        """Allow reading a ConfigMap or Secret if ``used`` by an instance placed on the caller.

        Raises:
            InvalidInput: ``kind`` is not ConfigMap or Secret, or no name is given.
            Forbidden: no instance of the caller uses it.
        """
        self.check_config_name(kind, namespace, name)
        if not used:
            raise Forbidden(
                f"node {self.caller.name!r} runs no instance that uses {kind} "
                f"{namespace}/{name}: a node reads only the configuration of its own pods",
                kind=kind,
                namespace=namespace,
                name=name,
            )

    def uses(self, instances: list[bytes], kind: str, namespace: str, name: str) -> bool:
        """Whether one of ``instances`` (documents) placed on the caller uses the object."""
        for value in instances:
            try:
                instance = Instance.model_validate_json(value)
            except ValidationError:
                continue
            if instance.node != self.caller.name or instance.namespace != namespace:
                continue
            if (kind, name) in instance.template.config_refs():
                return True
        return False

    def sees(self, value: bytes) -> bool:
        """Whether an Instance document is placed on the caller."""
        return _assigned_to(value, self.caller.name)

    def forward(self, event: WatchEvent) -> WatchEvent | None:
        """Return what the caller's stream gets of ``event``, or None (see the module doc)."""
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

    def _placed_current(
        self, verb: str, key: str, uid: str, expected_revision: int, current: KeyValue | None
    ) -> KeyValue:
        """Return ``current`` if the caller may ``verb`` it at ``expected_revision``."""
        actual = 0 if current is None else current.mod_revision
        if current is None or actual != expected_revision:
            # The write could not succeed anyway: the node reads its assignments
            # again and then sees what it is allowed to see.
            state = "does not exist" if current is None else f"is at revision {actual}"
            raise RevisionConflict(
                f"{key!r} {state}, not {expected_revision}", key=key, expected=expected_revision
            )
        if not self.sees(current.value):
            raise Forbidden(
                f"{key} is not assigned to node {self.caller.name!r}: a node may {verb} "
                "only the instances placed on it",
                key=key,
            )
        held = parse_document(key, current.value, Instance).uid
        if held != uid:
            raise Forbidden(
                f"{key} now holds another instance (uid {held}, not {uid}): node "
                f"{self.caller.name!r} may {verb} only the instance it was given",
                key=key,
            )
        return current
