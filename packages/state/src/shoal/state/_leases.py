"""Lease bookkeeping: deadlines, what is due, and a wake-able wait for the sweeper.

A lease is an id, a ttl and a deadline on the store clock's *monotonic* time,
so a wall-clock jump neither expires nor prolongs leases while the store runs.
``SqliteStore`` additionally persists a wall-clock deadline, which it turns
back into a monotonic one when it reopens.

Expiry happens in two places (see ``StoreBase``): lazily at the start of every
store operation (:meth:`LeaseBook.any_due` is an O(1) check against a cached
lower bound of the earliest deadline), and from a background sweeper that
sleeps until the earliest deadline or until a new lease is granted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio

from shoal.interfaces import Clock, InvalidInput, NotFound

from ._history import Notifier

__all__ = ["Lease", "LeaseBook", "check_ttl", "lease_not_found", "sleep_or_wake"]


@dataclass(slots=True)
class Lease:
    """One live lease."""

    id: int
    ttl: float
    deadline: float
    """When it expires, on the clock's monotonic time."""


def check_ttl(ttl: float) -> None:
    """Reject a ttl that is not a positive, finite number of seconds.

    Raises:
        InvalidInput: the ttl is zero, negative, NaN or infinite.

    """
    if not (ttl > 0 and math.isfinite(ttl)):
        raise InvalidInput(
            f"a lease ttl must be a positive number of seconds, not {ttl!r}", field="ttl"
        )


def lease_not_found(lease: int) -> NotFound:
    """Return the error for a lease that does not exist (any more)."""
    return NotFound(
        f"lease {lease} does not exist or has expired; grant a new lease and use its id",
        lease=lease,
    )


class LeaseBook:
    """The live leases of one store, by id."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._leases: dict[int, Lease] = {}
        # A lower bound of the earliest deadline: renewals only move deadlines
        # later, so the bound stays valid until recomputed in ``due``.
        self._earliest = math.inf
        self.granted = Notifier()
        """Notified when a lease is added, so the sweeper can re-plan its sleep."""

    def __contains__(self, lease: int) -> bool:
        return lease in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def add(self, lease: int, ttl: float, *, remaining: float | None = None) -> Lease:
        """Track a lease expiring in ``remaining`` seconds (default: ``ttl``)."""
        deadline = self._clock.monotonic() + (ttl if remaining is None else remaining)
        record = Lease(lease, ttl, deadline)
        self._leases[lease] = record
        self._earliest = min(self._earliest, deadline)
        self.granted.notify()
        return record

    def renew(self, lease: int) -> Lease:
        """Move a lease's deadline to ``ttl`` seconds from now.

        Raises:
            NotFound: the lease is unknown.

        """
        record = self._leases.get(lease)
        if record is None:
            raise lease_not_found(lease)
        record.deadline = self._clock.monotonic() + record.ttl
        return record

    def remove(self, lease: int) -> Lease | None:
        """Forget a lease; return it, or None if it was unknown."""
        return self._leases.pop(lease, None)

    def any_due(self) -> bool:
        """Return whether some lease may have expired (cheap; may say yes spuriously)."""
        return self._clock.monotonic() >= self._earliest

    def due(self) -> list[int]:
        """Return the ids of expired leases, oldest deadline first (still tracked)."""
        now = self._clock.monotonic()
        expired = sorted(
            (record for record in self._leases.values() if record.deadline <= now),
            key=lambda record: (record.deadline, record.id),
        )
        # Expired leases stay tracked (and keep the bound low) until removed.
        self._earliest = min((r.deadline for r in self._leases.values()), default=math.inf)
        return [record.id for record in expired]

    def seconds_until_next(self) -> float | None:
        """Return how long until the earliest deadline (<= 0 if overdue), or None."""
        if not self._leases:
            return None
        earliest = min(record.deadline for record in self._leases.values())
        return earliest - self._clock.monotonic()


async def sleep_or_wake(clock: Clock, seconds: float | None, wake: anyio.Event) -> None:
    """Return after ``seconds`` of clock time, or as soon as ``wake`` is set.

    ``None`` waits for ``wake`` only.
    """
    if seconds is None:
        await wake.wait()
        return
    async with anyio.create_task_group() as group:

        async def sleep_then_stop() -> None:
            await clock.sleep(max(seconds, 0.0))
            group.cancel_scope.cancel()

        group.start_soon(sleep_then_stop)
        await wake.wait()
        group.cancel_scope.cancel()
