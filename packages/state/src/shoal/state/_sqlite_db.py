"""The SQLite database behind SqliteStore: schema, opening, and synchronous access.

Everything here is blocking and runs in a worker thread while SqliteStore
holds its lock, so one connection is only ever used by one thread at a time.

Schema (version 1)::

    meta(name PRIMARY KEY, value)      'schema_version', 'revision' (last committed
                                       revision), 'compacted' (history floor: every
                                       event with a greater revision is kept)
    kv(key PRIMARY KEY, value, create_revision, mod_revision, version, lease)
                                       the current keys; index kv_by_lease(lease)
    history(revision, seq, kind, key, value, create_revision, version, lease,
            prev_value, PRIMARY KEY (revision, seq))
                                       every change, in commit order: the watch log
    leases(id INTEGER PRIMARY KEY AUTOINCREMENT, ttl, deadline)
                                       live leases; deadline is wall-clock Unix time

The database runs in WAL mode with ``synchronous=FULL`` (a commit is on disk
before the write returns) and ``locking_mode=EXCLUSIVE`` (one process owns the
file while it is open, which the in-process watch notification relies on; a
killed owner's lock goes with it). Every write is one ``BEGIN IMMEDIATE``
transaction that updates ``kv``, appends to ``history`` and bumps
``meta.revision`` together, so the history can never disagree with the keys.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shoal.interfaces import EventKind, KeyValue, Unavailable, WatchEvent

from ._history import Position
from ._keys import prefix_end
from ._leases import LeaseBook
from ._mutation import Mutation

__all__ = ["Database", "StoredLease", "database_error", "open_database"]

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
    " create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,"
    " version INTEGER NOT NULL, lease INTEGER) WITHOUT ROWID",
    "CREATE INDEX kv_by_lease ON kv (lease) WHERE lease IS NOT NULL",
    "CREATE TABLE history (revision INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
    " create_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER,"
    " prev_value BLOB, PRIMARY KEY (revision, seq)) WITHOUT ROWID",
    "CREATE TABLE leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL,"
    " deadline REAL NOT NULL)",
    f"INSERT INTO meta VALUES ('schema_version', {SCHEMA_VERSION}), ('revision', 0),"
    " ('compacted', 0)",
)
_KV_COLUMNS = "key, value, create_revision, mod_revision, version, lease"
_HISTORY_COLUMNS = "revision, kind, key, value, create_revision, version, lease, prev_value"


@dataclass(frozen=True, slots=True)
class StoredLease:
    """A lease as persisted: its ttl and wall-clock deadline."""

    id: int
    ttl: float
    deadline: float


def database_error(path: Path, exc: sqlite3.Error) -> Unavailable:
    """Translate a SQLite error into Unavailable, naming the file and what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        advice = "another process has it open; stop that process, or give this one its own data dir"
    elif "not a database" in text or "malformed" in text:
        advice = "the file is not a usable SQLite database; move it away or restore a backup"
    elif "full" in text:
        advice = "the disk is full; free some space"
    else:
        advice = (
            "check that its directory exists, is a directory, and is writable by this user, "
            "or choose another data dir"
        )
    return Unavailable(
        f"state database {path} cannot be used ({text}): {advice}", path=str(path), reason=text
    )


