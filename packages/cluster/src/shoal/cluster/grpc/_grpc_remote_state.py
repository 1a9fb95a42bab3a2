"""A worker's NodeState: its view of the cluster state, reached through a server.

A worker keeps no store of its own; its node loop gets a
:class:`RemoteNodeState`, which turns each
:class:`~shoal.interfaces.NodeState` call into one typed, signed call of
``shoal.cluster.v1.NodeState`` on one server. The server checks it against
the caller (see :mod:`shoal.cluster.grpc._worker_scope`).

Server choice: the store keeps using one server while it answers. When a
call fails with :class:`~shoal.interfaces.Unavailable` it drops that server's
channel and raises; it never retries a call by itself (a Put might have been
applied). The next call asks ``servers()`` again and tries servers that did
not just fail first, so a worker moves on when its server dies.

A report carries the instance's status fields only
(:data:`~shoal.interfaces.INSTANCE_STATUS_FIELDS`): the server writes them
onto the record it holds. What does not travel: a key's ``version`` and
``lease`` (0 and None here) and a watch event's ``prev_value`` (None).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import anyio
from google.protobuf.message import Message

from shoal.interfaces import (
    CONFIG_MODELS,
    INSTANCE_STATUS_FIELDS,
    AsyncClosing,
    ConfigMap,
    ConfigMapSpec,
    Event,
    EventKind,
    Instance,
    KeyValue,
    ListResult,
    Node,
    Secret,
    SecretSpec,
    ShoalError,
    Unauthenticated,
    Unavailable,
    WatchEvent,
)

from ._grpc_base import NodeChannel
from ._grpc_state import SERVICE
from ._nodeauth import NodeIdentity
from ._pb import shoal_node_pb2 as pb

log = logging.getLogger(__name__)

__all__ = ["RemoteNodeState", "check_accepted"]

Reply = TypeVar("Reply", bound=Message)


class RemoteNodeState(AsyncClosing):
    """The NodeState of a worker: its view of the cluster state, through a server.

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
        self._lost_at: float | None = None
        """When a server in use last failed (time.monotonic), until one answers again."""
        self._closed = False

    def __repr__(self) -> str:
        return f"RemoteNodeState(node={self._identity.name!r}, server={self.server!r})"

    @property
    def identity(self) -> NodeIdentity:
        """This node's name and key, which sign every call."""
        return self._identity

    @property
    def server(self) -> str | None:
        """The address of the server in use, or None between servers."""
        return None if self._channel is None else self._channel.address

    # -- channel ---------------------------------------------------------------

    async def _connect(self) -> NodeChannel:
        async with self._lock:
            if self._closed:
                raise Unavailable(
                    f"the node state of node {self._identity.name!r} is closed", closed=True
                )
            if self._channel is not None:
                return self._channel
            addresses = list(dict.fromkeys(await self._servers()))
            if not addresses:
                raise Unavailable(
                    "no server is alive in this worker's view of the cluster: it reaches the "
                    "cluster state through a server, and waits for one (a server restarting, "
                    "or one it never joined: check --join, and with `shoal --server "
                    "http://SERVER:7070 members` that this worker and an alive server are listed)",
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
            if self._lost_at is None:
                self._lost_at = time.monotonic()
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
        if self._lost_at is not None:  # what the warnings meanwhile were about is over
            log.info(
                "node %s reaches the cluster state again, through server %s (%.0f s without)",
                self._identity.name,
                channel.address,
                time.monotonic() - self._lost_at,
            )
            self._lost_at = None
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

    # -- NodeState ---------------------------------------------------------------

    async def register(self, node: Node) -> bool:
        """Create or refresh this node's record; the server keeps the cluster's fields.

        Raises:
            Unauthenticated: every server refused this node's credentials.
            Forbidden: the name is registered to another key.
            Unavailable: no server answered.
        """
        request = pb.RegisterRequest(node=node.model_dump_json().encode())
        reply = await self._unary("Register", request, pb.RegisterReply)
        return reply.created

    async def heartbeat(self, at: datetime) -> None:
        """Set ``heartbeat_at`` of this node's record.

        Raises:
            NotFound: the node has no record.
            Unavailable: no server answered.
        """
        await self._unary("Heartbeat", pb.HeartbeatRequest(at=at.isoformat()), pb.HeartbeatReply)

    async def assignments(self) -> ListResult:
        """Return the instances placed on this node and the revision they reflect.

        Raises:
            Unavailable: no server answered.
        """
        reply = await self._unary("ListAssignments", pb.AssignmentsRequest(), pb.AssignmentsReply)
        return ListResult([_kv(kv) for kv in reply.items], reply.revision)

    async def watch_assignments(self, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Yield the changes of this node's instances from ``start_revision`` on.

        Raises:
            Unavailable: the server could not be reached or went away (from
                the iteration); watch again from the revision after the last
                event seen.
            Compacted: ``start_revision`` is older than the history the server keeps.
        """
        channel = await self._connect()
        request = pb.WatchAssignmentsRequest(from_revision=start_revision)
        try:
            method = f"/{SERVICE}/WatchAssignments"
            async for event in channel.stream(method, request, pb.AssignmentEvent):
                deleted = event.kind == pb.AssignmentEvent.DELETE
                yield WatchEvent(EventKind.DELETE if deleted else EventKind.PUT, _kv(event.kv))
        except Unavailable:
            await self._drop(channel)
            raise
        except Unauthenticated as exc:
            raise await self._refused_by(channel, exc) from None

    async def report(self, instance: Instance, expected_revision: int) -> int:
        """Send the status fields of ``instance``; the server writes them with CAS.

        Raises:
            RevisionConflict: the record changed since.
            Forbidden: the instance is not placed on this node (or has another uid).
            Unavailable: no server answered.
        """
        status = instance.model_dump(mode="json", include=set(INSTANCE_STATUS_FIELDS))
        request = pb.ReportInstanceRequest(
            namespace=instance.namespace,
            name=instance.name,
            uid=instance.uid,
            status=json.dumps(status).encode(),
            expected_revision=expected_revision,
        )
        reply = await self._unary("ReportInstance", request, pb.ReportInstanceReply)
        return reply.revision

    async def remove(self, instance: Instance, expected_revision: int) -> int | None:
        """Delete the record of an instance this node tore down, with CAS.

        Raises:
            RevisionConflict: the record changed since.
            Forbidden: the instance is not placed on this node.
            Unavailable: no server answered.
        """
        request = pb.RemoveInstanceRequest(
            namespace=instance.namespace,
            name=instance.name,
            uid=instance.uid,
            expected_revision=expected_revision,
        )
        reply = await self._unary("RemoveInstance", request, pb.RemoveInstanceReply)
        return reply.revision if reply.HasField("revision") else None

    async def record(self, event: Event) -> None:
        """Record ``event`` (its actor is this node) through the server.

        Raises:
            Forbidden: it is not this node's, or the node records too many.
            Unavailable: no server answered.
        """
        request = pb.RecordEventRequest(event=event.model_dump_json().encode())
        await self._unary("RecordEvent", request, pb.RecordEventReply)

    async def config(
        self, kind: str, namespace: str, name: str
    ) -> ConfigMapSpec | SecretSpec | None:
        """Return a ConfigMap or Secret a pod of this node uses, or None when it does not exist.

        Raises:
            Forbidden: no instance placed on this node uses it.
            InvalidInput: ``kind`` is neither ConfigMap nor Secret.
            Unavailable: no server answered.
        """
        request = pb.GetConfigRequest(kind=kind, namespace=namespace, name=name)
        reply = await self._unary("GetConfig", request, pb.GetConfigReply)
        if not reply.HasField("value"):
            return None
        stored = CONFIG_MODELS[kind].model_validate_json(reply.value)
        # The server answers only the kinds a pod reads (and refuses any other, naming them).
        assert isinstance(stored, ConfigMap | Secret)
        return stored.spec

    async def aclose(self) -> None:
        """Close the connection to the server; later calls raise Unavailable."""
        async with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        if channel is not None:
            await channel.aclose()


def _kv(kv: pb.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, 0)


async def check_accepted(
    identity: NodeIdentity, token: str, address: str, *, deadline: float = 5.0
) -> None:
    """Return if the server at ``address`` accepts calls signed by ``identity`` with ``token``.

    ``Ping`` checks the join token and the signature only, not whether the
    caller is registered.

    Raises:
        Unauthenticated: it refuses them (e.g. it holds another join token).
        Unavailable: it cannot be reached within ``deadline`` seconds.
    """
    channel = NodeChannel(identity, token, address, timeout=deadline)
    try:
        await channel.unary(f"/{SERVICE}/Ping", pb.PingRequest(), pb.PingReply)
    finally:
        await channel.aclose()
