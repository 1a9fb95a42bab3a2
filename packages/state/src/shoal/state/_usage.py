"""SqliteUsageHistory: a node's bounded usage table, in a SQLite file of its own.

Not in the replicated state store: samples every 10 s of every instance would
flood etcd (or the server's SQLite) with writes nobody else needs. Each node
keeps its own history (``DATA_DIR/usage.db``); losing it loses charts, not state.

Schema (``PRAGMA user_version`` 1; another version is dropped and made anew)::

    usage(step, kind, key, at, cpu, memory, restarts, PRIMARY KEY (kind, key, step, at))
        step 10: fine samples; step 60: one minute rolled up (averages, last restarts)
        index usage_by_at(at): pruning the oldest rows first
    meta(name PRIMARY KEY, value)   'rolled_until': the minutes before it are rolled up

Each :meth:`~SqliteUsageHistory.record` is one transaction: insert the fine
samples, roll up every whole minute before the newest sample, delete fine rows
older than ``USAGE_FINE_KEEP`` and rolled-up rows older than ``USAGE_COARSE_KEEP``,
then, past the row cap, the oldest rows in batches down to 95 % of it (so a
full table is not pruned on every round). Blocking SQL runs in a worker
thread, one call at a time under an ``anyio.Lock``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import anyio
import anyio.to_thread

from shoal.interfaces import (
    USAGE_COARSE_KEEP,
    USAGE_COARSE_STEP,
    USAGE_FINE_KEEP,
    USAGE_FINE_STEP,
    USAGE_ROW_CAP,
    Unavailable,
    UsageKind,
    UsagePoint,
    UsageRange,
    UsageSample,
    usage_range_seconds,
)

__all__ = ["USAGE_FILE", "SqliteUsageHistory"]

USAGE_FILE = "usage.db"
"""The usage table's file name in a node's data dir."""

_VERSION = 1
_PRUNE_BATCH = 5_000
"""Rows one DELETE statement removes at most, so no statement holds the file long."""

_SCHEMA = (
    "CREATE TABLE usage (step INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,"
    " at INTEGER NOT NULL, cpu INTEGER NOT NULL, memory INTEGER NOT NULL,"
    " restarts INTEGER NOT NULL, PRIMARY KEY (kind, key, step, at))",
    "CREATE INDEX usage_by_at ON usage (at)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    f"PRAGMA user_version = {_VERSION}",
)

_ROLLUP = (
    "INSERT INTO usage"
    f" SELECT {USAGE_COARSE_STEP}, kind, key, (at / {USAGE_COARSE_STEP}) * {USAGE_COARSE_STEP},"
    " CAST(round(avg(cpu)) AS INTEGER), CAST(round(avg(memory)) AS INTEGER), max(restarts)"
    f" FROM usage WHERE step = {USAGE_FINE_STEP} AND at >= ? AND at < ?"
    f" GROUP BY kind, key, at / {USAGE_COARSE_STEP}"
)


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


class _Table:
    """The open database; every method blocks and runs in a worker thread."""

    def __init__(self, path: Path | None, cap: int) -> None:
        self.cap = cap
        target = ":memory:" if path is None else str(path)
        self.conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        if path is not None:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # history, not state: speed over fsync
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version != _VERSION:
            with self._txn():
                self.conn.execute("DROP TABLE IF EXISTS usage")
                self.conn.execute("DROP TABLE IF EXISTS meta")
                for statement in _SCHEMA:
                    self.conn.execute(statement)
        self.count = self._count()
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'rolled_until'").fetchone()
        self.rolled_until: int | None = None if row is None else int(row[0])

    def _count(self) -> int:
        (count,) = self.conn.execute("SELECT count(*) FROM usage").fetchone()
        return int(count)

    def _txn(self) -> _Transaction:
        return _Transaction(self.conn)

    def record(self, samples: Sequence[UsageSample]) -> None:
        if not samples:
            return
        newest = max(_epoch(s.at) for s in samples)
        minute = newest - newest % USAGE_COARSE_STEP
        rows = [
            (
                USAGE_FINE_STEP,
                s.kind,
                s.key,
                _epoch(s.at),
                s.cpu_millicores,
                s.memory_bytes,
                s.restarts,
            )
            for s in samples
            # a minute already rolled up stays as it is (a clock stepped back)
            if self.rolled_until is None or _epoch(s.at) >= self.rolled_until
        ]
        # The row count follows each statement's changes rather than a count(*)
        # over the whole table; a REPLACE's deletion is not among its changes,
        # so a sample that replaces one is deleted first, counted.
        added = 0
        rolled_until = self.rolled_until
        with self._txn():
            if rows:
                added -= self.conn.executemany(
                    "DELETE FROM usage WHERE step = ? AND kind = ? AND key = ? AND at = ?",
                    [row[:4] for row in rows],
                ).rowcount
                added += self.conn.executemany(
                    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                ).rowcount
            start = rolled_until
            if start is None:
                (oldest,) = self.conn.execute(
                    f"SELECT min(at) FROM usage WHERE step = {USAGE_FINE_STEP}"
                ).fetchone()
                start = minute if oldest is None else oldest - oldest % USAGE_COARSE_STEP
            if minute > start:
                added -= self.conn.execute(
                    "DELETE FROM usage WHERE at >= ? AND at < ? AND step = ?",
                    (start, minute, USAGE_COARSE_STEP),
                ).rowcount
                added += self.conn.execute(_ROLLUP, (start, minute)).rowcount
            if rolled_until is None or minute > rolled_until:
                rolled_until = minute
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('rolled_until', ?)", (minute,)
                )
            # one range of the ``at`` index each, rather than an OR that scans the table
            for step, keep in (
                (USAGE_FINE_STEP, USAGE_FINE_KEEP),
                (USAGE_COARSE_STEP, USAGE_COARSE_KEEP),
            ):
                added -= self.conn.execute(
                    "DELETE FROM usage WHERE at < ? AND step = ?", (newest - keep, step)
                ).rowcount
        # Only now, committed: a transaction rolled back leaves memory as the file is.
        self.rolled_until = rolled_until
        self.count += added
        if self.count > self.cap:
            self._prune_to(self.cap * 95 // 100)

    def _prune_to(self, target: int) -> None:
        while self.count > target:
            batch = min(_PRUNE_BATCH, self.count - target)
            with self._txn():
                cursor = self.conn.execute(
                    "DELETE FROM usage WHERE rowid IN"
                    " (SELECT rowid FROM usage ORDER BY at LIMIT ?)",
                    (batch,),
                )
            if cursor.rowcount <= 0:  # nothing left to delete: never spin
                self.count = self._count()
                return
            self.count -= cursor.rowcount

    def query(self, kind: str, key: str, span: int, now: int) -> tuple[int, list[UsagePoint]]:
        since = now - span
        if span <= USAGE_FINE_KEEP:
            rows = self.conn.execute(
                "SELECT at, cpu, memory, restarts FROM usage"
                " WHERE kind = ? AND key = ? AND step = ? AND at > ? AND at <= ? ORDER BY at",
                (kind, key, USAGE_FINE_STEP, since, now),
            ).fetchall()
            return USAGE_FINE_STEP, [_point(row) for row in rows]
        rolled = self.rolled_until if self.rolled_until is not None else since
        fine = (kind, key, USAGE_FINE_STEP, max(rolled, since), now)
        rows = self.conn.execute(
            "SELECT at, cpu, memory, restarts FROM usage"
            " WHERE kind = ? AND key = ? AND step = ? AND at > ? AND at < ?"
            " UNION ALL"
            f" SELECT (at / {USAGE_COARSE_STEP}) * {USAGE_COARSE_STEP},"
            " CAST(round(avg(cpu)) AS INTEGER), CAST(round(avg(memory)) AS INTEGER),"
            " max(restarts) FROM usage"
            " WHERE kind = ? AND key = ? AND step = ? AND at >= ? AND at <= ?"
            f" GROUP BY at / {USAGE_COARSE_STEP} ORDER BY 1",
            (kind, key, USAGE_COARSE_STEP, since, rolled, *fine),
        ).fetchall()
        return USAGE_COARSE_STEP, [_point(row) for row in rows]

    def close(self) -> None:
        self.conn.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on an error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (SQLITE_BUSY, a full disk) may leave the
                # transaction open, and every later BEGIN would fail with it.
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self.conn.in_transaction:  # SQLite rolls some errors back by itself
            self.conn.execute("ROLLBACK")


def _point(row: tuple[int, int, int, int]) -> UsagePoint:
    at, cpu, memory, restarts = row
    return UsagePoint(
        at=datetime.fromtimestamp(at, UTC),
        cpu_millicores=cpu,
        memory_bytes=memory,
        restarts=restarts,
    )


class SqliteUsageHistory:
    """A :class:`~shoal.interfaces.UsageHistory` in one SQLite file (in memory without a path).

    Args:
        path: The database file (``DATA_DIR/usage.db`` on a node); None keeps it in memory.
        cap: Most rows kept (:data:`~shoal.interfaces.USAGE_ROW_CAP` by default).
    """

    def __init__(self, path: Path | None = None, *, cap: int = USAGE_ROW_CAP) -> None:
        if cap < 1:
            raise ValueError(f"the usage row cap must be at least 1, got {cap}")
        self.path = path
        self.cap = cap
        self._lock = anyio.Lock()
        self._table: _Table | None = None

    async def __aenter__(self) -> SqliteUsageHistory:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _open(self) -> _Table:
        if self._table is None:
            try:
                self._table = await anyio.to_thread.run_sync(_Table, self.path, self.cap)
            except sqlite3.Error as exc:
                raise Unavailable(
                    f"the usage history {self.path} cannot be opened ({exc}); delete the file "
                    "to start an empty one (it holds charts, not state)",
                    path=str(self.path),
                ) from exc
        return self._table

    async def record(self, samples: Sequence[UsageSample]) -> None:
        """Store fine samples, roll whole minutes up, prune by age and by cap."""
        async with self._lock:
            table = await self._open()
            try:
                await anyio.to_thread.run_sync(table.record, list(samples))
            except sqlite3.Error as exc:
                raise Unavailable(
                    f"the usage history {self.path} cannot be written: {exc}"
                ) from exc

    async def query(
        self, kind: UsageKind, key: str, span: UsageRange, now: datetime
    ) -> tuple[int, list[UsagePoint]]:
        """Return the step and the points of one series over ``span`` before ``now``."""
        seconds = usage_range_seconds(span)
        async with self._lock:
            table = await self._open()
            try:
                return await anyio.to_thread.run_sync(table.query, kind, key, seconds, _epoch(now))
            except sqlite3.Error as exc:
                raise Unavailable(f"the usage history {self.path} cannot be read: {exc}") from exc

    async def rows(self) -> int:
        """Return how many rows the table holds."""
        async with self._lock:
            return (await self._open()).count

    async def aclose(self) -> None:
        """Close the database (reopened by the next call)."""
        async with self._lock:
            if self._table is not None:
                table, self._table = self._table, None
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(table.close)
