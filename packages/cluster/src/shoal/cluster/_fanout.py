"""Membership event fan-out shared by every cluster manager.

A :class:`~shoal.interfaces.ClusterManager` promises that a subscription
starts when ``events()`` is *called*, not on first iteration: a change made
right after the call reaches that subscriber even if it has not started
reading. :class:`EventFanout` keeps that promise. Each
:meth:`EventFanout.subscribe` registers an anyio memory object stream at
once, with an unbounded buffer (membership changes are few, so a slow reader
holds at most what it was sent), :meth:`EventFanout.emit` copies an event to
every live subscriber, and :meth:`EventFanout.close` ends every iterator
cleanly.
"""

from __future__ import annotations

import math
from typing import Self

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shoal.interfaces import AsyncClosing, MemberEvent

__all__ = ["EventFanout", "MemberEvents"]


class MemberEvents(AsyncClosing):
    """One subscriber's stream of membership events; an async iterator.

    Iteration ends when the cluster manager closes. Close it early with
    :meth:`aclose` (or ``async with``) to unsubscribe.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[MemberEvent]) -> None:
        self._receive = receive

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MemberEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Unsubscribe: iteration ends and the cluster stops sending to this stream."""
        self._receive.close()
        await anyio.lowlevel.checkpoint()

    def __del__(self) -> None:
        # An abandoned iterator unsubscribes, like a finalized async generator.
        self._receive.close()


class EventFanout:
    """Copies every membership event to every subscriber registered before it."""

    def __init__(self) -> None:
        self._subscribers: list[MemoryObjectSendStream[MemberEvent]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called; later subscribers end at once."""
        return self._closed

    def subscribe(self) -> MemberEvents:
        """Register a subscriber now and return its iterator.

        Returns:
            An async iterator of every event emitted from this call on; it ends
            when the fan-out closes (at once, if it is closed already).

        """
        send, receive = anyio.create_memory_object_stream[MemberEvent](math.inf)
        if self._closed:
            send.close()
        else:
            self._subscribers.append(send)
        return MemberEvents(receive)

    def emit(self, event: MemberEvent) -> None:
        """Deliver ``event`` to every subscriber, dropping those that unsubscribed."""
        alive: list[MemoryObjectSendStream[MemberEvent]] = []
        for send in self._subscribers:
            try:
                send.send_nowait(event.model_copy(deep=True))
            except anyio.BrokenResourceError:
                send.close()  # the subscriber closed its end: drop it
            else:
                alive.append(send)
        self._subscribers = alive

    def close(self) -> None:
        """End every subscriber's iteration; later calls do nothing."""
        self._closed = True
        subscribers, self._subscribers = self._subscribers, []
        for send in subscribers:
            send.close()
