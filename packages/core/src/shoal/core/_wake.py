"""Level-triggered loop plumbing: wake on store changes or a timer, then re-read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.abc import TaskStatus

from shoal.interfaces import Clock, StateStore

__all__ = ["run_level_triggered"]


async def run_level_triggered(
    store: StateStore,
    clock: Clock,
    prefixes: Sequence[str],
    resync: float,
    reconcile: Callable[[], Awaitable[float | None]],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``reconcile`` after any change under ``prefixes``, and at least every ``resync`` s.

    ``reconcile`` returns how soon it wants another pass: ``0`` for right away
    (it lost a race, or made changes that need a follow-up), a number of
    seconds for a timer of its own (a backoff ending), or None for "when
    something changes". Watches start before the first pass, so no change can
    slip between a read and the next wake-up; changes that arrive during a pass
    coalesce into one more pass.
    """
    changed = anyio.Event()

    async def tick() -> None:
        while True:
            await clock.sleep(resync)
            changed.set()

    async with anyio.create_task_group() as tg:
        start = await store.revision()
        for prefix in prefixes:
            tg.start_soon(_watch_from, store, prefix, start + 1, lambda: changed.set())
        tg.start_soon(tick)
        task_status.started()
        while True:
            changed = anyio.Event()
            delay = await reconcile()
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


async def _watch_from(
    store: StateStore, prefix: str, start: int, on_change: Callable[[], None]
) -> None:
    async for _ in store.watch(prefix, start):
        on_change()
