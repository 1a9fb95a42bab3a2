"""A worker's StateStore: the cluster state, reached through a server's State service.

A worker keeps no store of its own; its node loop gets a :class:`RemoteStore`
instead, which turns each StateStore call into a signed call of
``shoal.cluster.v1.State`` on one server. The server answers within the
worker's scope (see :mod:`shoal.cluster.grpc._grpc_state`).

Server choice: the store keeps using one server while it answers. When a
call fails with :class:`~shoal.interfaces.Unavailable` it drops that server's
channel and raises; it never retries a call by itself (a Put might have been
applied). The next call asks ``servers()`` again and tries servers that did
not just fail first, so a worker moves on when its server dies.

What does not travel: a key's ``version`` and ``lease`` (a RemoteStore
reports 0 and None) and a watch event's ``prev_value`` (None). Transactions,
leases and elections are refused: they are the servers' business.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
from google.protobuf.message import Message

from shoal.interfaces import (
    AsyncClosing,
    Compare,
    DeleteOp,
    EventKind,
    Forbidden,
    KeyValue,
    Leadership,
    ListResult,
    PutOp,
    ShoalError,
    TxnResult,
    Unauthenticated,
    Unavailable,
    WatchEvent,
)

from ._grpc_base import NodeChannel
from ._grpc_state import SERVICE
from ._nodeauth import NodeIdentity
from ._pb import shoal_node_pb2 as pb

__all__ = ["RemoteStore", "check_accepted"]

Reply = TypeVar("Reply", bound=Message)


class RemoteStore(AsyncClosing):
    """The StateStore of a worker: the scoped state of the cluster, through a server.

    Args:
        identity: this node's name and key; every call is signed with it.
        token: the cluster's join token.
        servers: returns the gRPC addresses (``host:port``) of the servers to
            try, e.g. the alive gossip members with role server or both.
        timeout: seconds a unary call may take before it counts as Unavailable.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        token: str,
        servers: Callable[[], Awaitable[Sequence[str]]],
        *,
        timeout: float = 10.0,
    ) -> None:
        self._identity = identity
        self._token = token
        self._servers = servers
        self._timeout = timeout
        self._channel: NodeChannel | None = None
        self._lock = anyio.Lock()
        # Address -> when it last failed (a counter): servers that failed longest
        # ago, or never, are tried first.
        self._failed: dict[str, int] = {}
        self._refused: set[str] = set()
        """Servers that refused this node's credentials since they last answered it."""
        self._failures = itertools.count()
        self._closed = False

    def __repr__(self) -> str:
        return f"RemoteStore(node={self._identity.name!r}, server={self.server!r})"

    @property
    def server(self) -> str | None:
        """The address of the server in use, or None between servers."""
        return None if self._channel is None else self._channel.address

    # -- channel ---------------------------------------------------------------

    async def _connect(self) -> NodeChannel:
        async with self._lock:
            if self._closed:
                raise Unavailable(
                    f"the remote store of node {self._identity.name!r} is closed", closed=True
                )
            if self._channel is not None:
                return self._channel
            addresses = list(dict.fromkeys(await self._servers()))
            if not addresses:
                raise Unavailable(
                    "no server is known yet: this worker reaches the cluster state through a "
                    "server; join the cluster (--join) and check with `shoal --server "
                    "http://SERVER:7070 members` that this worker and an alive server are listed",
                    node=self._identity.name,
                )
            # sorted() is stable: among servers that never failed, the given order holds.
            first = sorted(addresses, key=lambda address: self._failed.get(address, -1))[0]
            self._channel = NodeChannel(self._identity, self._token, first, timeout=self._timeout)
            return self._channel

    async def _drop(self, channel: NodeChannel) -> None:
        """Stop using ``channel`` after it failed; the next call picks a server anew."""
        async with self._lock:
            if self._channel is not channel:
                return  # another call dropped it already
            self._channel = None
            self._failed[channel.address] = next(self._failures)
        await channel.aclose()

    async def _unary(self, name: str, request: Message, reply: type[Reply]) -> Reply:
        channel = await self._connect()
        try:
            result = await channel.unary(f"/{SERVICE}/{name}", request, reply)
        except Unavailable:
            await self._drop(channel)
            raise
        except Unauthenticated as exc:
            raise await self._refused_by(channel, exc) from None
        self._failed.pop(channel.address, None)
        self._refused.discard(channel.address)
        return result

    async def _refused_by(self, channel: NodeChannel, refusal: Unauthenticated) -> ShoalError:
        """Return what a refusal by one server means: try another, or give up.

        One server refusing may be that server's fault (started with another
        cluster's join token); when every known server refuses, the fault is
        this node's, and the refusal stands.
        """
        self._refused.add(channel.address)
        await self._drop(channel)
        others = set(await self._servers()) - self._refused
        if not others:
            return refusal
        return Unavailable(
            f"server {channel.address} refused this node ({refusal.message}); "
            "trying another server",
            target=channel.address,
        )

    # -- StateStore --------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist (or is not ours).

        Raises:
            Forbidden: the key is outside this node's scope.
            Unavailable: no server answered.
        """
        reply = await self._unary("Get", pb.GetRequest(key=key), pb.GetReply)
        return _kv(reply.kv) if reply.HasField("kv") else None

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key`` through the server and return the new store revision.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.
            Forbidden: the write is outside this node's scope, or ``lease`` was given.
            InvalidInput: the value is not the document the key holds.
            Unavailable: no server answered.
        """
        if lease is not None:
            raise self._refuse("attach keys to leases")
        request = pb.PutRequest(key=key, value=value)
        if expected_revision is not None:
            request.expected_revision = expected_revision
        reply = await self._unary("Put", request, pb.PutReply)
        return reply.revision

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.
            Forbidden: the delete is outside this node's scope.
            Unavailable: no server answered.
        """
        request = pb.DeleteRequest(key=key)
        if expected_revision is not None:
            request.expected_revision = expected_revision
        reply = await self._unary("Delete", request, pb.DeleteReply)
        return reply.revision if reply.HasField("revision") else None

    async def list(self, prefix: str) -> ListResult:
        """Return the keys under ``prefix`` this node may see, and the store revision.

        Raises:
            Forbidden: the prefix is outside this node's scope.
            Unavailable: no server answered.
        """
        reply = await self._unary("List", pb.ListRequest(prefix=prefix), pb.ListReply)
        return ListResult([_kv(kv) for kv in reply.items], reply.revision)

    async def revision(self) -> int:
        """Return the current store revision.

        Raises:
            Unavailable: no server answered.
        """
        reply = await self._unary("Revision", pb.RevisionRequest(), pb.RevisionReply)
        return reply.revision

    async def watch(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Yield the changes under ``prefix`` this node may see, from ``start_revision`` on.

        Deletes come key only, with no ``prev_value``.

        Raises:
            Unavailable: the server could not be reached or went away (from
                the iteration); watch again from the revision after the last
                event seen.
            Compacted: ``start_revision`` is older than the history the server keeps.
            Forbidden: the prefix is outside this node's scope.
        """
        channel = await self._connect()
        request = pb.WatchRequest(prefix=prefix)
        if start_revision is not None:
            request.start_revision = start_revision
        try:
            async for event in channel.stream(f"/{SERVICE}/Watch", request, pb.WatchEvent):
                kind = EventKind.DELETE if event.kind == pb.WatchEvent.DELETE else EventKind.PUT
                yield WatchEvent(kind, _kv(event.kv))
        except Unavailable:
            await self._drop(channel)
            raise
        except Unauthenticated as exc:
            raise await self._refused_by(channel, exc) from None

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Refused: a worker cannot run transactions.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("run transactions")

    async def grant_lease(self, ttl: float) -> int:
        """Refused: a worker holds no leases.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("grant leases")

    async def keepalive(self, lease: int) -> None:
        """Refused: a worker holds no leases.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("renew leases")

    async def revoke(self, lease: int) -> None:
        """Refused: a worker holds no leases.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("revoke leases")

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Refused: only servers take part in elections.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("campaign in elections")

    async def resign(self, leadership: Leadership) -> None:
        """Refused: only servers take part in elections.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("resign from elections")

    async def leader(self, election: str) -> str | None:
        """Refused: only servers take part in elections.

        Raises:
            Forbidden: always.
        """
        raise self._refuse("look up election leaders")

    async def aclose(self) -> None:
        """Close the connection to the server; later calls raise Unavailable."""
        async with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        if channel is not None:
            await channel.aclose()

    def _refuse(self, what: str) -> Forbidden:
        return Forbidden(
            f"node {self._identity.name!r} is a worker: it reaches the cluster state through "
            f"a server and cannot {what}; that is done on a server (role server or both)",
            node=self._identity.name,
        )


def _kv(kv: pb.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, 0)


async def check_accepted(
    identity: NodeIdentity, token: str, address: str, *, deadline: float = 5.0
) -> None:
    """Return if the server at ``address`` accepts calls signed by ``identity`` with ``token``.

    The cheapest signed call (``Revision``) checks the join token and the
    signature only, not whether the caller is registered.

    Raises:
        Unauthenticated: it refuses them (e.g. it holds another join token).
        Unavailable: it cannot be reached within ``deadline`` seconds.
    """
    channel = NodeChannel(identity, token, address, timeout=deadline)
    try:
        await channel.unary(f"/{SERVICE}/Revision", pb.RevisionRequest(), pb.RevisionReply)
    finally:
        await channel.aclose()
