"""Following the server's event stream through its restarts (`shoal events --watch`).

A stream ends when its server stops (an upgrade, a restart) or the network
drops; a watch that ended then would leave an operator looking at a quiet
screen. So the follower says what happened on stderr, waits (1 s, doubling to
10 s) and follows again, until Ctrl-C. Nothing written meanwhile is lost nor
shown twice: once a stream is open (the first one too) it lists the latest
events and shows those it has not, and again at the stream's first event.
What it has shown is known by id, not ordered by it: servers' clocks may
differ. An event written in the instant between the server's answer and its
subscription to the store would still be missed until a listing (`shoal
events`) shows it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from ._base import err

if TYPE_CHECKING:
    from shoal.interfaces import Event

__all__ = ["FIRST_DELAY", "MAX_DELAY", "follow_events"]

FIRST_DELAY = 1.0
"""Seconds before following again after the stream ended."""
MAX_DELAY = 10.0
"""The longest wait between two tries."""
REMEMBERED = 20_000
"""Most event ids remembered as shown (the oldest are forgotten first)."""


async def follow_events(
    stream: Callable[[Callable[[], Awaitable[None]]], AsyncIterator[Event]],
    missed: Callable[[], Awaitable[list[Event]]],
    show: Callable[[Event], None],
    shown_already: Iterable[str],
) -> None:
    """Show every event not shown yet, as it comes; never returns (Ctrl-C ends it).

    Args:
        stream: Opens the server's event stream, awaiting its argument once open.
        missed: Lists the latest events (to catch up after a gap).
        show: Prints one event (it may filter).
        shown_already: The ids of the events shown before.

    """
    import anyio  # on use only: `shoal --help` imports this module

    from shoal.interfaces import Unavailable

    seen = dict.fromkeys(shown_already)  # ordered: the oldest is forgotten first
    delay = FIRST_DELAY

    def shown(events: Iterable[Event]) -> None:
        for event in events:
            if event.id in seen:
                continue
            show(event)
            seen[event.id] = None
            if len(seen) > REMEMBERED:
                del seen[next(iter(seen))]

    async def catch_up() -> None:
        shown(sorted(await missed(), key=lambda e: e.id))

    while True:
        caught_up = False
        try:
            async for event in stream(catch_up):
                if not caught_up:  # what came before it, once more
                    await catch_up()
                    caught_up, delay = True, FIRST_DELAY
                shown([event])
            why = "the server ended the event stream"
        except Unavailable as exc:
            why = exc.message
        err.print(
            f"events: {why}; following again in {delay:g} s (Ctrl-C to stop)",
            markup=False,
            highlight=False,
        )
        await anyio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
        try:
            await catch_up()
        except Unavailable:
            continue
        err.print("events: following again", markup=False, highlight=False)
