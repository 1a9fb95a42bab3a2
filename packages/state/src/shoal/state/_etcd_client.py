"""The connection under ``EtcdStore``: endpoints, connecting, deadlines, errors.

``aetcd`` talks to one etcd member over one gRPC channel. This module picks
that member: it asks every configured endpoint for its status at once and
keeps the first that answers with a raft leader, so a store given three
members connects while one of them is down. Every request carries a gRPC
deadline of the store's ``timeout``, so an unreachable or silent etcd turns
into :class:`~shoal.interfaces.Unavailable` within that bound, never a hang.

Cancellation: gRPC's asyncio calls answer a cancellation with a fresh
``CancelledError`` (or, for streams, swallow it), which anyio's cancel scopes
cannot tell from an outside cancellation — a ``move_on_after`` around a
request would cancel the whole task. So every request runs shielded to its
end, which the deadline bounds, and a cancellation is delivered right after.

Errors are translated here, at the boundary, and nowhere else::

    gRPC status                          ShoalError
    UNAVAILABLE, DEADLINE_EXCEEDED,      Unavailable (names the endpoints and
    CANCELLED                              what to check)
    RESOURCE_EXHAUSTED, FAILED_PRECOND., Unavailable (etcd refuses: alarm, quota,
    PERMISSION_DENIED, UNAUTHENTICATED     authentication)
    NOT_FOUND                            NotFound (a lease)
    OUT_OF_RANGE "compacted"             Compacted
    OUT_OF_RANGE, INVALID_ARGUMENT       InvalidInput
    anything else                        InternalError

After a connection-level failure a store with several endpoints picks a
member again at its next request; with one endpoint the gRPC channel
reconnects by itself (backoff capped at one second).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aetcd
import anyio
import anyio.lowlevel
from aetcd import rpc

from shoal.interfaces import (
    Compacted,
    InternalError,
    InvalidInput,
    NotFound,
    ShoalError,
    Unavailable,
)

__all__ = ["DEFAULT_ENDPOINT", "Endpoint", "EtcdConnection", "Operation", "parse_endpoints"]

DEFAULT_ENDPOINT = "127.0.0.1:2379"
"""Where a local etcd serves clients by default."""

_DEFAULT_PORT = 2379
_CHANNEL_OPTIONS: dict[str, int] = {
    # Recover quickly when etcd comes back (gRPC's default backoff reaches 120 s).
    # (Not the *min* backoff: gRPC also uses it as the connect timeout.)
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Notice a vanished peer under an idle watch stream (etcd allows a ping per 5 s).
    "grpc.keepalive_time_ms": 10_000,
    "grpc.http2.max_pings_without_data": 0,
    # Large ranges and revisions come back whole.
    "grpc.max_receive_message_length": -1,
}
_UNREACHABLE = {
    rpc.StatusCode.UNAVAILABLE,
    rpc.StatusCode.DEADLINE_EXCEEDED,
    rpc.StatusCode.CANCELLED,
}
_REFUSED = {
    rpc.StatusCode.RESOURCE_EXHAUSTED,
    rpc.StatusCode.FAILED_PRECONDITION,
    rpc.StatusCode.PERMISSION_DENIED,
    rpc.StatusCode.UNAUTHENTICATED,
}

Operation = Callable[[Any], Awaitable[Any]]
"""One request: given the ``aetcd.Client``, await and return etcd's response."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One etcd member's client address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoints(endpoints: list[str] | str) -> list[Endpoint]:
    """Parse ``host:port`` or ``http://host:port`` endpoints (a list, or comma-separated).

    Raises:
        InvalidInput: no endpoint is given, one is malformed, or one asks for TLS.

    """
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    parsed = [_parse_endpoint(item.strip()) for item in items if item.strip()]
    if not parsed:
        raise InvalidInput(
            "no etcd endpoint given; pass the host:port of an etcd client URL, "
            f"e.g. {DEFAULT_ENDPOINT}",
            field="endpoints",
        )
    return parsed


