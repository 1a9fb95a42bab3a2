"""The clustered parts of a node: Serf membership and node-to-node gRPC.

Part of the composition root (with :mod:`shoal.agent._node`). A node joins a
cluster when it is given the cluster's secrets (``shoal cluster init``): the
gossip key encrypts Serf, the join token authenticates every gRPC call. Then

* every node runs a ``serf agent`` (:class:`~shoal.cluster.SerfCluster`) and
  publishes itself in its tags, gRPC address included;
* servers serve the ``NodeState`` service: what each worker's node loop
  needs of the store, as typed calls checked against the caller
  (:class:`~shoal.cluster.NodeStateGateway`), its instances streamed from
  :class:`~shoal.cluster.Assignments`;
* nodes that run instances serve the ``Pods`` service (logs, exec, stats)
  to servers of the same cluster (:class:`~shoal.cluster.PodGateway`);
* nodes that keep images serve the ``Images`` service to the cluster's
  nodes (:class:`~shoal.cluster.ImageGateway`), and a worker's image store
  fetches an image it lacks from the servers (:meth:`Clustering.image_peers`);
* workers keep no store: their node loop uses a
  :class:`~shoal.cluster.RemoteNodeState` over any alive server found in
  gossip, moving to another one when theirs stops answering; the service
  layer a worker never serves gets :class:`NoStore`, which refuses every call.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import grpc

from shoal.cluster import (
    Assignments,
    Caller,
    CallVerifier,
    ImageGateway,
    NodeChannel,
    NodeIdentity,
    NodeStateGateway,
    PodGateway,
    RemoteImages,
    RemoteNodeState,
    RemotePods,
    RemoteTraces,
    SerfCluster,
    TraceGateway,
    check_gossip_key,
    is_server,
)
from shoal.interfaces import (
    Clock,
    Compare,
    ContainerRuntime,
    DeleteOp,
    Forbidden,
    GossipState,
    ImagePeer,
    ImageShare,
    InvalidInput,
    KeyValue,
    Leadership,
    ListResult,
    Member,
    Node,
    PutOp,
    StateStore,
    Tag,
    TraceQuery,
    TraceSource,
    TxnResult,
    Unavailable,
    UsageHistory,
    UsageQuery,
    WatchEvent,
)

__all__ = ["Clustering", "NoStore", "advertised_host", "read_secret", "with_port"]

GOSSIP_PORT = 7946
GRPC_PORT = 7947
_REACHABLE = (GossipState.ALIVE, GossipState.SUSPECT)


def read_secret(path: Path, what: str) -> str:
    """Return the stripped text of a secret file.

    Raises:
        InvalidInput: it cannot be read or is empty, naming the file and the fix.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the {what} from {path} ({exc.strerror or exc}): create the cluster's "
            "secrets with `shoal cluster init` and pass their paths",
            path=str(path),
        ) from None
    if not text:
        raise InvalidInput(f"the {what} file {path} is empty", path=str(path))
    return text


