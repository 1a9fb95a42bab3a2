"""The StateStore protocol: a revisioned key/value store with watches and leases.

The model is etcd v3's, so that the SQLite and etcd implementations are
interchangeable:

* Every change (put or delete) increments one store-wide **revision**.
* A key remembers ``create_revision`` (when it was created), ``mod_revision``
  (its last change) and ``version`` (changes since creation).
* ``put``/``delete`` take an optional ``expected_revision``: ``0`` means "the
  key must not exist", ``n > 0`` means "its ``mod_revision`` must be ``n``" —
  compare-and-swap. A mismatch raises :class:`RevisionConflict`.
* ``watch(prefix, start_revision)`` yields every change under ``prefix`` with
  revision ``>= start_revision`` in revision order, exactly once, however far
  behind the reader falls, and again after a restart of the store when resumed
  from the revision after the last one it saw.
* Leases expire when their holder stops renewing them; keys attached to an
  expired lease are deleted — etcd in one revision, the embedded stores one
  revision per key; watchers see every delete either way. Leader election is
  built on leases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Compare",
    "CompareTarget",
    "DeleteOp",
    "EventKind",
    "KeyValue",
    "Leadership",
    "ListResult",
    "PutOp",
    "StateStore",
    "StoreWrapper",
    "TxnResult",
    "WatchEvent",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key's value and its revisions."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int | None = None


class EventKind(StrEnum):
    """What a watch event reports."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watcher.

    For a delete, ``kv.value`` is empty, ``kv.mod_revision`` is the revision of
    the delete, and ``prev_value`` holds the value before it (when known).
    """

    kind: EventKind
    kv: KeyValue
    prev_value: bytes | None = None

    @property
    def revision(self) -> int:
        """Return the store revision at which this change happened."""
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class ListResult:
    """Keys under a prefix, as of one store revision."""

    items: list[KeyValue]
    revision: int


class CompareTarget(StrEnum):
    """What a transaction compare looks at."""

    MOD_REVISION = "mod_revision"
    CREATE_REVISION = "create_revision"
    VALUE = "value"


class Compare(NamedTuple):
    """A transaction guard: ``target`` of ``key`` equals ``expected``.

    A missing key has ``mod_revision == create_revision == 0`` and no value.
    Like the operations below, a named tuple: immutable, and made in a third
    of a frozen dataclass's time (a pass of the control loop makes thousands).
    """

    key: str
    target: CompareTarget
    expected: int | bytes


class PutOp(NamedTuple):
    """Put ``value`` at ``key`` inside a transaction."""

    key: str
    value: bytes
    lease: int | None = None


class DeleteOp(NamedTuple):
    """Delete ``key`` (or every key under it, with ``prefix=True``) inside a transaction."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of a transaction: which branch ran, at which revision."""

    succeeded: bool
    revision: int
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class Leadership:
    """Proof of leadership: the election key, its holder, and the lease behind it.

    Writes fenced by leadership put ``Compare(key, CREATE_REVISION, revision)``
    in their transaction, so a deposed leader's writes fail.
    """

    election: str
    candidate: str
    lease: int
    key: str
    revision: int
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class StateStore(Protocol):
    """A revisioned key/value store with watches, transactions and leases.

    Keys are ``/``-separated strings; values are bytes (Shoal stores JSON).
    Every method may raise :class:`~shoal.interfaces.Unavailable` when the
    backing store cannot be reached.
    """

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""
        ...

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key`` and return the new store revision.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.
            NotFound: ``lease`` does not exist or has expired.

        """
        ...

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.

        """
        ...

    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, sorted by key, and the store revision."""
        ...

    async def revision(self) -> int:
        """Return the current store revision (0 for an empty store)."""
        ...

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        ``None`` starts after the current revision. The iterator never ends by
        itself; cancel the task or break out of the loop to stop.

        Raises:
            Compacted: ``start_revision`` is older than the history the store keeps.

        """
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Atomically run ``success`` if every compare holds, else ``failure``.

        All puts and deletes of one transaction share one new revision.
        """
        ...

    async def grant_lease(self, ttl: float) -> int:
        """Create a lease that expires ``ttl`` seconds after its last renewal; return its id."""
        ...

    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl.

        Raises:
            NotFound: the lease expired or was revoked.

        """
        ...

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys. Revoking an unknown lease is a no-op."""
        ...

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Block until ``candidate`` leads ``election`` on ``lease``; return the proof.

        The first candidate to create the election key leads; others wait until
        that key is deleted (resign, or its lease expired). Keep the lease alive
        to keep leading.
        """
        ...

    async def resign(self, leadership: Leadership) -> None:
        """Give up leadership (deletes the election key if still ours)."""
        ...

    async def leader(self, election: str) -> str | None:
        """Return the current leader's candidate name, or None."""
        ...

    async def aclose(self) -> None:
        """Release connections and files. The store is unusable afterwards."""
        ...


class StoreWrapper:
    """A :class:`StateStore` that passes every call to ``inner``: the base of store decorators.

    A wrapper (fenced writes, sealed Secrets, metrics, a bench's counter)
    overrides the calls it changes and inherits the rest, so no decorator
    repeats the thirteen pass-through methods. ``aclose`` closes ``inner``;
    a wrapper over a store it does not own overrides it.
    """

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""
        return await self.inner.get(key)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key``; return the new store revision."""
        return await self.inner.put(key, value, expected_revision=expected_revision, lease=lease)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist."""
        return await self.inner.delete(key, expected_revision=expected_revision)

    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, sorted by key, and the store revision."""
        return await self.inner.list(prefix)

    async def revision(self) -> int:
        """Return the current store revision (0 for an empty store)."""
        return await self.inner.revision()

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order."""
        return self.inner.watch(prefix, start_revision)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Atomically run ``success`` if every compare holds, else ``failure``."""
        return await self.inner.txn(compares, success, failure)

    async def grant_lease(self, ttl: float) -> int:
        """Create a lease that expires ``ttl`` seconds after its last renewal; return its id."""
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl."""
        await self.inner.keepalive(lease)

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys."""
        await self.inner.revoke(lease)

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Block until ``candidate`` leads ``election`` on ``lease``; return the proof."""
        return await self.inner.campaign(election, candidate, lease)

    async def resign(self, leadership: Leadership) -> None:
        """Give up leadership (deletes the election key if still ours)."""
        await self.inner.resign(leadership)

    async def leader(self, election: str) -> str | None:
        """Return the current leader's candidate name, or None."""
        return await self.inner.leader(election)

    async def aclose(self) -> None:
        """Close the wrapped store."""
        await self.inner.aclose()