def _parse_endpoint(text: str) -> Endpoint:
    scheme, separator, address = text.partition("://")
    if not separator:
        address = text
    elif scheme.lower() != "http":
        raise InvalidInput(
            f"etcd endpoint {text!r} uses {scheme}://, but only plain http:// client URLs "
            "are supported; serve etcd on http:// on a trusted network",
            field="endpoints",
        )
    address = address.rstrip("/")
    if address.startswith("["):
        host, _, port_text = address[1:].partition("]")
        host, port_text = f"[{host}]", port_text.removeprefix(":")
    else:
        host, _, port_text = address.partition(":")
    port = int(port_text) if port_text.isdigit() else (_DEFAULT_PORT if not port_text else 0)
    if host in ("", "[]") or not 0 < port < 65536:
        raise InvalidInput(
            f"etcd endpoint {text!r} is not host:port (e.g. {DEFAULT_ENDPOINT})",
            field="endpoints",
        )
    return Endpoint(host, port)


class EtcdConnection:
    """The ``aetcd.Client`` of one store: connects lazily, translates errors."""

    def __init__(self, endpoints: list[Endpoint], timeout: float) -> None:
        if not timeout > 0:
            raise InvalidInput(
                f"timeout must be a positive number of seconds, not {timeout!r}", field="timeout"
            )
        self.endpoints = endpoints
        self.timeout = timeout
        self._client: Any = None
        self._stale = False
        self._closed = False
        self._lock = anyio.Lock()

    @property
    def closed(self) -> bool:
        """Return whether :meth:`aclose` was called."""
        return self._closed

    def describe(self) -> str:
        """Return the endpoints as one comma-separated string."""
        return ",".join(str(endpoint) for endpoint in self.endpoints)

    async def connect(self) -> Any:
        """Return the client, connecting first if needed.

        Raises:
            Unavailable: no endpoint answered within the timeout, or the store is closed.

        """
        if self._closed:
            raise self.closed_error()
        if self._client is not None and not self._stale:
            return self._client
        async with self._lock:
            if self._closed:
                raise self.closed_error()
            if self._client is None or self._stale:
                stale, self._client = self._client, None
                if stale is not None:
                    await _close_quietly(stale)
                self._client, self._stale = await self._connect_first(), False
            return self._client

    async def call(self, operation: Operation) -> tuple[Any, Any]:
        """Run one request; return the client it ran on and etcd's response.

        Raises:
            ShoalError: the request failed (see the module docstring for which).

        """
        client = await self.connect()
        try:
            with anyio.CancelScope(shield=True):
                response = await operation(client)
        except (rpc.AioRpcError, aetcd.ClientError) as exc:
            raise self.translate(exc) from exc
        # A cancellation that arrived during the request is delivered here.
        await anyio.lowlevel.checkpoint()
        return client, response

    def is_current(self, client: Any) -> bool:
        """Return whether ``client`` is still this connection's open client."""
        return not self._closed and client is self._client

    async def aclose(self) -> None:
        """Close the client: watches on it end, later requests raise Unavailable."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await _close_quietly(client)

    # -- errors ----------------------------------------------------------------

    def closed_error(self) -> Unavailable:
        """Return the error for a request to a closed store."""
        return Unavailable(
            f"the etcd state store for {self.describe()} is closed; open a new one",
            endpoints=[str(e) for e in self.endpoints],
        )

    def unreachable(self, reason: str) -> Unavailable:
        """Return the error for etcd not answering, naming the endpoints and what to check."""
        return Unavailable(
            f"cannot reach etcd at {self.describe()} ({reason}); check that etcd is running "
            "and serves clients there (its --listen-client-urls and --advertise-client-urls: "
            "give the client port, not the peer port), that its cluster has a leader, and "
            "that no firewall blocks the port",
            endpoints=[str(e) for e in self.endpoints],
            reason=reason,
        )

    def translate(self, exc: BaseException) -> ShoalError:
        """Turn an ``aetcd`` or gRPC error into the ShoalError it means."""
        if isinstance(exc, aetcd.RevisionCompactedError):
            floor = int(exc.compacted_revision) - 1
            return Compacted(f"etcd compacted its history up to revision {floor}", compacted=floor)
        code, details = _status_of(exc)
        if self._closed:
            return self.closed_error()
        if code in _UNREACHABLE:
            self._stale = len(self.endpoints) > 1
            reason = f"no answer within {self.timeout:g} s" if code is _DEADLINE else details
            return self.unreachable(reason)
        if code in _REFUSED:
            return Unavailable(
                f"etcd at {self.describe()} refused the request: {details}; check its "
                "alarms (etcdctl alarm list), space quota and authentication",
                endpoints=[str(e) for e in self.endpoints],
                reason=details,
            )
        if code is rpc.StatusCode.NOT_FOUND:
            return NotFound(f"etcd: {details}")
        if code is rpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return Compacted(f"etcd: {details}")
        if code in (rpc.StatusCode.OUT_OF_RANGE, rpc.StatusCode.INVALID_ARGUMENT):
            return InvalidInput(f"etcd refused the request: {details}", reason=details)
        return InternalError(f"unexpected etcd error ({code}): {details}", reason=details)

    # -- connecting --------------------------------------------------------------

    async def _connect_first(self) -> Any:
        """Ask every endpoint at once; keep the first member that answers with a leader.

        Every probe runs to its end (see the module docstring on cancellation),
        so connecting takes as long as the slowest endpoint, at most ``timeout``.
        """
        found: list[Any] = []
        failures: dict[str, str] = {}
        async with anyio.create_task_group() as group:
            for endpoint in self.endpoints:
                group.start_soon(self._probe, endpoint, found, failures)
        if not found:
            if len(failures) == 1:
                raise self.unreachable(next(iter(failures.values())))
            raise self.unreachable("; ".join(f"{e}: {why}" for e, why in failures.items()))
        return found[0]

    async def _probe(
        self,
        endpoint: Endpoint,
        found: list[Any],
        failures: dict[str, str],
    ) -> None:
        client = aetcd.Client(
            endpoint.host, endpoint.port, timeout=self.timeout, options=_CHANNEL_OPTIONS
        )
        keep = False
        try:
            with anyio.CancelScope(shield=True):
                await client.connect()
                status = await client.maintenancestub.Status(
                    rpc.StatusRequest(), timeout=self.timeout
                )
            if not status.leader:
                failures[str(endpoint)] = "the member has no raft leader"
            elif not found:
                found.append(client)
                keep = True
        except (rpc.AioRpcError, aetcd.ClientError) as exc:
            code, details = _status_of(exc)
            failures[str(endpoint)] = (
                f"no answer within {self.timeout:g} s" if code is _DEADLINE else details
            )
        finally:
            if not keep:
                with anyio.CancelScope(shield=True):
                    await _close_quietly(client)


_DEADLINE = rpc.StatusCode.DEADLINE_EXCEEDED


def _status_of(exc: BaseException) -> tuple[Any, str]:
    """Return the gRPC status code and details behind an ``aetcd`` or gRPC error."""
    cause = exc if isinstance(exc, rpc.AioRpcError) else exc.__cause__
    if isinstance(cause, rpc.AioRpcError):
        return cause.code(), str(cause.details())
    if isinstance(exc, aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError):
        return _DEADLINE, str(exc) or "timed out"
    if isinstance(exc, aetcd.ConnectionFailedError):
        return rpc.StatusCode.UNAVAILABLE, str(exc) or "connection failed"
    return rpc.StatusCode.UNKNOWN, str(exc) or type(exc).__name__


async def _close_quietly(client: Any) -> None:
    """Close an ``aetcd.Client``, ignoring errors: it is being discarded."""
    try:
        await client.close()
    except Exception:  # a client on its way out has nothing left to report
        return
