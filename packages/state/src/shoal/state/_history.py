"""The event history and the watchers that read it.

Watch design
------------
Every committed change is appended to a **history**: an ordered log of
:class:`~shoal.interfaces.WatchEvent`, addressed by a :class:`Position` —
``(revision, seq)``, where ``seq`` numbers the events of one revision (a
transaction changes several keys at one revision). The history is the only
source watchers read; there are no per-watcher queues to overflow.

A :class:`Watcher` owns a position and reads the history forward from it in
bounded batches, so a watcher that falls a million events behind catches up
batch by batch, never skipping or repeating an event. When it has read
everything, it sleeps on its prefix's :class:`Wake` in the store's
:class:`CommitNotifier` — an ``anyio.Event`` that the store sets after a
commit that changed a key under that prefix, and then replaces. A commit wakes
only the watchers it concerns: an audit entry or an event record wakes none of
the loops' instance watchers, so a write's cost follows who watches what it
changed, not how many watch. The watcher takes the wake-up *before* it reads,
so a commit that lands between the read and the wait still wakes it: no lost
wake-ups, and no polling. The wake-up carries the revision of the commit that
set it, and the watcher reads on from there: the unrelated revisions
committed while it slept are skipped, so a watcher of a quiet prefix does not
fall behind the history the store keeps (one that reads too slowly still can).

Because a watcher's state is just a position, resuming after a restart is the
same operation as falling behind: a new watcher starts at
``(start_revision, 0)`` and reads what the durable history holds.

The history is bounded. :class:`EventLog` keeps the last ``keep`` revisions in
memory (the whole history of ``MemoryStore``; a cache of the recent tail in
``SqliteStore``); a position older than what is kept raises
:class:`~shoal.interfaces.Compacted` (or, for SQLite, falls back to the table).
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Self

import anyio

from shoal.interfaces import Compacted, WatchEvent

__all__ = [
    "READ_BATCH",
    "Batch",
    "CommitNotifier",
    "EventLog",
    "Notifier",
    "Position",
    "ReadHistory",
    "Wake",
    "Watcher",
    "compacted_error",
]

READ_BATCH = 512
"""Most events one watcher read returns."""

_SCAN_LIMIT = 16_384
"""Most history entries one in-memory read looks at, so a narrow watcher far
behind cannot stall the event loop in a single read."""


class Position(NamedTuple):
    """A place in the history: the next event to read is the first at or after it."""

    revision: int
    seq: int


class Batch(NamedTuple):
    """What one read of the history returns."""

    events: list[WatchEvent]
    """Matching events, in order."""
    position: Position
    """Where the next read starts."""
    more: bool
    """Whether the history already holds events past ``position``."""


ReadHistory = Callable[[str, Position], Awaitable[Batch]]
"""A store's read function: ``(prefix, position) -> Batch``."""


def compacted_error(requested: int, floor: int) -> Compacted:
    """Return the error for a watch that asks for history at or before ``floor``."""
    return Compacted(
        f"cannot watch from revision {requested}: history up to revision {floor} has been "
        "compacted; list the keys again and watch from the revision that list returns",
        requested=requested,
        compacted=floor,
    )


class Notifier:
    """Wakes every waiter once per commit, without losing a wake-up.

    Waiters call :meth:`changed` *before* checking for news and wait on the
    event it returns; the store calls :meth:`notify` after every commit.
    """

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._closed = False

    def changed(self) -> anyio.Event:
        """Return the event the next :meth:`notify` sets (already set once closed)."""
        if self._event is None:
            self._event = anyio.Event()
            if self._closed:
                self._event.set()
        return self._event

    def notify(self) -> None:
        """Wake everyone waiting on the current event."""
        if self._event is not None:
            self._event.set()
            self._event = None

    def close(self) -> None:
        """Wake every waiter now and from now on (the store is closing)."""
        self._closed = True
        self.notify()


class Wake:
    """One prefix's wake-up: set by the first commit under the prefix after it was made."""

    __slots__ = ("__weakref__", "event", "revision")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.revision = 0
        """The revision of the commit that set it (0 until then, and when closing set it)."""


