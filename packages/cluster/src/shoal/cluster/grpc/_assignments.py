"""Each worker's assignments, from one watch of the server's store: per-node streams.

A worker's node loop lists and watches its assignments through the NodeState
service (``ListAssignments``, ``WatchAssignments``), and sees only the
instances placed on it. Filtering the store's
own watch per worker would make the server decode every instance change
once per connected worker. :class:`Assignments` follows the store once,
decodes each change once, and hands it only to the streams of the nodes it
concerns, so a change costs the server one decode and costs the other
workers nothing:

* :meth:`Assignments.list` answers a worker's list from memory, at the
  revision the cache reflects.
* :meth:`Assignments.uses` says whether an instance on a node uses a
  ConfigMap or Secret (a worker may read only those): the references are
  indexed per node as each change is decoded, so the check decodes nothing.
* :meth:`Assignments.watch` streams one node's changes from a revision:
  a PUT when an instance is placed on it or changes there, a key-only DELETE
  when one goes or moves away (what :meth:`WorkerScope.forward` sends). Each
  node's recent changes are kept (``history`` of them), so a worker that
  reconnects resumes after the last revision it saw, missing and repeating
  nothing. A revision older than that history, or than the cache's own list,
  raises :class:`~shoal.interfaces.Compacted`, and the worker lists again (as
  it would after an etcd compaction); so does a stream whose reader falls
  more than ``backlog`` changes behind.

When its watch breaks, the cache ends every stream with
:class:`~shoal.interfaces.Unavailable` and lists again; while it is not
following, :attr:`following` is False and the NodeState service answers from
the store directly, filtering per worker.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator

import anyio
from anyio.abc import TaskStatus
from pydantic import ValidationError

from shoal.interfaces import (
    INSTANCES,
    Clock,
    Compacted,
    EventKind,
    Instance,
    KeyValue,
    ListResult,
    ShoalError,
    StateStore,
    Unavailable,
    WatchEvent,
)

__all__ = ["Assignments"]

log = logging.getLogger(__name__)


Ref = tuple[str, str, str]
"""A ConfigMap or Secret an instance uses: ``(kind, namespace, name)``."""


def _placement(value: bytes) -> tuple[str, frozenset[Ref]] | None:
    """Return the node an instance is placed on and what configuration it uses; None if none."""
    try:
        instance = Instance.model_validate_json(value)
    except ValidationError:
        return None
    if instance.node is None:
        return None
    refs = frozenset(
        (kind, instance.namespace, name) for kind, name in instance.template.config_refs()
    )
    return instance.node, refs


class _Stream:
    """One worker's watch: the changes waiting to be sent, or why it ended."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.events: deque[WatchEvent] = deque()
        self.error: ShoalError | None = None
        self.wake = anyio.Event()

    def push(self, event: WatchEvent) -> None:
        if self.error is not None:
            return
        if len(self.events) >= self.backlog:
            self.end(Compacted(f"the watch fell more than {self.backlog} changes behind"))
            return
        self.events.append(event)
        self.wake.set()

    def end(self, error: ShoalError) -> None:
        self.error = error
        self.wake.set()


