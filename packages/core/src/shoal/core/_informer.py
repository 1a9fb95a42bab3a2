"""A cache of one key prefix, fed by the store's watch: the informer pattern.

A loop that re-lists the store on every change pays for the whole world per
change. An :class:`Informer` lists its prefix once, at a revision, then applies
the watch's events from the next revision on, in order, so a loop reads a
local cache and a change costs what it touches:

* **Gaps.** A watch that fails (the store went away) or that asks for history
  the store has compacted is not resumed blindly: the informer lists again
  and replaces its cache, telling its listeners about every key that changed
  or vanished meanwhile, as if they had seen each event.
* **Freshness.** :attr:`revision` is the store revision the cache reflects;
  :attr:`following` says whether the watch runs (a loop does not act while
  it does not: its view may be missing what changed since).
  A loop that has written at revision ``r`` under the prefix waits with
  :meth:`caught_up` before it decides again, so it never acts on a view older
  than its own last write.
* **Indexes.** :meth:`add_index` keeps a secondary index (instances by
  workload, by node) up to date, so "the instances on node n" costs the
  size of the answer.
* **Listeners** get ``(key, old, new)`` for every change (``None`` for absent),
  synchronously and in revision order; a work queue's ``add`` is the usual one.

A value that cannot be decoded is logged and treated as absent: one bad
record never stops the cache.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, KeysView
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from shoal.interfaces import (
    Clock,
    Compacted,
    EventKind,
    KeyValue,
    ListResult,
    PutOp,
    Unavailable,
    WatchEvent,
)

from ._backoff import Backoff

__all__ = ["Informer", "Listable", "Listener"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_EXPECTED = 100_000
"""Most writes an informer waits to see come back (see :meth:`Informer.expect`)."""

Listener = Callable[[str, T | None, T | None], None]
"""Called with ``(key, old, new)`` for each change; ``None`` stands for absent."""


class Listable(Protocol):
    """What an informer reads: a list at a revision, then a watch (a StateStore is one)."""

    async def list(self, prefix: str) -> ListResult:
        """Return the keys under ``prefix`` and the revision they reflect."""
        ...

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield the changes under ``prefix`` from ``start_revision`` on."""
        ...


