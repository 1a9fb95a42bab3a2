"""A work queue of keys to reconcile: deduplicated, one worker per key, retried with backoff.

The shape of client-go's rate-limited work queue, which Kubernetes
controllers are built on, in anyio:

* :meth:`WorkQueue.add` of a key that is already waiting does nothing: ten
  changes to one workload before a worker gets to it make one pass.
* A key is handed to one worker at a time (:meth:`get` … :meth:`done`). A key
  added while a worker has it waits, and is handed out again after
  :meth:`done`, so the worker's pass never misses a change that came in
  meanwhile, and two workers never reconcile the same key at once.
* :meth:`retry` puts a key back after a per-key exponential backoff (``first``
  doubling to ``cap``) and an overall token bucket (``rate`` retries a second,
  ``burst`` at once), so a key that keeps failing neither spins nor starves
  the others; :meth:`forget` resets a key's backoff after a success.
* :meth:`add_after` wakes a key later (a restart backoff ending); a key
  waits for one wake-up at a time, the earliest asked for (the pass it brings
  asks again for what it still needs).

Time goes through the injected :class:`~shoal.interfaces.Clock`, so tests
move a manual clock instead of sleeping.

With ``metrics``, the queue records under its ``name`` the keys added, how
long each waited before a worker took it, how long the worker held it, and
the retries (the ``shoal_workqueue_*`` series; its owner reports
:attr:`WorkQueue.depth` at scrape time).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

import anyio
import anyio.lowlevel

from shoal.interfaces import NO_METRICS, Catalogue, Clock, Metrics

__all__ = ["QueueClosed", "WorkQueue"]


class QueueClosed(Exception):
    """:meth:`WorkQueue.get` on a queue that was closed: the worker should end."""


class WorkQueue:
    """Keys waiting to be reconciled, each handed to one worker at a time.

    Args:
        clock: Time for delayed adds and retries.
        first: Seconds before a key's first retry; doubles per failure.
        cap: The longest per-key retry delay.
        rate: Retries per second allowed overall (the token bucket's refill).
        burst: Retries allowed at once (the bucket's size).
        metrics: Where to record the queue's series.
        name: The queue's ``queue`` label.

    """

    def __init__(
        self,
        clock: Clock,
        *,
        first: float = 0.05,
        cap: float = 300.0,
        rate: float = 10.0,
        burst: int = 100,
        metrics: Metrics = NO_METRICS,
        name: str = "control",
    ) -> None:
        self.clock = clock
        self.first = first
        self.cap = cap
        self.rate = rate
        self.burst = burst
        self._ready: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._deadlines: dict[str, float] = {}
        """Each delayed key's wake-up: the one entry of ``_delayed`` that counts for it."""
        self._order = itertools.count()
        self._failures: dict[str, int] = {}
        self._tokens = float(burst)
        self._refilled = clock.monotonic()
        self._changed = anyio.Event()
        self._closed = False
        self.metrics = metrics
        self.name = name
        self._queued_at: dict[str, float] = {}
        """When each waiting key was added (for the queue latency)."""
        self._taken_at: dict[str, float] = {}
        """When a worker took each key in progress (for the work duration)."""

    def __len__(self) -> int:
        """Return how many keys wait to be handed out now (not delayed, not in progress)."""
        return len(self._ready)

    @property
    def depth(self) -> int:
        """Return how many keys wait for a worker (a metric): not those due later.

        As client-go's ``workqueue_depth``: a key whose only wait is a later
        wake-up (a recheck, a retry's backoff) is not work waiting.
        """
        return len(self._dirty)

    def add(self, key: str) -> None:
        """Queue ``key``, unless it waits already; a key in progress is queued after it is done."""
        if self._closed or key in self._dirty:
            return
        self._dirty.add(key)
        self._queued_at[key] = self.clock.monotonic()
        self.metrics.inc(Catalogue.WORKQUEUE_ADDS, self.name)
        if key not in self._processing:
            self._ready.append(key)
            self._wake()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` once ``delay`` seconds have passed (at once if ``delay <= 0``)."""
        if delay <= 0:
            self.add(key)
            return
        if self._closed:
            return
        deadline = self.clock.monotonic() + delay
        held = self._deadlines.get(key)
        if held is not None and held <= deadline:
            return  # it wakes earlier already
        self._deadlines[key] = deadline
        heapq.heappush(self._delayed, (deadline, next(self._order), key))
        if len(self._delayed) > 2 * len(self._deadlines) + 64:  # superseded entries: drop them
            self._delayed = [e for e in self._delayed if self._deadlines.get(e[2]) == e[0]]
            heapq.heapify(self._delayed)
        self._wake()

    def retry(self, key: str) -> float:
        """Queue ``key`` again after its backoff (and the overall rate limit); return the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        self.metrics.inc(Catalogue.WORKQUEUE_RETRIES, self.name)
        backoff: float = min(self.first * 2.0 ** (failures - 1), self.cap)
        delay = max(backoff, self._take_token())
        self.add_after(key, delay)
        return delay

    def queued(self, key: str) -> bool:
        """Whether ``key`` waits for a pass (now, or once its pass in progress is done).

        A key waiting only for its retry's backoff (:meth:`add_after`) does not.
        """
        return key in self._dirty

    def forget(self, key: str) -> None:
        """Reset ``key``'s backoff: it succeeded."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        """Return how many times in a row ``key`` has been retried."""
        return self._failures.get(key, 0)

    async def get(self) -> str:
        """Wait for a key and hand it to the caller, who must call :meth:`done` with it.

        Raises:
            QueueClosed: the queue was closed.

        """
        while True:
            if self._closed:
                raise QueueClosed
            self._promote_due()
            if self._ready:
                key = self._ready.popleft()
                self._take(key)
                return key
            if self._changed.is_set():  # every waiter shares one event until it fires
                self._changed = anyio.Event()
            changed = self._changed
            if self._delayed:
                await self._wait_either(changed, self._delayed[0][0] - self.clock.monotonic())
            else:
                await changed.wait()

    async def get_many(self, limit: int) -> list[str]:
        """Wait for a key, then take it and up to ``limit - 1`` more that are ready now.

        For a worker that handles keys in batches (one scheduling call for
        many workloads); each key must be given back with :meth:`done`.

        Raises:
            QueueClosed: the queue was closed.

        """
        keys = [await self.get()]
        while self._ready and len(keys) < limit:
            key = self._ready.popleft()
            self._take(key)
            keys.append(key)
        return keys

    def done(self, key: str) -> None:
        """Mark ``key``'s pass finished; if it was added meanwhile, it is queued again."""
        self._processing.discard(key)
        taken = self._taken_at.pop(key, None)
        if taken is not None:
            self.metrics.observe(
                Catalogue.WORKQUEUE_WORK_DURATION, self.clock.monotonic() - taken, self.name
            )
        if key in self._dirty:
            self._ready.append(key)
            self._wake()

    def close(self) -> None:
        """Stop handing out keys: waiting and later :meth:`get` calls raise QueueClosed."""
        self._closed = True
        self._wake()

    def _take(self, key: str) -> None:
        """Hand ``key`` to a worker: it no longer waits."""
        self._dirty.discard(key)
        self._processing.add(key)
        now = self.clock.monotonic()
        self._taken_at[key] = now
        queued = self._queued_at.pop(key, None)
        if queued is not None:
            self.metrics.observe(Catalogue.WORKQUEUE_QUEUE_DURATION, now - queued, self.name)

    def _promote_due(self) -> None:
        now = self.clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            deadline, _, key = heapq.heappop(self._delayed)
            if self._deadlines.get(key) != deadline:
                continue  # superseded by an earlier wake-up, which came already
            del self._deadlines[key]
            self.add(key)

    def _take_token(self) -> float:
        """Take a retry token; return how long until it is there (0 if one is left)."""
        now = self.clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def _wake(self) -> None:
        self._changed.set()

    async def _wait_either(self, changed: anyio.Event, delay: float) -> None:
        """Wait until something is added, or ``delay`` seconds on the queue's clock."""
        if delay <= 0:
            await anyio.lowlevel.checkpoint()
            return
        async with anyio.create_task_group() as waiter:

            async def timer() -> None:
                await self.clock.sleep(delay)
                waiter.cancel_scope.cancel()

            waiter.start_soon(timer)
            await changed.wait()
            waiter.cancel_scope.cancel()