class CommitNotifier:
    """Wakes, after each commit, the waiters on a prefix that the commit changed.

    Waiters call :meth:`changed` with their prefix *before* checking for news
    and wait on the :class:`Wake` it returns; the store calls :meth:`notify`
    with the revision and events of every commit. Waiters on one prefix share
    one wake-up, which says the revision that set it: nothing under the prefix
    was committed between the check and that revision, so a waiter reads on
    from there (a quiet prefix's watcher does not fall behind the history the
    store keeps). Wake-ups are held weakly: a prefix nobody waits on any more
    costs the commits nothing. One that is waited on is held strongly for as
    long as it is (:meth:`wait`): what holds the waiting task may be only the
    wake-up's own event.
    """

    def __init__(self) -> None:
        self._wakes: weakref.WeakValueDictionary[str, Wake] = weakref.WeakValueDictionary()
        self._waited: dict[Wake, int] = {}
        """Each wake-up waited on, and by how many."""
        self._closed = False

    def changed(self, prefix: str) -> Wake:
        """Return the wake-up the next commit under ``prefix`` sets (already set once closed)."""
        wake = self._wakes.get(prefix)
        if wake is None:
            wake = Wake()
            if self._closed:
                wake.event.set()
            else:
                self._wakes[prefix] = wake
        return wake

    async def wait(self, wake: Wake) -> None:
        """Wait until ``wake`` is set, holding it strongly meanwhile."""
        self._waited[wake] = self._waited.get(wake, 0) + 1
        try:
            await wake.event.wait()
        finally:
            left = self._waited.pop(wake) - 1
            if left:
                self._waited[wake] = left

    def notify(self, revision: int, events: Sequence[WatchEvent]) -> None:
        """Wake everyone waiting on a prefix of a key that ``events`` (at ``revision``) changed."""
        if not self._wakes:
            return
        keys = [event.kv.key for event in events]
        touched = [p for p in list(self._wakes) if any(key.startswith(p) for key in keys)]
        for prefix in touched:
            wake = self._wakes.pop(prefix, None)
            if wake is not None:
                wake.revision = revision
                wake.event.set()

    def close(self) -> None:
        """Wake every waiter now and from now on (the store is closing)."""
        self._closed = True
        wakes = list(self._wakes.values())
        self._wakes.clear()
        for wake in wakes:
            wake.event.set()


class EventLog:
    """The history of the last ``keep`` revisions, in memory.

    Holds every event with revision in ``(floor, head]``. Old revisions are
    dropped in chunks (once the log holds ``keep`` plus an eighth of it), so
    appending stays amortised O(1).
    """

    def __init__(self, keep: int, *, revision: int = 0) -> None:
        """Create an empty log for a store at ``revision``.

        Args:
            keep: How many revisions to keep at least.
            revision: The store's current revision; the log starts after it.

        """
        self._keep = keep
        self._slack = max(1, keep // 8)
        self._entries: list[tuple[int, int, WatchEvent]] = []
        self._floor = revision
        self._head = revision

    @property
    def floor(self) -> int:
        """Return the newest revision no longer (or never) held: the log starts after it."""
        return self._floor

    @property
    def head(self) -> int:
        """Return the newest revision appended."""
        return self._head

    def append(self, revision: int, events: Sequence[WatchEvent]) -> None:
        """Append the events of one new revision, dropping the oldest if over size."""
        self._entries.extend((revision, seq, event) for seq, event in enumerate(events))
        self._head = revision
        if revision - self._floor > self._keep + self._slack:
            self.discard_through(revision - self._keep)

    def discard_through(self, revision: int) -> None:
        """Forget every event with revision ``<= revision``."""
        revision = min(revision, self._head)
        if revision <= self._floor:
            return
        del self._entries[: bisect_left(self._entries, (revision + 1, 0))]
        self._floor = revision

    def read(self, prefix: str, position: Position, limit: int = READ_BATCH) -> Batch:
        """Return events under ``prefix`` from ``position`` on.

        The caller must check that ``position.revision > floor`` first.
        """
        entries = self._entries
        index = bisect_left(entries, position)
        stop = min(len(entries), index + _SCAN_LIMIT)
        found: list[WatchEvent] = []
        last_revision: int | None = None
        while index < len(entries):
            revision, seq, event = entries[index]
            # Stop at the limits, but never inside a revision: a watcher that
            # has seen part of a transaction sees all of it in the same batch.
            if (index >= stop or len(found) >= limit) and revision != last_revision:
                break
            index += 1
            last_revision = revision
            if event.kv.key.startswith(prefix):
                found.append(event)
        if index < len(entries):
            revision, seq, _ = entries[index]
            return Batch(found, Position(revision, seq), True)
        return Batch(found, max(position, Position(self._head + 1, 0)), False)


class Watcher:
    """An async iterator over the history under one prefix; see the module docstring."""

    def __init__(
        self, read: ReadHistory, notifier: CommitNotifier, prefix: str, start_revision: int
    ) -> None:
        """Create a watcher.

        Args:
            read: The store's history read function.
            notifier: The store's commit notifier.
            prefix: Only keys starting with this are reported.
            start_revision: The first revision to report.

        """
        self._read = read
        self._notifier = notifier
        self._prefix = prefix
        self._position = Position(max(start_revision, 1), 0)
        self._pending: deque[WatchEvent] = deque()
        self._caught_up: Wake | None = None
        """After a read that reached the head: what the next commit under the prefix sets."""
        self._stopped = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._stopped:
                raise StopAsyncIteration
            if self._caught_up is not None:
                # Unset, it says that nothing under the prefix was committed
                # since the last read began: reading again would find nothing.
                caught_up, self._caught_up = self._caught_up, None
                await self._notifier.wait(caught_up)
                # Nor was anything under it committed before the revision that woke it.
                self._position = max(self._position, Position(caught_up.revision, 0))
                continue
            changed = self._notifier.changed(self._prefix)
            batch = await self._read(self._prefix, self._position)
            self._position = batch.position
            self._pending.extend(batch.events)
            if not batch.more:
                self._caught_up = changed
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Stop the iteration; later ``__anext__`` calls end it."""
        self._stopped = True
        self._pending.clear()
