"""Reading and following the log of a :class:`~shoal.runtime.MockRuntime` container.

History first: the lines written so far, filtered by ``since`` (lines at or
after it) and then cut to the last ``tail``. With ``follow`` the reader then
waits for new lines on the container's change event (an anyio event set by
every write, state change and removal) and ends once the container has
exited, its pod was removed or the runtime closed. A running container with a
pending injected exit is also waited on through the runtime clock, so that the
follower ends when the exit falls due even though nothing else changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

import anyio
import anyio.lowlevel

from shoal.interfaces import Clock, ContainerState, LogLine

from ._records import ContainerRecord, PodRecord

__all__ = ["read_logs"]


async def read_logs(
    find: Callable[[], tuple[PodRecord, ContainerRecord]],
    clock: Clock,
    closed: Callable[[], bool],
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
) -> AsyncIterator[LogLine]:
    """Yield a container's log lines, then (with ``follow``) new ones as they come.

    Args:
        find: Returns the pod and container; called on first iteration, so its
            NotFound surfaces there.
        clock: The runtime's clock, for settling and waiting on injected exits.
        closed: Returns whether the runtime has been closed.
        follow: Keep yielding new lines until the container exits.
        tail: Only the last ``tail`` lines of history.
        since: Only lines written at or after this time.

    Yields:
        The matching lines, oldest first.

    """
    await anyio.lowlevel.checkpoint()
    pod, record = find()
    record.settle(clock.monotonic())
    seen = len(record.logs)  # lines written while history is yielded get followed
    history = [line for line in record.logs if since is None or line.time >= since]
    if tail is not None:
        history = history[len(history) - tail :] if tail > 0 else []
    for line in history:
        yield line
    while follow:
        if pod.removed or closed() or record.state == ContainerState.EXITED:
            return
        await _wait_for_change(record, clock)
        record.settle(clock.monotonic())
        while seen < len(record.logs):
            line = record.logs[seen]
            seen += 1
            if since is None or line.time >= since:
                yield line


async def _wait_for_change(record: ContainerRecord, clock: Clock) -> None:
    """Wait for a change to ``record``, or for its injected exit to fall due."""
    changed = record.changed()
    if record.exit_deadline is None:
        await changed.wait()
        return
    remaining = record.exit_deadline - clock.monotonic()
    async with anyio.create_task_group() as group:

        async def wake_at_deadline() -> None:
            await clock.sleep(remaining)
            group.cancel_scope.cancel()

        group.start_soon(wake_at_deadline)
        await changed.wait()
        group.cancel_scope.cancel()
