"""What the Serf RPC reader hands replies to: one-shot replies and subscriptions.

The reader task of :class:`~shoal.cluster.serf._serf_wire.SerfConnection` owns the
socket; callers never read it. A plain command waits on a :class:`Reply`. A
subscription (``stream``, ``monitor``, ``query``) registers a :class:`Feed`,
whose first reply header acknowledges it and whose later records go into an
unbounded memory stream, so a slow consumer never stalls the reader (and with
it every other reply on the connection). :class:`SerfSubscription` is the
consumer's side: an async context manager that starts the subscription,
stops it on exit, and iterates decoded records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import anyio

from shoal.interfaces import AsyncClosing, Unavailable

if TYPE_CHECKING:
    from ._serf_wire import SerfConnection

__all__ = ["Feed", "Reply", "SerfSubscription"]

R = TypeVar("R")


class Reply:
    """The reply to one command: its error string and body, once they arrive."""

    __slots__ = ("body", "done", "error", "expects_body", "lost")

    def __init__(self, expects_body: bool) -> None:
        self.expects_body = expects_body
        self.done = anyio.Event()
        self.error = ""
        self.body: Any = None
        self.lost = False

    def resolve(self, error: str, body: Any) -> None:
        """Record the agent's answer and wake the caller."""
        self.error, self.body = error, body
        self.done.set()

    def lose(self) -> None:
        """Wake the caller: the connection ended before the answer came."""
        self.lost = True
        self.done.set()


class Feed:
    """A subscription as the reader sees it: an acknowledgement, then records."""

    __slots__ = ("acknowledged", "error", "receive", "send")

    def __init__(self) -> None:
        self.acknowledged = anyio.Event()
        self.error = ""
        self.send, self.receive = anyio.create_memory_object_stream[Any](math.inf)

    def acknowledge(self, error: str) -> None:
        """Record the agent's answer to the subscribing command."""
        self.error = error
        self.acknowledged.set()

    def deliver(self, body: Any) -> None:
        """Queue one record for the consumer (dropped if it stopped listening)."""
        try:
            self.send.send_nowait(body)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def lose(self) -> None:
        """End the subscription: the connection is gone."""
        self.acknowledged.set()
        self.send.close()

    def close(self) -> None:
        """End the subscription: the consumer forgot it."""
        self.send.close()


class SerfSubscription(AsyncClosing, Generic[R]):
    """Records of one ``stream``, ``monitor`` or ``query``; use with ``async with``.

    Iteration ends when the subscription is closed or, for a query, when the
    agent says it is done; it raises :class:`~shoal.interfaces.Unavailable`
    if the connection to the agent ends first.
    """

    def __init__(
        self,
        client: SerfConnection,
        command: str,
        request: Mapping[str, Any],
        decode: Callable[[Any], R],
        *,
        stop: bool = False,
        final: Callable[[R], bool] | None = None,
        skip: Callable[[R], bool] | None = None,
    ) -> None:
        self._client = client
        self._command = command
        self._request = request
        self._decode = decode
        self._stop = stop
        self._final = final
        self._skip = skip
        self._feed = Feed()
        self._seq: int | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        """Send the subscribing command and wait for the agent to accept it.

        Raises:
            Unavailable: the agent is unreachable or refused the subscription.
            Forbidden: the agent refused the RPC auth key.

        """
        self._seq = await self._client.subscribe(self._command, self._request, self._feed)
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> R:
        if self._seq is None:
            raise RuntimeError(f"enter the {self._command} subscription with `async with` first")
        while True:
            try:
                body = await self._feed.receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if not self._closed and self._client.closed:
                    raise self._client.unavailable() from None
                raise StopAsyncIteration from None
            record = self._decode(body)
            if self._skip is None or not self._skip(record):
                break
        if self._final is not None and self._final(record):
            await self.aclose()
            raise StopAsyncIteration
        return record

    async def aclose(self) -> None:
        """Stop receiving; tell the agent to stop sending if the command needs it."""
        if self._closed or self._seq is None:
            return
        self._closed = True
        self._client.forget(self._seq)
        self._feed.receive.close()
        if self._stop and not self._client.closed:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await self._client.call("stop", {"Stop": self._seq})
                except Unavailable:
                    pass  # the connection is going away, and the stream with it