def with_port(address: str, default_port: int, *, field: str) -> str:
    """Return ``address`` as ``host:port``, adding ``default_port`` when it has none.

    Raises:
        InvalidInput: the port is not a number.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        return f"{address}:{default_port}"
    if not port.isdigit():
        raise InvalidInput(f"{field} {address!r} is not HOST[:PORT]", field=field)
    return f"{host}:{port}"


def _grpc_address(name: str, addresses: Mapping[str, str], so: str) -> str:
    """Return node ``name``'s gRPC address from its addresses (or gossip tags).

    Raises:
        Unavailable: it publishes none, ``so`` (what cannot be done) is said.
    """
    address = addresses.get(Tag.GRPC)
    if not address:
        raise Unavailable(f"node {name} publishes no gRPC address, so {so}", node=name)
    return address


def _is_caller(member: Member, caller: Caller) -> bool:
    """Whether ``member`` is the node that signed a call as ``caller`` (its id and its name)."""
    return member.tags.get(Tag.ID) == caller.node_id and member.name == caller.name


def advertised_host(host: str) -> str:
    """Return the address others reach ``host`` at: itself, or this machine's if unspecified.

    Raises:
        InvalidInput: ``host`` is unspecified (0.0.0.0) and the host name does
            not resolve to an address other nodes can reach.
    """
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if not unspecified:
        return host
    name = socket.gethostname()
    try:
        found = socket.gethostbyname(name)
    except OSError:
        found = ""
    if not found or ipaddress.ip_address(found).is_loopback:
        raise InvalidInput(
            f"gRPC listens on {host}, and this machine's name {name!r} resolves to "
            f"{found or 'nothing'}, which other nodes cannot reach: give the address they "
            "should use with --grpc-addr HOST:PORT",
            field="grpc_addr",
        )
    return found


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Clustering:
    """One node's membership in a cluster: its identity, secrets, gossip and gRPC.

    Args:
        identity: the node's name and key.
        token: the cluster's join token.
        gossip_key: the cluster's Serf encryption key (base64 of 32 bytes).
        data_dir: the node's data dir (Serf keeps its snapshot under it).
        bind: gossip address ``host[:port]``.
        grpc_addr: gRPC listen address, ``host:port``; by default the bind host, port 7947.
        join: Serf addresses of nodes already in the cluster.
        profile: Serf timing profile (local, lan, wan); by default from ``bind``.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        token: str,
        gossip_key: str,
        data_dir: Path,
        *,
        bind: str,
        grpc_addr: str | None = None,
        join: Sequence[str] = (),
        profile: str | None = None,
    ) -> None:
        self.identity = identity
        self.token = token
        self.gossip_key = check_gossip_key(gossip_key, field="gossip key")
        self.data_dir = data_dir
        self.bind = with_port(bind, GOSSIP_PORT, field="--bind")
        bind_host = self.bind.rpartition(":")[0]
        self.grpc_addr = with_port(grpc_addr or bind_host, GRPC_PORT, field="--grpc-addr")
        grpc_host, _, grpc_port = self.grpc_addr.rpartition(":")
        self.advertised_grpc = f"{advertised_host(grpc_host)}:{grpc_port}"
        self.join = [with_port(a, GOSSIP_PORT, field="--join") for a in join]
        self.profile = profile
        self.verifier = CallVerifier(token)
        self._serf: SerfCluster | None = None
        self._pods: dict[str, RemotePods] = {}
        self._images: dict[str, RemoteImages] = {}
        self._traces: dict[str, RemoteTraces] = {}
        self._node_state: RemoteNodeState | None = None
        self.assignments: Assignments | None = None
        """A server's per-worker instance streams, made by :meth:`handlers`; run by the caller."""

    def serf(self, node: Node, tags: dict[str, str]) -> SerfCluster:
        """Return the Serf cluster manager for ``node``, publishing ``tags``."""
        if self._serf is None:
            serf_dir = self.data_dir / "serf"
            serf_dir.mkdir(mode=0o700, exist_ok=True)
            self._serf = SerfCluster(
                node.name,
                serf_dir,
                bind=self.bind,
                rpc_addr=f"127.0.0.1:{_free_loopback_port()}",
                rpc_auth=secrets.token_urlsafe(24),
                encrypt_key=self.gossip_key,
                tags=tags,
                join=self.join,
                profile=self.profile,
            )
        return self._serf

    async def _members(self) -> Sequence[Member]:
        if self._serf is None:
            raise Unavailable("the node has not joined its cluster yet")
        return await self._serf.members()

    async def server_addresses(self) -> list[str]:
        """Return the gRPC addresses of the servers gossip knows alive (for a RemoteNodeState)."""
        return [
            m.tags[Tag.GRPC]
            for m in await self._members()
            if m.state in _REACHABLE and is_server(m) and Tag.GRPC in m.tags
        ]

    async def authorize_server(self, caller: Caller) -> None:
        """Allow ``caller`` if gossip knows it as a reachable server of this cluster.

        Its key's id and the name it signs with must be those of one member, so
        the name a served call is recorded under (a span's caller) is its own.

        Raises:
            Forbidden: it is not one.
        """
        for member in await self._members():
            if _is_caller(member, caller) and is_server(member) and member.state in _REACHABLE:
                return
        raise Forbidden(
            f"node {caller.name!r} (id {caller.node_id}) is not a server of this cluster in "
            "gossip: only servers may reach a node's pods, usage history and spans",
            node=caller.name,
        )

    async def authorize_member(self, caller: Caller) -> None:
        """Allow ``caller`` if gossip knows it as a reachable member of this cluster.

        Its key's id and the name it signs with must be those of one member.

        Raises:
            Forbidden: it is not one.
        """
        for member in await self._members():
            if _is_caller(member, caller) and member.state in _REACHABLE:
                return
        raise Forbidden(
            f"node {caller.name!r} (id {caller.node_id}) is not a member of this cluster in "
            "gossip: only members may fetch a node's images",
            node=caller.name,
        )

    async def image_peers(self) -> list[ImagePeer]:
        """Return the servers to fetch an image from: alive in gossip, not this node.

        Raises:
            Unavailable: the node has not joined its cluster yet.
        """
        peers = []
        for member in await self._members():
            address = member.tags.get(Tag.GRPC)
            if (
                member.state not in _REACHABLE
                or not is_server(member)
                or not address
                or member.tags.get(Tag.ID) == self.identity.node_id
            ):
                continue
            if address not in self._images:
                channel = NodeChannel(self.identity, self.token, address, timeout=60.0)
                self._images[address] = RemoteImages(channel)
            peers.append(ImagePeer(member.name, self._images[address]))
        return peers

    def images_of(self, node: Node) -> ImageShare:
        """Return the images of ``node``, reached over gRPC.

        Raises:
            Unavailable: the node publishes no gRPC address.
        """
        address = _grpc_address(node.name, node.addresses, "its images cannot be listed")
        if address not in self._images:
            channel = NodeChannel(self.identity, self.token, address, timeout=60.0)
            self._images[address] = RemoteImages(channel)
        return self._images[address]

    def node_state(self) -> RemoteNodeState:
        """Return a worker's view of the cluster state: the NodeState service of any alive server.

        Closed by :meth:`aclose`.
        """
        if self._node_state is None:
            self._node_state = RemoteNodeState(self.identity, self.token, self.server_addresses)
        return self._node_state

    def handlers(
        self,
        store: StateStore | None,
        runtime: ContainerRuntime | None,
        images: ImageShare | None = None,
        *,
        clock: Clock,
        usage: UsageHistory | None = None,
        traces: TraceSource | None = None,
    ) -> list[grpc.GenericRpcHandler]:
        """Return the gRPC services this node offers.

        NodeState for servers (with :attr:`assignments`, which the caller runs),
        Pods for runners (with ``usage``, the node's usage history), Images for
        nodes that keep images, and Traces (the spans it recorded, ``traces``;
        None: its tracing is off, which the service says) for the servers.
        """
        served: list[grpc.GenericRpcHandler] = []
        if store is not None:
            self.assignments = Assignments(store, clock)
            served.append(
                NodeStateGateway(store, self.verifier, assignments=self.assignments).handler()
            )
        if runtime is not None:
            pods = PodGateway(runtime, self.verifier, self.authorize_server, usage=usage)
            served.append(pods.handler())
        if images is not None:
            served.append(ImageGateway(images, self.verifier, self.authorize_member).handler())
        served.append(TraceGateway(traces, self.verifier, self.authorize_server).handler())
        return served

    def pods_of(self, node: Node) -> RemotePods:
        """Return logs/exec/stats of the pods on ``node``, reached over gRPC.

        Raises:
            Unavailable: the node publishes no gRPC address.
        """
        address = _grpc_address(node.name, node.addresses, "its pods cannot be reached")
        if address not in self._pods:
            self._pods[address] = RemotePods(NodeChannel(self.identity, self.token, address))
        return self._pods[address]

    def usage_of(self, node: Node) -> UsageQuery:
        """Return the usage history ``node`` keeps, reached over gRPC (its Pods service).

        Raises:
            Unavailable: the node publishes no gRPC address.
        """
        return self.pods_of(node)

    def traces_of(self, member: Member) -> TraceQuery:
        """Return the spans ``member`` recorded, reached over gRPC (its Traces service).

        Raises:
            Unavailable: the member publishes no gRPC address.
        """
        address = _grpc_address(member.name, member.tags, "its spans cannot be read")
        if address not in self._traces:
            self._traces[address] = RemoteTraces(NodeChannel(self.identity, self.token, address))
        return self._traces[address]

    async def aclose(self) -> None:
        """Close the channels opened to other nodes."""
        if self._node_state is not None:
            await self._node_state.aclose()
        pods, self._pods = list(self._pods.values()), {}
        for remote in pods:
            await remote.aclose()
        images, self._images = list(self._images.values()), {}
        for share in images:
            await share.aclose()
        traces, self._traces = list(self._traces.values()), {}
        for source in traces:
            await source.aclose()


