"""SqliteStore: the embedded, durable StateStore (the default for one server).

One SQLite connection (schema in ``_sqlite_db``), used by one worker thread at
a time: every operation takes an ``anyio.Lock``, runs its blocking SQL through
``anyio.to_thread.run_sync``, and, shielded from cancellation so a commit is
never half-noticed, publishes what it committed before letting go of the lock.

Watchers read the durable ``history`` table, so a watcher far behind, or one
resumed after the store was closed and reopened, gets exactly the events from
its revision on. Recent revisions are also kept in an in-memory
:class:`~shoal.state._history.EventLog`, so watchers that keep up never touch
the database or the lock.

Leases are kept in a :class:`~shoal.state._leases.LeaseBook` (monotonic
deadlines) and persisted with wall-clock deadlines, so after a reopen each
lease has the time it had left when the store closed (minus the downtime).
The book is only changed on the event loop thread; worker threads only read it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread

from shoal.interfaces import (
    Clock,
    Compare,
    DeleteOp,
    InvalidInput,
    KeyValue,
    ListResult,
    PutOp,
    TxnResult,
    Unavailable,
)

from ._base import DEFAULT_HISTORY_SIZE, StoreBase
from ._history import READ_BATCH, Batch, EventLog, Position, compacted_error
from ._keys import check_key
from ._leases import check_ttl, lease_not_found
from ._mutation import Mutation, check_expected, check_lease, choose_txn_branch
from ._sqlite_db import Database, database_error, open_database

__all__ = ["SqliteStore"]

DEFAULT_RECENT_HISTORY = 1024
"""How many recent revisions a SqliteStore also keeps in memory for watchers."""


class SqliteStore(StoreBase):
    """A StateStore in one SQLite file: durable, crash-safe, one process at a time.

    Use it as ``async with SqliteStore(path) as store:``; entering opens (or
    creates) the file and starts the lease sweeper.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        recent_history: int = DEFAULT_RECENT_HISTORY,
    ) -> None:
        """Prepare a store on ``path``; nothing is opened until ``async with``.

        Args:
            path: The database file; its directory is created if missing.
            clock: Time source for leases; the system clock by default.
            history_size: How many recent revisions watchers can start from.
            recent_history: How many of those are also cached in memory.

        """
        super().__init__(clock=clock, history_size=history_size)
        self._path = Path(path)
        self._recent_size = max(1, min(recent_history, history_size))
        self._recent = EventLog(self._recent_size)
        self._revision = 0
        self._db: Database | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    # -- StoreBase hooks -------------------------------------------------------

    async def _open(self) -> None:
        self._check_open()
        if self._db is not None:
            return
        # Shielded: a connection opened must be kept, so that aclose() closes it.
        with anyio.CancelScope(shield=True):
            opened = await anyio.to_thread.run_sync(open_database, self._path)
        conn, revision, floor, leases = opened
        self._db = Database(
            conn,
            revision=revision,
            floor=floor,
            history_size=self._history_size,
            leases=self._leases,
        )
        self._revision = revision
        self._recent = EventLog(self._recent_size, revision=revision)
        now = self._clock.now().timestamp()
        for stored in leases:
            self._leases.add(stored.id, stored.ttl, remaining=stored.deadline - now)

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    await anyio.to_thread.run_sync(db.close)

    def _head_revision(self) -> int:
        return self._revision

    async def _read_history(self, prefix: str, position: Position) -> Batch:
        await anyio.lowlevel.checkpoint()
        self._require_open()
        if position.revision > self._recent.floor:
            return self._recent.read(prefix, position)
        async with self._lock:
            db = self._require_open()
            if position.revision <= db.floor:
                raise compacted_error(position.revision, db.floor)
            if position.revision > self._recent.floor:
                return self._recent.read(prefix, position)
            try:
                events, after = await anyio.to_thread.run_sync(
                    db.read_history, prefix, position, READ_BATCH
                )
            except sqlite3.Error as exc:
                raise database_error(self._path, exc) from exc
            head = self._revision
        if len(events) >= READ_BATCH and after is not None:
            return Batch(events, after, True)
        return Batch(events, max(position, Position(head + 1, 0)), False)

    async def _expire_leases(self) -> None:
        async with self._session():
            pass  # the session expires due leases on entry

    # -- sessions --------------------------------------------------------------

    def _require_open(self) -> Database:
        self._check_open()
        if self._db is None:
            raise Unavailable(
                f"{self!r} is not open; use it as `async with SqliteStore(path) as store:`",
                path=str(self._path),
            )
        return self._db

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Database]:
        """Hold the lock, expire due leases, run the body, publish what it committed.

        The body is shielded from cancellation: once SQL has run, its outcome
        must reach the in-memory state, or watchers would miss revisions.
        """
        async with self._lock:
            db = self._require_open()
            with anyio.CancelScope(shield=True):
                try:
                    if self._leases.any_due():
                        await self._end_leases(db, self._leases.due())
                    yield db
                except sqlite3.Error as exc:
                    raise database_error(self._path, exc) from exc
                finally:
                    self._publish(db.take_committed())

    async def _end_leases(self, db: Database, leases: list[int]) -> None:
        records = [record for lease in leases if (record := self._leases.remove(lease))]
        if not records:
            return
        try:
            await anyio.to_thread.run_sync(db.end_leases, [r.id for r in records])
        except BaseException:
            for record in records:  # still persisted: retry at the next operation
                self._leases.add(record.id, record.ttl, remaining=0.0)
            raise

    def _publish(self, committed: Sequence[Mutation]) -> None:
        for mutation in committed:
            self._recent.append(mutation.revision, mutation.events)
            self._revision = mutation.revision
            self._changes.notify(mutation.revision, mutation.events)

    # -- StateStore ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""
        async with self._session() as db:
            return await anyio.to_thread.run_sync(db.get, key)

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

        def put_in_thread(db: Database) -> int:
            with db.transaction():
                check_expected(key, db.get(key), expected_revision)
                check_lease(db, lease)
                mutation = db.mutation()
                mutation.put(key, value, lease)
                db.record(mutation)
            return mutation.revision

        async with self._session() as db:
            return await anyio.to_thread.run_sync(put_in_thread, db)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.

        """
        check_key(key)

        def delete_in_thread(db: Database) -> int | None:
            with db.transaction():
                check_expected(key, db.get(key), expected_revision)
                mutation = db.mutation()
                if not mutation.delete(key):
                    return None
                db.record(mutation)
            return mutation.revision

        async with self._session() as db:
            return await anyio.to_thread.run_sync(delete_in_thread, db)

    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, sorted by key, and the store revision."""

        def list_in_thread(db: Database) -> ListResult:
            return ListResult(db.range(prefix), db.revision)

        async with self._session() as db:
            return await anyio.to_thread.run_sync(list_in_thread, db)

    async def revision(self) -> int:
        """Return the current store revision (0 for an empty store)."""
        async with self._session() as db:
            return db.revision

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

        def txn_in_thread(db: Database) -> TxnResult:
            with db.transaction():
                succeeded, ops = choose_txn_branch(db, compares, success, failure)
                mutation = db.mutation()
                deleted = mutation.apply(ops)
                db.record(mutation)
            return TxnResult(succeeded, db.revision, deleted)

        async with self._session() as db:
            return await anyio.to_thread.run_sync(txn_in_thread, db)

    async def grant_lease(self, ttl: float) -> int:
        """Create a lease that expires ``ttl`` seconds after its last renewal; return its id.

        Raises:
            InvalidInput: ``ttl`` is not a positive number of seconds.

        """
        check_ttl(ttl)
        async with self._session() as db:
            deadline = self._clock.now().timestamp() + ttl
            lease = await anyio.to_thread.run_sync(db.insert_lease, ttl, deadline)
            self._leases.add(lease, ttl)
        return lease

    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl.

        Raises:
            NotFound: the lease expired or was revoked.

        """
        async with self._session() as db:
            if lease not in self._leases:
                raise lease_not_found(lease)
            record = self._leases.renew(lease)
            deadline = self._clock.now().timestamp() + record.ttl
            await anyio.to_thread.run_sync(db.renew_lease, lease, deadline)

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys (one revision each); unknown leases are ignored."""
        async with self._session() as db:
            await self._end_leases(db, [lease])

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision``; watching from earlier raises Compacted.

        Raises:
            InvalidInput: ``revision`` is in the future.

        """
        async with self._session() as db:
            if revision > db.revision:
                raise InvalidInput(
                    f"cannot compact to revision {revision}: the store is at {db.revision}",
                    field="revision",
                )
            await anyio.to_thread.run_sync(db.compact, revision)
            self._recent.discard_through(revision - 1)
