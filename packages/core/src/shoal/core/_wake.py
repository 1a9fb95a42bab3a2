"""Level-triggered loop plumbing: wake on store changes or a timer, then re-read.

A store that cannot be reached does not end the loop. A pass that raises
:class:`~shoal.interfaces.Unavailable` is logged and tried again after a
backoff (1 s, doubling to 10 s). A watch that fails, or falls behind the
history the store keeps, is restarted after a backoff from the store's
revision at that time, and then wakes a pass, since what changed meanwhile
went unseen. Nothing acts on what it could not read: the control loop
schedules nothing while its store is down, and the node loop leaves its
containers running. A :class:`~shoal.core._fence.Deposed` error is the
exception: it ends the loop, because a deposed leader must stop, not retry.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from shoal.interfaces import Clock, Compacted, StateStore, Unavailable, WatchEvent

from ._backoff import Backoff
from ._fence import Deposed

__all__ = ["Trigger", "run_level_triggered", "run_woken_by"]

log = logging.getLogger(__name__)

Trigger = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]
"""A task that calls the given wake-up function whenever something outside the store changed."""


async def run_level_triggered(
    store: StateStore,
    clock: Clock,
    prefixes: Sequence[str],
    resync: float,
    reconcile: Callable[[], Awaitable[float | None]],
    *,
    triggers: Sequence[Trigger] = (),
    ignore: Callable[[WatchEvent], bool] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``reconcile`` after any change under ``prefixes``, and at least every ``resync`` s.

    ``reconcile`` returns how soon it wants another pass: ``0`` for right away
    (it lost a race, or made changes that need a follow-up), a number of
    seconds for a timer of its own (a backoff ending), or None for "when
    something changes". Watches start before the first pass, so no change can
    slip between a read and the next wake-up; changes that arrive during a pass
    coalesce into one more pass. Each of ``triggers`` runs as a task beside the
    watches, waking a pass on changes the store does not see. A change for
    which ``ignore`` returns True wakes nothing (e.g. a node's heartbeat).

    Raises:
        Deposed: a pass found that its leader's term is over.

    """
    start = await _current_revision(store, Backoff(clock))
    watches: list[Trigger] = [
        functools.partial(_keep_watching, store, clock, prefix, start + 1, ignore)
        for prefix in prefixes
    ]
    await _run_passes(clock, resync, reconcile, [*watches, *triggers], task_status)


async def run_woken_by(
    trigger: Trigger,
    clock: Clock,
    resync: float,
    reconcile: Callable[[], Awaitable[float | None]],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``reconcile`` as :func:`run_level_triggered` does, woken by ``trigger`` alone.

    For a loop whose caches watch the state for it (their listeners are the
    trigger), so it opens no watch of its own and needs no store.
    """
    await _run_passes(clock, resync, reconcile, [trigger], task_status)


async def _run_passes(
    clock: Clock,
    resync: float,
    reconcile: Callable[[], Awaitable[float | None]],
    triggers: Sequence[Trigger],
    task_status: TaskStatus[None],
) -> None:
    """Run ``reconcile`` whenever a trigger wakes it, and at least every ``resync`` s."""
    changed = anyio.Event()

    def wake() -> None:
        changed.set()

    async def tick() -> None:
        while True:
            await clock.sleep(resync)
            wake()

    async with anyio.create_task_group() as tg:
        for trigger in triggers:
            tg.start_soon(trigger, wake)
        tg.start_soon(tick)
        task_status.started()
        backoff = Backoff(clock)
        while True:
            changed = anyio.Event()
            try:
                delay = await reconcile()
            except Deposed:
                raise
            except Unavailable as exc:
                log.warning(
                    "%s failed, so it changed nothing (%s); retrying in %g s",
                    getattr(reconcile, "__qualname__", "a reconcile pass"),
                    exc,
                    backoff.delay,
                )
                await backoff.wait()
                continue
            backoff.reset()
            if delay is None:
                await changed.wait()
            elif delay > 0:
                await _wait_either(changed, clock, delay)


async def _wait_either(changed: anyio.Event, clock: Clock, delay: float) -> None:
    async with anyio.create_task_group() as waiter:

        async def timer() -> None:
            await clock.sleep(delay)
            waiter.cancel_scope.cancel()

        waiter.start_soon(timer)
        await changed.wait()
        waiter.cancel_scope.cancel()


async def _keep_watching(
    store: StateStore,
    clock: Clock,
    prefix: str,
    start: int,
    ignore: Callable[[WatchEvent], bool] | None,
    on_change: Callable[[], None],
) -> None:
    """Call ``on_change`` for every change under ``prefix`` not ignored; outlive watch failures."""
    backoff = Backoff(clock)
    while True:
        try:
            async for event in store.watch(prefix, start):
                backoff.reset()
                if ignore is None or not ignore(event):
                    on_change()
        except (Unavailable, Compacted) as exc:
            log.warning(
                "the watch on %s failed (%s); restarting it in %g s", prefix, exc, backoff.delay
            )
        await backoff.wait()
        start = await _current_revision(store, backoff) + 1
        on_change()  # what changed while the watch was down went unseen


async def _current_revision(store: StateStore, backoff: Backoff) -> int:
    """Return the store's revision, retrying with ``backoff`` while it is unreachable."""
    while True:
        try:
            return await store.revision()
        except Unavailable as exc:
            log.warning("cannot read the store revision (%s); retrying in %g s", exc, backoff.delay)
            await backoff.wait()