class NoStore:
    """The StateStore of a worker, which keeps none: every call is refused, saying where it is.

    A worker's node loop reaches the cluster state through its
    :class:`~shoal.cluster.RemoteNodeState`; its service layer and leader
    campaign are never run (a worker serves no API and leads nothing), so
    this stands in for their store, as a server's inert runtime stands in
    for one that runs nothing.
    """

    def __init__(self, node: str) -> None:
        self.node = node

    def _refuse(self) -> Forbidden:
        return Forbidden(
            f"node {self.node!r} is a worker and keeps no store: its node loop reaches the "
            "cluster state through a server; ask a server (role server or both)",
            node=self.node,
        )

    async def get(self, key: str) -> KeyValue | None:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def list(self, prefix: str) -> ListResult:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def revision(self) -> int:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def watch(
        self, prefix: str, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Refused (Forbidden), on the first step of the iteration."""
        nothing: list[WatchEvent] = []
        for event in nothing:  # an async generator, as a store's watch is
            yield event
        raise self._refuse()

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def grant_lease(self, ttl: float) -> int:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def keepalive(self, lease: int) -> None:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def revoke(self, lease: int) -> None:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def resign(self, leadership: Leadership) -> None:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def leader(self, election: str) -> str | None:
        """Refused (Forbidden)."""
        raise self._refuse()

    async def aclose(self) -> None:
        """Nothing to close."""
