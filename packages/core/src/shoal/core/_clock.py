"""Clocks: the system clock (the vocabulary's, re-exported), and a manual clock tests drive.

Loops never call ``time`` or ``anyio.sleep`` directly; they take a
:class:`~shoal.interfaces.Clock`, so a test can move time forward and watch
exactly what a timer-driven pass does.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel

from shoal.interfaces import SystemClock

__all__ = ["ManualClock", "SystemClock"]


class ManualClock:
    """A clock that moves only when :meth:`advance` is called.

    Sleepers wake, in deadline order, once the clock has passed their deadline.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall0 = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        """Return the start time plus the time advanced so far."""
        return self._wall0 + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        """Return the seconds advanced so far."""
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake))
        await wake.wait()

    @property
    def sleepers(self) -> int:
        """Return how many tasks are waiting on this clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            _, _, wake = heapq.heappop(self._sleepers)
            wake.set()
