"""Watches on etcd: one etcd watch per iterator, from a start revision, with ``prev_kv``.

etcd itself guarantees what the protocol asks of a watch — every change from
the start revision on, in revision order, each exactly once, however far
behind the reader is (``aetcd`` queues events without bound) — and reports a
start revision that compaction removed, which becomes
:class:`~shoal.interfaces.Compacted`.

The iterator is an async generator. Closing it, or dropping it (asyncio then
closes it), cancels the etcd watch, so a loop that breaks out of a watch
leaves nothing running on the server. When the connection fails the watch
raises :class:`~shoal.interfaces.Unavailable` naming the revision to resume
from; when the store closes, it raises the store's "closed" error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from shoal.interfaces import Compacted, Unavailable, WatchEvent

from ._etcd_client import EtcdConnection
from ._etcd_codec import Namespace
from ._history import compacted_error

__all__ = ["watch_changes"]


async def watch_changes(
    conn: EtcdConnection,
    ns: Namespace,
    prefix: str,
    start: int | None,
    *,
    since_now: bool,
    note: Callable[[int], int],
    revision: Callable[[], Awaitable[int]],
) -> AsyncIterator[WatchEvent]:
    """Yield every change under ``prefix`` from ``start`` on.

    Args:
        conn: The store's connection.
        ns: The store's key prefix.
        prefix: Only keys starting with this are reported.
        start: The first revision to report; None for "after the current one".
        since_now: The caller asked for changes from now on; ``start`` is only
            this store's newest known revision, so a compacted ``start`` is
            moved forward instead of raising Compacted.
        note: Called with each event's revision (the store tracks the newest).
        revision: Returns the store's current revision.

    Raises:
        Compacted: an explicit ``start`` is older than etcd's compacted history.
        Unavailable: the connection failed or the store was closed.

    """
    key, end = ns.range(prefix)
    if start is None:
        start = await revision() + 1
    client, stream = await _open(conn, key, end, start, since_now=since_now)
    events = aiter(stream)
    last = start - 1
    try:
        while True:
            try:
                raw = await anext(events)
            except StopAsyncIteration:
                raise _lost(conn, prefix, last, "etcd ended the watch") from None
            except Exception as exc:
                error = conn.translate(exc)
                if isinstance(error, Compacted):
                    raise compacted_error(last + 1, error.details["compacted"]) from exc
                if isinstance(error, Unavailable):
                    reason = str(error.details.get("reason", error.message))
                    raise _lost(conn, prefix, last, reason) from exc
                raise error from exc
            event = ns.event(raw)
            last = note(event.revision)
            yield event
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(conn.timeout):
            if conn.is_current(client):
                await stream.cancel()
            await events.aclose()


async def _open(
    conn: EtcdConnection, key: bytes, end: bytes, start: int, *, since_now: bool
) -> tuple[Any, Any]:
    """Create the etcd watch; return the client it is on and aetcd's watch."""

    async def create(client: Any) -> Any:
        return await client.watch(key, range_end=end, start_revision=start, prev_kv=True)

    try:
        return await conn.call(create)
    except Compacted as exc:
        floor = int(exc.details["compacted"])
        if not since_now:
            raise compacted_error(start, floor) from exc
    # "From now" began at the newest revision the store had seen, which has been
    # compacted since; every change after the call is newer than the compaction
    # point, so start there.
    start = floor + 1
    return await conn.call(create)


def _lost(conn: EtcdConnection, prefix: str, last: int, reason: str) -> Unavailable:
    if conn.closed:
        return conn.closed_error()
    return Unavailable(
        f"the etcd watch on {prefix!r} at {conn.describe()} was lost ({reason}); once etcd "
        f"answers again, watch from revision {last + 1} to resume without missing a change",
        prefix=prefix,
        resume_revision=last + 1,
        endpoints=[str(e) for e in conn.endpoints],
        reason=reason,
    )
