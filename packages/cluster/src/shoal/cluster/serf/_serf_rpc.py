"""An async client for the Serf agent's RPC protocol, on anyio streams.

Hand-written on purpose: the Serf clients on PyPI are dead (``serf-python``
is Python 2 only, ``aioserf`` is built on anyio 1), so Shoal speaks the
protocol itself. It follows Serf's protocol document (``docs/agent/rpc``) and
its Go reference client (``client/rpc_client.go``); no code is taken from
either. :mod:`shoal.cluster.serf._serf_wire` holds the framing and dispatch;
:class:`SerfRpcClient` adds one method per command: ``members``,
``members-filtered``, ``join``, ``leave``, ``force-leave``, ``tags``,
``event``, ``respond``, ``stats``, and the subscriptions ``stream``,
``monitor`` and ``query``. Key management (``install-key`` and friends) and
``get-coordinate`` are left out until something needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shoal.interfaces import Unavailable

from ._serf_records import (
    QueryRecord,
    SerfEventRecord,
    SerfMember,
    decode_event,
    decode_member,
    decode_query_record,
)
from ._serf_subscription import SerfSubscription
from ._serf_wire import REFUSALS, SerfConnection, tidy_error

__all__ = ["GOSSIP_KEY_ERRORS", "SerfRpcClient"]

GOSSIP_KEY_ERRORS = (
    "No installed keys could decrypt the message",
    "Remote state is encrypted and encryption is not configured",
    "Encryption is configured but remote state is not encrypted",
)
"""What memberlist says when two nodes' gossip keys do not match."""


class SerfRpcClient(SerfConnection):
    """A Serf agent's RPC commands; open one with :meth:`connect`.

    ``async with SerfRpcClient.connect("127.0.0.1:7373", auth_key=...) as client``
    connects, handshakes and authenticates. Calls may run concurrently from
    several tasks; each raises :class:`~shoal.interfaces.Unavailable` if the
    connection is gone or the agent does not answer in time.
    """

    async def members(self) -> list[SerfMember]:
        """Return every member the agent knows, failed and left ones included."""
        body = await self.call("members", expects_body=True)
        return [decode_member(member) for member in (body or {}).get("Members") or []]

    async def members_filtered(
        self, *, tags: Mapping[str, str] | None = None, status: str = "", name: str = ""
    ) -> list[SerfMember]:
        """Return the members whose tags, status and name match (anchored Go regexps)."""
        request = {"Tags": dict(tags or {}), "Status": status, "Name": name}
        body = await self.call("members-filtered", request, expects_body=True)
        return [decode_member(member) for member in (body or {}).get("Members") or []]

    async def join(self, addresses: Sequence[str], *, replay: bool = False) -> int:
        """Ask the agent to join the cluster through ``addresses``; return how many answered.

        Args:
            addresses: Gossip addresses (``host:port``) of existing members.
            replay: Replay past user events instead of ignoring them.

        Raises:
            Unavailable: none of ``addresses`` could be joined; a gossip key
                mismatch says so and names the fix.

        """
        request = {"Existing": list(addresses), "Replay": replay}
        _, reply = await self._request("join", request, expects_body=True, reply_within=60.0)
        joined = int((reply.body or {}).get("Num") or 0)
        if reply.error and joined == 0:
            if reply.error in REFUSALS:
                raise self._error("join", reply.error)  # refused before trying, e.g. auth
            error = tidy_error(reply.error)
            if any(marker in reply.error for marker in GOSSIP_KEY_ERRORS):
                raise Unavailable(
                    f"could not join {', '.join(addresses)}: gossip key mismatch "
                    f"({error}); every node must use the cluster's gossip "
                    "key (the one `shoal cluster init` created). Or the address is not a "
                    "node's gossip port: --join takes a server's --bind address (port 7946 by "
                    "default), not its API or gRPC port",
                    addresses=list(addresses),
                    reason="gossip_key_mismatch",
                )
            raise Unavailable(
                f"could not join {', '.join(addresses)}: {error}. Is a server running there, "
                "and is that its gossip address (its --bind, port 7946 by default)? A node "
                "joins once at its first start; start a server first",
                addresses=list(addresses),
            )
        return joined

    async def leave(self) -> None:
        """Leave the cluster gracefully; the agent shuts down afterwards."""
        await self.call("leave", reply_within=max(self._timeout, 30.0))

    async def force_leave(self, node: str, *, prune: bool = False) -> None:
        """Mark a failed ``node`` left (``prune``: forget it at once)."""
        await self.call("force-leave", {"Node": node, "Prune": prune})

    async def update_tags(
        self, tags: Mapping[str, str] | None = None, delete: Sequence[str] = ()
    ) -> None:
        """Set ``tags`` and remove the ``delete`` keys from this agent's tags.

        Raises:
            InvalidInput: the encoded tags exceed Serf's 512-byte limit.

        """
        await self.call("tags", {"Tags": dict(tags or {}), "DeleteTags": list(delete)})

    async def user_event(self, name: str, payload: bytes = b"", *, coalesce: bool = True) -> None:
        """Broadcast a user event to the cluster.

        Raises:
            InvalidInput: the event is larger than the agent allows.

        """
        await self.call("event", {"Name": name, "Payload": payload, "Coalesce": coalesce})

    async def respond(self, query_id: int, payload: bytes) -> None:
        """Answer a query received on this connection's :meth:`stream`."""
        await self.call("respond", {"ID": query_id, "Payload": payload})

    async def stats(self) -> dict[str, dict[str, str]]:
        """Return the agent's debugging statistics."""
        body = await self.call("stats", expects_body=True)
        return {str(k): dict(v) for k, v in (body or {}).items() if isinstance(v, dict)}

    def stream(self, event_filter: str = "*") -> SerfSubscription[SerfEventRecord]:
        """Subscribe to events; use as ``async with client.stream(...) as events``.

        Args:
            event_filter: Serf's event filter, e.g. ``"member-join,user:deploy"``
                or ``"*"`` for everything.

        """
        return SerfSubscription(self, "stream", {"Type": event_filter}, decode_event, stop=True)

    def monitor(self, level: str = "INFO") -> SerfSubscription[str]:
        """Subscribe to the agent's log lines at ``level`` and above (one per connection)."""
        return SerfSubscription(
            self, "monitor", {"LogLevel": level}, lambda body: str(body.get("Log", "")), stop=True
        )

    def query(
        self,
        name: str,
        payload: bytes = b"",
        *,
        filter_nodes: Sequence[str] = (),
        filter_tags: Mapping[str, str] | None = None,
        request_ack: bool = False,
        timeout: float | None = None,
    ) -> SerfSubscription[QueryRecord]:
        """Ask the cluster a query; iterate the acks and responses until it is done.

        Args:
            name: The query's name.
            payload: Opaque payload.
            filter_nodes: Only these nodes answer.
            filter_tags: Only nodes whose tags match these regexps answer.
            request_ack: Ask each node to ack receipt.
            timeout: Seconds the query stays open (Serf's default if None).

        """
        request = {
            "FilterNodes": list(filter_nodes),
            "FilterTags": dict(filter_tags or {}),
            "RequestAck": request_ack,
            "Timeout": int((timeout or 0) * 1e9),  # a Go time.Duration
            "Name": name,
            "Payload": payload,
        }
        return SerfSubscription(
            self,
            "query",
            request,
            decode_query_record,
            final=lambda record: record.type == "done",
            # At the deadline the agent may read its closed ack and response
            # channels before its own timer, streaming empty records: drop them.
            skip=lambda record: record.type != "done" and not record.source,
        )
