"""Retry pacing for loops that outlive an unreachable store.

A loop that fails because a dependency is down waits ``first`` seconds, then
twice as long after each further failure, up to ``cap``; one success resets
the delay. The wait goes through the loop's :class:`~shoal.interfaces.Clock`,
so tests move it forward instead of sleeping.
"""

from __future__ import annotations

from shoal.interfaces import Clock

__all__ = ["Backoff"]


class Backoff:
    """Exponential delays between retries: ``first`` s, doubling up to ``cap`` s."""

    def __init__(self, clock: Clock, *, first: float = 1.0, cap: float = 10.0) -> None:
        self.clock = clock
        self.first = first
        self.cap = cap
        self.delay = first
        """The delay the next :meth:`wait` sleeps."""

    async def wait(self) -> None:
        """Sleep the current delay, then double it (up to the cap) for the next failure."""
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        await self.clock.sleep(delay)

    def reset(self) -> None:
        """Start again from ``first`` after a success."""
        self.delay = self.first
