"""The store's key layout: where each object lives, for every package that reads or writes it.

The service layer and the loops (``shoal.core``) write these keys; a server's
worker scope (``shoal.cluster``) decides from them what a worker may touch.
Both import them from here, so the two sides cannot drift apart.

* ``/workloads/<namespace>/<name>``, ``/instances/<namespace>/<name>``,
  ``/configmaps/<namespace>/<name>``, ``/secrets/<namespace>/<name>`` (its
  value sealed by the server's store), ``/namespaces/<name>``,
  ``/nodes/<name>``: one JSON document each.
* ``/events/<kind>/<namespace or ->/<name>/<event id>``: events filed under
  the object they are about, so one object's events are one prefix (what
  ``explain`` and ``shoal describe`` read), and under a kind, one prefix too.
  The kind is lowercase; ``-`` stands for no namespace (nodes, keys). Event
  ids start with the event's time, so keys under one object sort oldest
  first, and the id alone tells an event's age without decoding it.
  (Events recorded before this layout, ``/events/<event id>``, are listed with
  all events, and pruned like the others.)
* ``/audit/entries/<sequence, 16 digits>``: the audit trail, one entry per
  mutating call, each with the hash of the one before; ``/audit/head`` holds
  the last sequence number and hash (never pruned: see docs/observability.md).
"""

from __future__ import annotations

__all__ = [
    "AUDIT_ENTRIES",
    "AUDIT_HEAD",
    "CONFIGMAPS",
    "EVENTS",
    "INSTANCES",
    "NAMESPACES",
    "NODES",
    "SECRETS",
    "WORKLOADS",
    "audit_key",
    "config_key",
    "config_map_key",
    "event_id_of",
    "event_key",
    "event_prefix",
    "instance_key",
    "namespace_key",
    "node_key",
    "secret_key",
    "workload_key",
]

WORKLOADS = "/workloads/"
INSTANCES = "/instances/"
NODES = "/nodes/"
EVENTS = "/events/"
CONFIGMAPS = "/configmaps/"
SECRETS = "/secrets/"
NAMESPACES = "/namespaces/"
AUDIT_ENTRIES = "/audit/entries/"
AUDIT_HEAD = "/audit/head"

_NO_NAMESPACE = "-"


def audit_key(sequence: int) -> str:
    """Return the key of audit entry number ``sequence`` (keys sort in sequence order)."""
    return f"{AUDIT_ENTRIES}{sequence:016d}"


def workload_key(namespace: str, name: str) -> str:
    """Return the store key of a workload."""
    return f"{WORKLOADS}{namespace}/{name}"


def instance_key(namespace: str, name: str) -> str:
    """Return the store key of an instance."""
    return f"{INSTANCES}{namespace}/{name}"


def config_map_key(namespace: str, name: str) -> str:
    """Return the store key of a ConfigMap."""
    return f"{CONFIGMAPS}{namespace}/{name}"


def secret_key(namespace: str, name: str) -> str:
    """Return the store key of a Secret."""
    return f"{SECRETS}{namespace}/{name}"


def namespace_key(name: str) -> str:
    """Return the store key of a Namespace."""
    return f"{NAMESPACES}{name}"


def config_key(kind: str, namespace: str, name: str) -> str:
    """Return the store key of a ConfigMap, a Secret or a Namespace (``namespace`` unused).

    ``kind`` is ``"ConfigMap"``, ``"Secret"`` or ``"Namespace"``, as the objects' own
    ``kind`` fields say; any other is refused with ValueError.
    """
    if kind == "ConfigMap":
        return config_map_key(namespace, name)
    if kind == "Secret":
        return secret_key(namespace, name)
    if kind == "Namespace":
        return namespace_key(name)
    raise ValueError(f"{kind!r} is not a configuration kind: use ConfigMap, Secret or Namespace")


def node_key(name: str) -> str:
    """Return the store key of a node."""
    return f"{NODES}{name}"


def event_prefix(
    kind: str | None = None, namespace: str | None = None, name: str | None = None
) -> str:
    """Return the prefix of the events about one object, or of one kind (or all events).

    ``name`` narrows only with ``kind``; ``namespace`` only with both (None
    for an object without a namespace). Without ``name``, ``namespace`` is
    ignored: filter the events under the kind's prefix instead.
    """
    if kind is None:
        return EVENTS
    if name is None:
        return f"{EVENTS}{kind.lower()}/"
    return f"{EVENTS}{kind.lower()}/{namespace or _NO_NAMESPACE}/{name}/"


def event_key(kind: str, namespace: str | None, name: str, event_id: str) -> str:
    """Return the store key of an event about object ``kind``/``namespace``/``name``."""
    return f"{event_prefix(kind, namespace, name)}{event_id}"


def event_id_of(key: str) -> str:
    """Return the event id a key under :data:`EVENTS` ends with."""
    return key.rsplit("/", 1)[-1]
