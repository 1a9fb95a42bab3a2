"""MemoryStore: the in-memory StateStore that tests and benchmarks use.

Keys live in a dict plus a sorted key list, so ``get``/``put`` of an existing
key are O(1), creating or deleting a key is a bisect plus a list shift, and
``list(prefix)`` is two bisects and a slice. The history is an
:class:`~shoal.state._history.EventLog` holding the last ``history_size``
revisions; watchers read it directly.

Every operation is a checkpoint (it yields to the event loop once), like a
store that does I/O, so code under test cannot come to rely on a store that
never lets other tasks run.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, insort
from collections.abc import Sequence

import anyio.lowlevel

from shoal.interfaces import (
    Clock,
    Compare,
    DeleteOp,
    InvalidInput,
    KeyValue,
    ListResult,
    PutOp,
    TxnResult,
)

from ._base import DEFAULT_HISTORY_SIZE, StoreBase
from ._history import Batch, EventLog, Position, compacted_error
from ._keys import check_key, prefix_end
from ._leases import LeaseBook, check_ttl
from ._mutation import Mutation, check_expected, check_lease, choose_txn_branch

__all__ = ["MemoryStore"]


class _MemoryKeyspace:
    """The current keys: a dict, a sorted key list, and the keys of each lease."""

    def __init__(self, leases: LeaseBook) -> None:
        self.values: dict[str, KeyValue] = {}
        self.sorted_keys: list[str] = []
        self.lease_keys: dict[int, set[str]] = {}
        self._leases = leases

    def get(self, key: str) -> KeyValue | None:
        return self.values.get(key)

    def range(self, prefix: str) -> list[KeyValue]:
        keys = self.sorted_keys
        low = bisect_left(keys, prefix)
        end = prefix_end(prefix)
        high = len(keys) if end is None else bisect_left(keys, end, low)
        values = self.values
        return [values[key] for key in keys[low:high]]

    def store(self, kv: KeyValue, previous: KeyValue | None) -> None:
        if previous is None:
            insort(self.sorted_keys, kv.key)
        elif previous.lease is not None and previous.lease != kv.lease:
            self._detach(previous)
        if kv.lease is not None:
            self.lease_keys.setdefault(kv.lease, set()).add(kv.key)
        self.values[kv.key] = kv

    def remove(self, previous: KeyValue) -> None:
        del self.values[previous.key]
        keys = self.sorted_keys
        del keys[bisect_left(keys, previous.key)]
        if previous.lease is not None:
            self._detach(previous)

    def has_lease(self, lease: int) -> bool:
        return lease in self._leases

    def _detach(self, previous: KeyValue) -> None:
        assert previous.lease is not None
        keys = self.lease_keys.get(previous.lease)
        if keys is not None:
            keys.discard(previous.key)
            if not keys:
                del self.lease_keys[previous.lease]


class MemoryStore(StoreBase):
    """A StateStore held in memory: fast, exact, and gone when the process ends.

    Use it as ``async with MemoryStore() as store:`` so leases expire on time
    from a background sweeper; used without ``async with``, leases expire at
    the next operation.
    """

    def __init__(
        self, *, clock: Clock | None = None, history_size: int = DEFAULT_HISTORY_SIZE
    ) -> None:
        """Create an empty store at revision 0.

        Args:
            clock: Time source for leases; the system clock by default.
            history_size: How many recent revisions watchers can start from.

        """
        super().__init__(clock=clock, history_size=history_size)
        self._keyspace = _MemoryKeyspace(self._leases)
        self._log = EventLog(history_size)
        self._revision = 0
        self._lease_ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"MemoryStore(revision={self._revision}, keys={len(self._keyspace.values)})"

    # -- StoreBase hooks -------------------------------------------------------

    async def _open(self) -> None:
        self._check_open()

    async def _close(self) -> None:
        return None

    def _head_revision(self) -> int:
        return self._revision

    async def _read_history(self, prefix: str, position: Position) -> Batch:
        await anyio.lowlevel.checkpoint()
        self._check_open()
        if position.revision <= self._log.floor:
            raise compacted_error(position.revision, self._log.floor)
        return self._log.read(prefix, position)

    async def _expire_leases(self) -> None:
        await anyio.lowlevel.checkpoint()
        if not self._closed:
            self._expire_due()

    # -- helpers ---------------------------------------------------------------

    async def _begin(self) -> None:
        """Start an operation: yield once, refuse if closed, expire due leases."""
        await anyio.lowlevel.checkpoint()
        self._check_open()
        if self._leases.any_due():
            self._expire_due()

    def _expire_due(self) -> None:
        for lease in self._leases.due():
            self._end_lease(lease)

    def _end_lease(self, lease: int) -> None:
        if self._leases.remove(lease) is None:
            return
        for key in sorted(self._keyspace.lease_keys.pop(lease, ())):
            mutation = Mutation(self._keyspace, self._revision + 1)
            mutation.delete(key)
            self._commit(mutation)

    def _commit(self, mutation: Mutation) -> None:
        if mutation.events:
            self._revision = mutation.revision
            self._log.append(mutation.revision, mutation.events)
            self._changes.notify(mutation.revision, mutation.events)

    # -- StateStore ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""
        await self._begin()
        return self._keyspace.get(key)

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
        check_key(key)
        await self._begin()
        check_expected(key, self._keyspace.get(key), expected_revision)
        check_lease(self._keyspace, lease)
        mutation = Mutation(self._keyspace, self._revision + 1)
        mutation.put(key, value, lease)
        self._commit(mutation)
        return mutation.revision

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.

        """
        check_key(key)
        await self._begin()
        current = self._keyspace.get(key)
        check_expected(key, current, expected_revision)
        if current is None:
            return None
        mutation = Mutation(self._keyspace, self._revision + 1)
        mutation.delete(key)
        self._commit(mutation)
        return mutation.revision

    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, sorted by key, and the store revision."""
        await self._begin()
        return ListResult(self._keyspace.range(prefix), self._revision)

    async def revision(self) -> int:
        """Return the current store revision (0 for an empty store)."""
        await self._begin()
        return self._revision

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Atomically run ``success`` if every compare holds, else ``failure``.

        All puts and deletes of one transaction share one new revision.

        Raises:
            InvalidInput: a branch touches one key twice, or a compare is malformed.
            NotFound: a put of the chosen branch names a lease that is not alive.

        """
        await self._begin()
        succeeded, ops = choose_txn_branch(self._keyspace, compares, success, failure)
        mutation = Mutation(self._keyspace, self._revision + 1)
        deleted = mutation.apply(ops)
        self._commit(mutation)
        return TxnResult(succeeded, self._revision, deleted)

    async def grant_lease(self, ttl: float) -> int:
        """Create a lease that expires ``ttl`` seconds after its last renewal; return its id.

        Raises:
            InvalidInput: ``ttl`` is not a positive number of seconds.

        """
        check_ttl(ttl)
        await self._begin()
        lease = next(self._lease_ids)
        self._leases.add(lease, ttl)
        return lease

    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl.

        Raises:
            NotFound: the lease expired or was revoked.

        """
        await self._begin()
        self._leases.renew(lease)

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys (one revision each); unknown leases are ignored."""
        await self._begin()
        self._end_lease(lease)

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision``; watching from earlier raises Compacted.

        Raises:
            InvalidInput: ``revision`` is in the future.

        """
        await self._begin()
        if revision > self._revision:
            raise InvalidInput(
                f"cannot compact to revision {revision}: the store is at {self._revision}",
                field="revision",
            )
        self._log.discard_through(revision - 1)