def open_database(path: Path) -> tuple[sqlite3.Connection, int, int, list[StoredLease]]:
    """Open (creating if needed) the database at ``path``.

    Returns:
        The connection, the committed revision, the compacted floor, and the
        persisted leases.

    Raises:
        Unavailable: the directory cannot be created, or the file cannot be
            opened, locked, written, or was written by another schema version.

    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Unavailable(
            f"state database {path} cannot be created: its directory {path.parent} "
            f"is not usable ({exc.strerror or exc}); choose a data dir that is a directory "
            "writable by this user",
            path=str(path),
            reason=str(exc),
        ) from exc
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise database_error(path, exc) from exc
    try:
        return (conn, *_prepare(conn, path))
    except sqlite3.Error as exc:
        conn.close()
        raise database_error(path, exc) from exc
    except BaseException:
        conn.close()
        raise


def _prepare(conn: sqlite3.Connection, path: Path) -> tuple[int, int, list[StoredLease]]:
    conn.execute("PRAGMA busy_timeout = 500")
    # EXCLUSIVE before the first WAL access: no shared-memory index, and the
    # write lock taken below is held until close.
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise Unavailable(
            f"state database {path} cannot use write-ahead logging (journal mode {mode!r}); "
            "put the data dir on a local filesystem",
            path=str(path),
        )
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if not exists:
            for statement in _SCHEMA:
                conn.execute(statement)
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise Unavailable(
                f"state database {path} has schema version {meta.get('schema_version')}, "
                f"this Shoal needs {SCHEMA_VERSION}; use a Shoal release that matches it",
                path=str(path),
            )
        leases = [StoredLease(*row) for row in conn.execute("SELECT id, ttl, deadline FROM leases")]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(meta["revision"]), int(meta["compacted"]), leases


def _kv_from_row(row: tuple[str, bytes, int, int, int, int | None]) -> KeyValue:
    return KeyValue(*row)


@dataclass
class _Transaction:
    revision: int
    floor: int
    mutations: list[Mutation] = field(default_factory=list)


class Database:
    """One connection, the keyspace view of it, and the history it holds.

    Tracks the committed ``revision`` and history ``floor``; mutations
    committed since the last :meth:`take_committed` are handed back so the
    store can publish them to watchers.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        revision: int,
        floor: int,
        history_size: int,
        leases: LeaseBook,
    ) -> None:
        self._conn = conn
        self._leases = leases
        self._history_size = history_size
        self._slack = max(1, history_size // 8)
        self.revision = revision
        self.floor = floor
        self._open: _Transaction | None = None
        self._committed: list[Mutation] = []

    def close(self) -> None:
        """Close the connection (checkpointing the WAL into the main file)."""
        self._conn.close()

    # -- Keyspace --------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """Return the key, or None."""
        row = self._conn.execute(f"SELECT {_KV_COLUMNS} FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else _kv_from_row(row)

    def range(self, prefix: str) -> list[KeyValue]:
        """Return every key starting with ``prefix``, sorted."""
        end = prefix_end(prefix)
        if end is None:
            query = f"SELECT {_KV_COLUMNS} FROM kv WHERE key >= ? ORDER BY key"
            rows = self._conn.execute(query, (prefix,))
        else:
            query = f"SELECT {_KV_COLUMNS} FROM kv WHERE key >= ? AND key < ? ORDER BY key"
            rows = self._conn.execute(query, (prefix, end))
        return [_kv_from_row(row) for row in rows]

    def store(self, kv: KeyValue, previous: KeyValue | None) -> None:
        """Write ``kv`` (insert or replace)."""
        self._conn.execute(
            f"INSERT OR REPLACE INTO kv ({_KV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        )

    def remove(self, previous: KeyValue) -> None:
        """Delete a key."""
        self._conn.execute("DELETE FROM kv WHERE key = ?", (previous.key,))

    def has_lease(self, lease: int) -> bool:
        """Return whether ``lease`` is alive (the store keeps the LeaseBook in step)."""
        return lease in self._leases

    def lease_keys(self, lease: int) -> list[str]:
        """Return the keys attached to ``lease``, sorted."""
        rows = self._conn.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease,))
        return [key for (key,) in rows]

    # -- transactions ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block as one SQLite transaction; roll back state on failure."""
        assert self._open is None, "transactions do not nest"
        self._open = txn = _Transaction(self.revision, self.floor)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            if self.revision != txn.revision:
                self._set_meta("revision", self.revision)
                if self.revision - self.floor > self._history_size + self._slack:
                    self._discard_history_through(self.revision - self._history_size)
            self._conn.execute("COMMIT")
        except BaseException:
            self.revision, self.floor = txn.revision, txn.floor
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error says more than this one
            raise
        finally:
            self._open = None
        self._committed.extend(txn.mutations)

    def mutation(self) -> Mutation:
        """Start the next revision's mutation (inside :meth:`transaction`)."""
        return Mutation(self, self.revision + 1)

    def record(self, mutation: Mutation) -> None:
        """Append a mutation's events to the history and advance the revision."""
        assert self._open is not None, "record() needs an open transaction"
        if not mutation.events:
            return
        self._conn.executemany(
            f"INSERT INTO history (seq, {_HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    seq,
                    mutation.revision,
                    event.kind.value,
                    event.kv.key,
                    event.kv.value,
                    event.kv.create_revision,
                    event.kv.version,
                    event.kv.lease,
                    event.prev_value,
                )
                for seq, event in enumerate(mutation.events)
            ],
        )
        self.revision = mutation.revision
        self._open.mutations.append(mutation)

    def take_committed(self) -> list[Mutation]:
        """Return and forget the mutations committed since the last call."""
        committed, self._committed = self._committed, []
        return committed

    def _set_meta(self, name: str, value: int) -> None:
        self._conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))

    # -- history ---------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Discard history before ``revision`` (one transaction)."""
        with self.transaction():
            self._discard_history_through(revision - 1)

    def _discard_history_through(self, revision: int) -> None:
        if revision <= self.floor:
            return
        self._conn.execute("DELETE FROM history WHERE revision <= ?", (revision,))
        self._set_meta("compacted", revision)
        self.floor = revision

    def read_history(
        self, prefix: str, position: Position, limit: int
    ) -> tuple[list[WatchEvent], Position | None]:
        """Return about ``limit`` events under ``prefix`` at or after ``position``.

        A batch never ends inside a revision: the events of a transaction
        reach a watcher together, so one that has seen a revision has seen
        all of it. (It may therefore hold more than ``limit`` events.)

        Returns:
            The events, and the position just after the last one (None if none).

        """
        end = prefix_end(prefix)
        where = "(revision, seq) >= (?, ?)"
        params: list[object] = [position.revision, position.seq]
        if prefix:
            where += " AND key >= ?"
            params.append(prefix)
        if end is not None:
            where += " AND key < ?"
            params.append(end)
        query = f"SELECT seq, {_HISTORY_COLUMNS} FROM history WHERE {where}"
        rows = list(self._conn.execute(f"{query} ORDER BY revision, seq LIMIT ?", [*params, limit]))
        if len(rows) == limit:  # finish the last revision
            last_revision, last_seq = rows[-1][1], rows[-1][0]
            params[:2] = [last_revision, last_seq + 1]
            rows += self._conn.execute(
                f"{query} AND revision = ? ORDER BY seq", [*params, last_revision]
            )
        events: list[WatchEvent] = []
        after: Position | None = None
        for seq, revision, kind, key, value, create, version, lease, prev in rows:
            kv = KeyValue(key, value, create, revision, version, lease)
            events.append(WatchEvent(EventKind(kind), kv, prev))
            after = Position(revision, seq + 1)
        return events, after

    # -- leases ----------------------------------------------------------------

    def insert_lease(self, ttl: float, deadline: float) -> int:
        """Persist a new lease; return its id (never reused)."""
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO leases (ttl, deadline) VALUES (?, ?)", (ttl, deadline)
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def renew_lease(self, lease: int, deadline: float) -> None:
        """Persist a lease's new deadline."""
        with self.transaction():
            self._conn.execute("UPDATE leases SET deadline = ? WHERE id = ?", (deadline, lease))

    def end_leases(self, leases: list[int]) -> None:
        """Delete the leases and their keys, one revision per key, in one transaction."""
        with self.transaction():
            for lease in leases:
                for key in self.lease_keys(lease):
                    mutation = self.mutation()
                    mutation.delete(key)
                    self.record(mutation)
                self._conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