class Informer(Generic[T]):
    """The objects under one prefix, kept current by a watch.

    Args:
        store: The store to list and watch (or any other :class:`Listable`).
        prefix: The key prefix (e.g. ``/instances/``).
        decode: Turns a stored key and value (with its revisions, for a later
            compare-and-swap) into an object; raises ValueError (a pydantic
            ValidationError is one) for a bad one.
        clock: Time for the backoff after the store goes away.

    """

    def __init__(
        self, store: Listable, prefix: str, decode: Callable[[KeyValue], T], clock: Clock
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.decode = decode
        self._expected: dict[str, bytes] = {}
        """Values this process is writing, by key: see :meth:`expect`."""
        self._makers: dict[str, Callable[[KeyValue], T]] = {}
        """What builds each expected value's object: beside it, not in a tuple with it, since
        a tuple per written object is one more object the garbage collector walks."""
        self.clock = clock
        self.revision = 0
        """The store revision this cache reflects (0 before the first list)."""
        self.synced = anyio.Event()
        """Set once the first list is in the cache."""
        self.relists = 0
        """How many times the cache was rebuilt after a gap (a metric)."""
        self.following = False
        """Whether the watch runs: False from a gap until the cache is listed again."""
        self._objects: dict[str, T] = {}
        self._revisions: dict[str, int] = {}
        """The ``mod_revision`` each cached object was decoded from."""
        self._listeners: list[Listener[T]] = []
        self._indexers: dict[str, Callable[[T], Iterable[str]]] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self._waiters: list[tuple[int, anyio.Event]] = []

    # --- reading ---------------------------------------------------------

    def get(self, key: str) -> T | None:
        """Return the object at ``key``, or None."""
        return self._objects.get(key)

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: object) -> bool:
        """Whether an object is cached at ``key``."""
        return key in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def keys(self) -> KeysView[str]:
        """Return the cached keys: a live view, which asks ``key in`` as fast as a dict does."""
        return self._objects.keys()

    def values(self) -> list[T]:
        """Return every cached object (a copy of the list; the objects are shared)."""
        return list(self._objects.values())

    def by_index(self, index: str, value: str) -> list[T]:
        """Return the objects whose ``index`` function yields ``value``.

        Raises:
            KeyError: no index of that name.

        """
        keys = self._indexes[index].get(value, set())
        return [self._objects[key] for key in sorted(keys)]

    async def caught_up(self, revision: int, *, within: float = 30.0) -> None:
        """Wait until the cache reflects ``revision`` (a write under this prefix).

        Raises:
            Unavailable: it did not within ``within`` seconds (the store went away).

        """
        if self.revision >= revision:
            await anyio.lowlevel.checkpoint()
            return
        reached = anyio.Event()
        self._waiters.append((revision, reached))
        with anyio.move_on_after(within):
            await reached.wait()
            return
        raise Unavailable(
            f"the cache of {self.prefix} has not shown revision {revision} after {within:g} s "
            f"(it is at {self.revision}): the store's watch is slow or gone",
            prefix=self.prefix,
        )

    # --- wiring ----------------------------------------------------------

    def listen(self, listener: Listener[T]) -> None:
        """Call ``listener(key, old, new)`` on every change from now on."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Stop calling the listeners and forget the cache: this informer serves no one now.

        A loop calls this when it stops (a leader's term ends). Its listeners
        are mostly the loop's bound methods, a cycle; and the loop's tasks end
        cancelled, their frames held by the cancellation's traceback, another:
        both wait for the collector's rare full pass, and the whole cache with
        them, unless it is dropped here. :meth:`refresh` or :meth:`run` fills it again.
        """
        self._listeners.clear()
        self._objects.clear()
        self._revisions.clear()
        for index in self._indexes.values():
            index.clear()
        self._expected.clear()
        self._makers.clear()
        self.following = False

    def add_index(self, name: str, values: Callable[[T], Iterable[str]]) -> None:
        """Keep an index ``name`` from each object to the strings ``values`` gives."""
        self._indexers[name] = values
        index: dict[str, set[str]] = {}
        for key, obj in self._objects.items():
            for value in values(obj):
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    # --- running ---------------------------------------------------------

    async def refresh(self) -> None:
        """List the prefix once and make the cache what it says (for a caller not running it).

        Raises:
            Unavailable: the store cannot be reached; the cache is kept as it was.

        """
        listed = await self.store.list(self.prefix)
        self._replace(listed.items, listed.revision)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """List, then follow the watch; relist after any gap. Started once the first list is in.

        Never returns; cancel it to stop. A store that cannot be reached is
        waited out with a backoff (1 s doubling to 10 s), the cache kept as it was.
        """
        backoff = Backoff(self.clock)
        started = False
        while True:
            try:
                listed = await self.store.list(self.prefix)
                self._replace(listed.items, listed.revision)
                self.following = True
                if not started:
                    started = True
                    self.synced.set()
                    task_status.started()
                backoff.reset()
                async for event in self.store.watch(self.prefix, listed.revision + 1):
                    self._apply(event)
            except Compacted:
                self.following = False
                log.info("cache of %s fell behind the store's history: listing again", self.prefix)
            except Unavailable as exc:
                self.following = False
                log.warning(
                    "cache of %s lost its store (%s); listing again in %g s",
                    self.prefix,
                    exc,
                    backoff.delay,
                )
                await backoff.wait()
            self.relists += 1

    def _replace(self, items: list[KeyValue], revision: int) -> None:
        """Make the cache what a list at ``revision`` says, telling listeners the differences.

        A key listed at the revision its cached object came from is unchanged:
        it is neither decoded nor compared again, so a relist costs what
        changed meanwhile (and the listing itself). Revisions only grow in a
        store's life; a store restored from a backup is a new store, and its
        caches are new ones.
        """
        fresh: dict[str, T] = {}
        changed: list[str] = []
        for kv in items:
            cached = self._objects.get(kv.key)
            if cached is not None and self._revisions.get(kv.key) == kv.mod_revision:
                fresh[kv.key] = cached
                continue
            obj = self._decoded(kv)
            if obj is not None:
                fresh[kv.key] = obj
                self._revisions[kv.key] = kv.mod_revision
                changed.append(kv.key)
        for key in [k for k in self._objects if k not in fresh]:
            self._set(key, None)
        for key in changed:
            if self._objects.get(key) != fresh[key]:
                self._set(key, fresh[key])
        self._advance(revision)

    def _apply(self, event: WatchEvent) -> None:
        key = event.kv.key
        if event.kind == EventKind.DELETE:
            self._set(key, None)
        else:
            obj = self._decoded(event.kv)
            self._set(key, obj)
            if obj is not None:
                self._revisions[key] = event.kv.mod_revision
        self._advance(event.revision)

    def _set(self, key: str, new: T | None) -> None:
        old = self._objects.get(key)
        if old is None and new is None:
            return
        for name, values in self._indexers.items():
            index = self._indexes[name]
            if old is not None:
                for value in values(old):
                    keys = index.get(value)
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del index[value]
            if new is not None:
                for value in values(new):
                    index.setdefault(value, set()).add(key)
        if new is None:
            del self._objects[key]
            self._revisions.pop(key, None)
        else:
            self._objects[key] = new
        for listener in self._listeners:
            listener(key, old, new)

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        waiting = []
        for wanted, reached in self._waiters:
            if wanted <= self.revision:
                reached.set()
            else:
                waiting.append((wanted, reached))
        self._waiters = waiting

    def expect(self, writes: Collection[PutOp], make: Callable[[KeyValue], T]) -> None:
        """Say that this process is making ``writes``, whose objects ``make`` builds.

        When a write comes back through the watch with exactly its bytes, the
        cache takes ``make(kv)`` instead of decoding the value again: a loop
        that writes thousands of objects does not parse them all back.
        Expectations that never come back (the write failed) would pile up:
        once MAX_EXPECTED would wait, all are dropped (the cache then decodes
        those writes, as it would without them).
        """
        expected, makers = self._expected, self._makers
        if len(expected) + len(writes) > MAX_EXPECTED:
            expected.clear()
            makers.clear()
        for put in writes:
            expected[put.key] = put.value
            makers[put.key] = make

    def _decoded(self, kv: KeyValue) -> T | None:
        expected = self._expected.pop(kv.key, None)
        if expected is not None:
            make = self._makers.pop(kv.key)
            if expected == kv.value:
                return make(kv)
        try:
            return self.decode(kv)
        except ValueError as exc:
            log.error(
                "cache of %s: ignoring %s, which cannot be read: %s", self.prefix, kv.key, exc
            )
            return None
