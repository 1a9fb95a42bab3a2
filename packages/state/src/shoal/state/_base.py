"""What the in-process stores share: lifecycle, the lease sweeper, watch, elections.

A store is an async context manager. Entering it opens the backend and
starts a task group with one background task, the lease sweeper; leaving it
(or :meth:`StoreBase.aclose`) stops the sweeper, wakes every watcher (whose
next read raises :class:`~shoal.interfaces.Unavailable`) and releases the
backend. ``MemoryStore`` may also be used without entering it; its leases
then expire lazily only, at the next operation.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from shoal.interfaces import (
    Clock,
    Compare,
    DeleteOp,
    InvalidInput,
    KeyValue,
    Leadership,
    ListResult,
    PutOp,
    ShoalError,
    SystemClock,
    TxnResult,
    Unavailable,
    WatchEvent,
)

from . import _election
from ._history import Batch, CommitNotifier, Position, Watcher
from ._leases import LeaseBook, sleep_or_wake

__all__ = ["DEFAULT_HISTORY_SIZE", "StoreBase"]

DEFAULT_HISTORY_SIZE = 100_000
"""How many revisions of history a store keeps for watchers by default."""

_SWEEP_RETRY_SECONDS = 1.0
_log = logging.getLogger("shoal.state")


class StoreBase(ABC):
    """The shared half of ``MemoryStore`` and ``SqliteStore``.

    Subclasses provide storage (the abstract methods); this class provides
    the context-manager lifecycle, the background lease sweeper, ``watch`` on
    top of :meth:`_read_history`, and leader election on top of ``txn``.
    """

    def __init__(self, *, clock: Clock | None, history_size: int) -> None:
        if history_size < 1:
            raise InvalidInput(
                f"history_size must be at least 1 revision, not {history_size}",
                field="history_size",
            )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._history_size = history_size
        self._leases = LeaseBook(self._clock)
        self._changes = CommitNotifier()
        self._closed = False
        self._stack: AsyncExitStack | None = None
        self._sweeper: anyio.CancelScope | None = None

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError(f"{self!r} is already open; enter it once")
        stack = AsyncExitStack()
        stack.push_async_callback(self.aclose)
        try:
            await self._open()
            group = await stack.enter_async_context(anyio.create_task_group())
            await group.start(self._sweep_leases)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if self._sweeper is not None:
            self._sweeper.cancel()
        if stack is None:
            await self.aclose()
            return
        try:
            await stack.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group:
            # The task group wraps what the ``async with`` body raised; the
            # caller should see that error itself, as from any other resource.
            if exc is None or group.exceptions != (exc,):
                raise
            # Returning lets the body's exception propagate unchanged.

    async def aclose(self) -> None:
        """Stop the sweeper, wake watchers and release the backend. Idempotent."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._closed:
            return
        self._closed = True
        self._changes.close()
        self._leases.granted.close()
        await self._close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"the state store {self!r} is closed; open a new one")

    async def _sweep_leases(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Expire leases on time even when nobody uses the store."""
        with anyio.CancelScope() as scope:
            self._sweeper = scope
            task_status.started()
            while True:
                # Take the wake-up event before reading deadlines: a lease
                # granted in between then still wakes this loop.
                granted = self._leases.granted.changed()
                delay = self._leases.seconds_until_next()
                if delay is None or delay > 0:
                    await sleep_or_wake(self._clock, delay, granted)
                if self._closed:
                    return
                try:
                    await self._expire_leases()
                except ShoalError as exc:
                    _log.warning("lease expiry failed (retrying): %s", exc)
                    await self._clock.sleep(_SWEEP_RETRY_SECONDS)

    # -- watch and elections ---------------------------------------------------

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        ``None`` starts after the revision current when ``watch`` is called.
        The iterator never ends by itself; cancel the task or break out of the
        loop to stop.

        Raises:
            Compacted: ``start_revision`` (or the position of a watcher that
                fell that far behind) is older than the history kept.
            Unavailable: the store was closed.

        """
        start = self._head_revision() + 1 if start_revision is None else start_revision
        return Watcher(self._read_history, self._changes, prefix, start)

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Block until ``candidate`` leads ``election`` on ``lease``; return the proof.

        Raises:
            NotFound: ``lease`` does not exist or expired.

        """
        return await _election.campaign(self, election, candidate, lease)

    async def resign(self, leadership: Leadership) -> None:
        """Give up leadership (deletes the election key if still ours)."""
        await _election.resign(self, leadership)

    async def leader(self, election: str) -> str | None:
        """Return the current leader's candidate name, or None."""
        return await _election.leader(self, election)

    # -- what a backend provides -----------------------------------------------

    @abstractmethod
    async def _open(self) -> None:
        """Open the backend (called by ``__aenter__``)."""

    @abstractmethod
    async def _close(self) -> None:
        """Release the backend (called once by ``aclose``)."""

    @abstractmethod
    def _head_revision(self) -> int:
        """Return the last committed revision, without I/O."""

    @abstractmethod
    async def _read_history(self, prefix: str, position: Position) -> Batch:
        """Read history for a watcher; raise Compacted if ``position`` is gone."""

    @abstractmethod
    async def _expire_leases(self) -> None:
        """Expire every lease past its deadline, deleting its keys."""

    @abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""

    @abstractmethod
    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key`` and return the new store revision."""

    @abstractmethod
    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist."""

    @abstractmethod
    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, sorted by key, and the store revision."""

    @abstractmethod
    async def revision(self) -> int:
        """Return the current store revision (0 for an empty store)."""

    @abstractmethod
    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Atomically run ``success`` if every compare holds, else ``failure``."""

    @abstractmethod
    async def grant_lease(self, ttl: float) -> int:
        """Create a lease that expires ``ttl`` seconds after its last renewal."""

    @abstractmethod
    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl."""

    @abstractmethod
    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys."""

    @abstractmethod
    async def compact(self, revision: int) -> None:
        """Discard history before ``revision``; watching from earlier raises Compacted."""
