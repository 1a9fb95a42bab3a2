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
    reconcile: Callable[[], Awaitable[bool]],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``reconcile`` after any change under ``prefixes``, and at least every ``resync`` s.

    ``reconcile`` returns True when it wants another pass right away (it lost a
    race, or made changes that need a follow-up). Watches start before the
    first pass, so no change can slip between a read and the next wake-up.
    Changes that arrive during a pass coalesce into one more pass.
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
            again = await reconcile()
            if not again:
                await changed.wait()


async def _watch_from(
    store: StateStore, prefix: str, start: int, on_change: Callable[[], None]
) -> None:
    async for _ in store.watch(prefix, start):
        on_change()
