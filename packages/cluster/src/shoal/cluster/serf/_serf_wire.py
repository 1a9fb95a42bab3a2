"""The Serf RPC wire: msgpack framing, sequence numbers and one reader task.

The wire format is a stream of msgpack objects over one TCP connection. A
request is a header map ``{"Command", "Seq"}`` optionally followed by a body
map; every response starts with a header ``{"Seq", "Error"}`` optionally
followed by a body. The first command must be ``handshake`` (``{"Version":
1}``), then ``auth`` (``{"AuthKey"}``) when the agent has an RPC auth key.
Subscriptions (``stream``, ``monitor``, ``query``) answer once with a bare
header and then keep sending header + record pairs tagged with their ``Seq``,
interleaved with other replies, so one reader task decodes everything and
dispatches it by ``Seq``.

Whether a body follows a header is not marked on the wire: the reader knows
what each pending ``Seq`` expects, and when it does not (a late record for a
subscription it already stopped) it reads one object and puts it back if it
is another header: a header has exactly the keys ``Seq`` and ``Error``, which
no body has.

Errors the agent returns become Shoal errors here: a refused auth key
:class:`~shoal.interfaces.Forbidden`, a size limit
:class:`~shoal.interfaces.InvalidInput`, a protocol mix-up
:class:`~shoal.cluster.SerfProtocolError`, anything else (and a lost
connection) :class:`~shoal.interfaces.Unavailable`.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self

import anyio
import msgpack
from anyio.abc import SocketStream

from shoal.interfaces import Forbidden, InvalidInput, ShoalError, Unavailable

from ._serf_records import SerfProtocolError
from ._serf_subscription import Feed, Reply

__all__ = ["IPC_VERSION", "REFUSALS", "SerfConnection", "split_host_port", "tidy_error"]

IPC_VERSION = 1
"""The only RPC protocol version Serf agents speak."""

_HEADER_KEYS = frozenset({"Seq", "Error"})
_AUTH_ERRORS = frozenset({"Authentication required", "Invalid authentication token"})
# Replies the agent sends as a bare header even where a body normally follows.
_NO_BODY_ERRORS = _AUTH_ERRORS | {"Handshake required", "Unsupported command"}
_PROTOCOL_ERRORS = frozenset(
    {"Unsupported IPC version", "Handshake required", "Handshake already performed"}
)
REFUSALS = _NO_BODY_ERRORS | _PROTOCOL_ERRORS
"""Errors with which the agent refuses a command without running it."""


def split_host_port(address: str, *, field: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6).

    Raises:
        InvalidInput: ``address`` has no valid port.

    """
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(
            f"{field} {address!r} is not host:port (e.g. 127.0.0.1:7373)", field=field
        )
    return host, int(port)


def tidy_error(error: str) -> str:
    """Flatten Go's multi-error text ("1 error occurred:" then "* ..." lines) onto one line."""
    error = re.sub(r"^\s*\d+ errors? occurred:\s*(\*\s*)?", "", error)
    return "; ".join(part.strip() for part in re.split(r"\s*\n\s*\*\s*", error) if part.strip())