class Assignments:
    """The instances of every node, kept current by one watch; a stream per worker.

    Args:
        store: The server's store.
        clock: Time for the backoff after the store goes away.
        history: Changes kept per node for a reconnecting worker to resume from.
        backlog: Changes one stream may hold unsent before it is ended.

    """

    def __init__(
        self, store: StateStore, clock: Clock, *, history: int = 256, backlog: int = 4096
    ) -> None:
        self.store = store
        self.clock = clock
        self.history = history
        self.backlog = backlog
        self.revision = 0
        """The store revision the cache reflects."""
        self.following = False
        """Whether the cache follows the store's watch (else the service reads the store)."""
        self.decoded = 0
        """Instance records decoded (a metric: one per change, whoever is connected)."""
        self._listed = 0
        self._by_node: dict[str, dict[str, KeyValue]] = {}
        self._node_of: dict[str, str] = {}
        self._refs_of: dict[str, frozenset[Ref]] = {}
        self._uses: dict[str, dict[Ref, int]] = {}
        """Per node, how many of its instances use each ConfigMap and Secret."""
        self._recent: dict[str, deque[WatchEvent]] = {}
        self._dropped: dict[str, int] = {}
        """Per node, the newest revision its history no longer holds."""
        self._streams: dict[str, set[_Stream]] = {}

    def list(self, node: str) -> ListResult:
        """Return the instances placed on ``node``, at :attr:`revision`.

        Raises:
            Unavailable: the cache is not following the store.

        """
        if not self.following:
            raise Unavailable("the server's assignment cache is listing the store again")
        items = sorted(self._by_node.get(node, {}).values(), key=lambda kv: kv.key)
        return ListResult(items, self.revision)

    def uses(self, node: str, kind: str, namespace: str, name: str) -> bool:
        """Whether an instance placed on ``node`` uses ConfigMap or Secret ``namespace/name``.

        Raises:
            Unavailable: the cache is not following the store.

        """
        if not self.following:
            raise Unavailable("the server's assignment cache is listing the store again")
        return (kind, namespace, name) in self._uses.get(node, {})

    async def watch(self, node: str, start: int | None) -> AsyncIterator[WatchEvent]:
        """Yield ``node``'s changes from revision ``start`` (None: from now on).

        Raises:
            Compacted: the changes from ``start`` are no longer known; list again.
            Unavailable: the cache lost the store.

        """
        if not self.following:
            raise Unavailable("the server's assignment cache is listing the store again")
        start = self.revision + 1 if start is None else start
        oldest = max(self._listed, self._dropped.get(node, 0))
        if start <= oldest:
            raise Compacted(
                f"the server keeps node {node}'s changes after revision {oldest} only; "
                f"asked from {start}: list again",
                revision=start,
            )
        stream = _Stream(self.backlog)
        for event in self._recent.get(node, ()):
            if event.revision >= start:
                stream.push(event)
        streams = self._streams.setdefault(node, set())
        streams.add(stream)
        try:
            while True:
                while stream.events:
                    yield stream.events.popleft()
                if stream.error is not None:
                    raise stream.error
                await stream.wake.wait()
                stream.wake = anyio.Event()
        finally:
            streams.discard(stream)
            if not streams:
                self._streams.pop(node, None)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """List, then follow the store; list again after any gap. Never returns."""
        delay, started = 1.0, False
        while True:
            try:
                listed = await self.store.list(INSTANCES)
                self._load(listed)
                self.following = True
                delay = 1.0
                if not started:
                    started = True
                    task_status.started()
                async for event in self.store.watch(INSTANCES, listed.revision + 1):
                    self._apply(event)
                    self.revision = event.revision
            except (Compacted, Unavailable) as exc:
                self.following = False
                for streams in self._streams.values():
                    for stream in streams:
                        stream.end(Unavailable(f"the server's assignment cache restarts: {exc}"))
                log.warning("the assignment cache lost the store (%s); listing again", exc)
                await self.clock.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _load(self, listed: ListResult) -> None:
        self._by_node.clear()
        self._node_of.clear()
        self._refs_of.clear()
        self._uses.clear()
        self._recent.clear()
        self._dropped.clear()
        for kv in listed.items:
            placed = _placement(kv.value)
            self.decoded += 1
            if placed is not None:
                node, refs = placed
                self._by_node.setdefault(node, {})[kv.key] = kv
                self._node_of[kv.key] = node
                self._count(node, kv.key, refs)
        self._listed = self.revision = listed.revision

    def _apply(self, event: WatchEvent) -> None:
        key = event.kv.key
        old = self._node_of.pop(key, None)
        if old is not None:
            self._uncount(old, key)
        new, refs = None, frozenset[Ref]()
        if event.kind == EventKind.PUT:
            placed = _placement(event.kv.value)
            self.decoded += 1
            if placed is not None:
                new, refs = placed
        if old is not None and old != new:
            self._by_node[old].pop(key, None)
            if not self._by_node[old]:
                del self._by_node[old]
            tombstone = KeyValue(key, b"", 0, event.kv.mod_revision, 0)
            self._send(old, WatchEvent(EventKind.DELETE, tombstone))
        if new is not None:
            self._node_of[key] = new
            self._count(new, key, refs)
            self._by_node.setdefault(new, {})[key] = event.kv
            self._send(new, WatchEvent(EventKind.PUT, event.kv))

    def _count(self, node: str, key: str, refs: frozenset[Ref]) -> None:
        if not refs:
            return
        self._refs_of[key] = refs
        uses = self._uses.setdefault(node, {})
        for ref in refs:
            uses[ref] = uses.get(ref, 0) + 1

    def _uncount(self, node: str, key: str) -> None:
        refs = self._refs_of.pop(key, frozenset())
        uses = self._uses.get(node)
        if uses is None:
            return
        for ref in refs:
            left = uses.get(ref, 0) - 1
            if left > 0:
                uses[ref] = left
            else:
                uses.pop(ref, None)
        if not uses:
            del self._uses[node]

    def _send(self, node: str, event: WatchEvent) -> None:
        recent = self._recent.setdefault(node, deque())
        if len(recent) >= self.history:
            self._dropped[node] = recent.popleft().revision
        recent.append(event)
        for stream in self._streams.get(node, ()):
            stream.push(event)