def _is_header(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.keys() == _HEADER_KEYS


class SerfConnection:
    """One RPC connection to a Serf agent: requests, replies and subscriptions.

    Calls may run concurrently from several tasks. Every call raises
    :class:`~shoal.interfaces.Unavailable` if the connection is gone or the
    agent does not answer within the ``io_timeout`` given to :meth:`connect`.
    """

    def __init__(self, stream: SocketStream, address: str, timeout: float) -> None:
        self._stream = stream
        self._address = address
        self._timeout = timeout
        self._seq = itertools.count(1)
        self._pending: dict[int, Reply | Feed] = {}
        self._write_lock = anyio.Lock()
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self._backlog: deque[Any] = deque()
        self.failure: str | None = None
        """Why the connection ended, once it has."""

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, address: str, *, auth_key: str | None = None, io_timeout: float = 10.0
    ) -> AsyncIterator[Self]:
        """Connect to the agent's RPC address, handshake and authenticate.

        Args:
            address: The agent's ``-rpc-addr``, ``host:port``.
            auth_key: The agent's ``rpc_auth`` key, if it has one.
            io_timeout: Seconds to wait for the connection and for each reply.

        Raises:
            Unavailable: the agent cannot be reached or hung up.
            Forbidden: the agent refused ``auth_key`` (or needs one).

        """
        host, port = split_host_port(address, field="rpc_addr")
        try:
            with anyio.fail_after(io_timeout):
                stream = await anyio.connect_tcp(host, port)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(
                f"cannot reach the serf agent's RPC at {address}: {exc or 'timed out'}; "
                "is `serf agent` running with this -rpc-addr?",
                address=address,
            ) from exc
        try:
            async with stream, anyio.create_task_group() as group:
                client = cls(stream, address, io_timeout)
                group.start_soon(client._read_replies)
                try:
                    await client.call("handshake", {"Version": IPC_VERSION})
                    if auth_key is not None:
                        await client.call("auth", {"AuthKey": auth_key})
                    yield client
                finally:
                    client._shut_down("the RPC client was closed")
                    group.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader never raises, so a group holds the caller's one error.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            raise

    @property
    def address(self) -> str:
        """The agent's RPC address."""
        return self._address

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self.failure is not None

    async def call(
        self,
        command: str,
        body: Mapping[str, Any] | None = None,
        *,
        expects_body: bool = False,
        reply_within: float | None = None,
    ) -> Any:
        """Send one command and return its reply body (None if it has none).

        Raises:
            Unavailable: the connection is gone, the agent did not answer in
                time, or it refused the command.
            Forbidden: the agent refused the RPC auth key.
            InvalidInput: the request exceeds one of the agent's size limits.

        """
        _, reply = await self._request(
            command, body, expects_body=expects_body, reply_within=reply_within
        )
        if reply.error:
            raise self._error(command, reply.error)
        return reply.body

    async def _request(
        self,
        command: str,
        body: Mapping[str, Any] | None,
        *,
        expects_body: bool,
        reply_within: float | None,
    ) -> tuple[int, Reply]:
        seq = next(self._seq)
        reply = Reply(expects_body)
        self._pending[seq] = reply
        try:
            await self.send(command, seq, body)
            with anyio.fail_after(reply_within or self._timeout):
                await reply.done.wait()
        except TimeoutError:
            raise Unavailable(
                f"the serf agent at {self._address} did not answer {command!r} "
                f"within {reply_within or self._timeout:g} s",
                command=command,
            ) from None
        finally:
            self._pending.pop(seq, None)
        if reply.lost:
            raise self.unavailable()
        return seq, reply

    async def subscribe(self, command: str, body: Mapping[str, Any], feed: Feed) -> int:
        """Start a subscription whose records go to ``feed``; return its ``Seq``."""
        seq = next(self._seq)
        self._pending[seq] = feed
        try:
            await self.send(command, seq, body)
            with anyio.fail_after(self._timeout):
                await feed.acknowledged.wait()
        except BaseException:
            self.forget(seq)
            raise
        if feed.error:
            self.forget(seq)
            raise self._error(command, feed.error)
        if self.closed:
            raise self.unavailable()
        return seq

    def forget(self, seq: int) -> None:
        """Stop dispatching records for ``seq`` (late ones are read and dropped)."""
        handler = self._pending.pop(seq, None)
        if isinstance(handler, Feed):
            handler.close()

    async def send(self, command: str, seq: int, body: Mapping[str, Any] | None) -> None:
        """Write one request (header and optional body) to the agent."""
        if self.closed:
            raise self.unavailable()
        data = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            data += msgpack.packb(dict(body))
        try:
            async with self._write_lock:
                await self._stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._shut_down(f"the RPC connection to the serf agent broke: {exc}")
            raise self.unavailable() from exc

    def unavailable(self) -> Unavailable:
        """Return the error every call raises once the connection has ended."""
        return Unavailable(
            f"serf agent at {self._address}: {self.failure or 'not connected'}",
            address=self._address,
        )

    def _error(self, command: str, error: str) -> ShoalError:
        if error in _AUTH_ERRORS:
            fix = (
                "the agent needs an RPC auth key and none was given; pass rpc_auth"
                if error == "Authentication required"
                else "the rpc_auth given does not match the agent's rpc_auth setting"
            )
            return Forbidden(
                f"the serf agent at {self._address} refused the RPC auth key ({error}): {fix}",
                address=self._address,
                reason="rpc_auth",
            )
        if error in _PROTOCOL_ERRORS or error == "Unsupported command":
            return SerfProtocolError(f"serf RPC {command!r} failed: {error}", command=command)
        if "exceeds limit" in error:
            return InvalidInput(f"serf refused {command!r}: {error}", command=command)
        return Unavailable(f"the serf agent refused {command!r}: {error}", command=command)

    async def _read_replies(self) -> None:
        reason = "the serf agent closed the RPC connection"
        try:
            while True:
                header = await self._next_object()
                if not _is_header(header):
                    raise SerfProtocolError(f"expected a reply header, got {header!r}")
                await self._dispatch(int(header["Seq"]), str(header["Error"] or ""))
        except anyio.EndOfStream:
            pass
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            reason = f"the RPC connection to the serf agent broke: {exc}"
        except (SerfProtocolError, ValueError) as exc:  # msgpack's errors are ValueErrors
            reason = f"the serf agent sent data this client cannot read: {exc}"
        finally:
            self._shut_down(reason)

    async def _dispatch(self, seq: int, error: str) -> None:
        handler = self._pending.get(seq)
        if isinstance(handler, Reply):
            expected = handler.expects_body and error not in _NO_BODY_ERRORS
            handler.resolve(error, await self._next_body() if expected else None)
        elif isinstance(handler, Feed):
            if not handler.acknowledged.is_set():
                handler.acknowledge(error)
            elif (body := await self._next_body()) is not None:
                handler.deliver(body)
        else:
            await self._next_body()  # a late record of a forgotten subscription, or none

    async def _next_body(self) -> Any:
        obj = await self._next_object()
        if _is_header(obj):
            self._backlog.appendleft(obj)  # no body came: that was the next reply
            return None
        return obj

    async def _next_object(self) -> Any:
        if self._backlog:
            return self._backlog.popleft()
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                self._unpacker.feed(await self._stream.receive())

    def _shut_down(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        pending, self._pending = self._pending, {}
        for handler in pending.values():
            handler.lose()
