"""The composition root: the one place that picks concrete implementations.

``build_node(config)`` turns a :class:`NodeConfig` into a :class:`ShoalNode`
holding a store, a runtime, a cluster manager, a scheduler and a clock, and
the service layer over them. ``ShoalNode.run`` starts what the node's role
needs: the control loop and the membership sync (on servers, while this node
holds the leader lease, writing through a store fenced by that term) and the
node loop (on workers). No other module of ``shoal.core`` imports an
implementation package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from pydantic import BaseModel, Field

from shoal.cluster import NodeIdentity, StaticCluster, check_gossip_key, node_tags, serve_grpc
from shoal.interfaces import (
    Capacity,
    Clock,
    ClusterManager,
    Conflict,
    ContainerRuntime,
    ImageManager,
    InternalError,
    InvalidInput,
    Node,
    NodeRole,
    NotFound,
    ShoalError,
    StateStore,
    Unauthenticated,
    Unavailable,
)
from shoal.runtime import ImageStore, MockRuntime, OciCliRuntime, pod_networking
from shoal.state import EtcdStore, MemoryStore, SqliteStore

from ._admission import admit_server, check_cluster_id
from ._backoff import Backoff
from ._clock import SystemClock
from ._clustering import Clustering, read_secret
from ._control import ControlLoop
from ._fence import FencedStore
from ._membership import MembershipSync
from ._nodeloop import NodeLoop
from ._scheduler import DefaultScheduler
from ._service import LocalNode, ShoalService

__all__ = ["NodeConfig", "ShoalNode", "build_node", "host_capacity", "prepare_data_dir"]

log = logging.getLogger(__name__)

LEADER_ELECTION = "control-loop"


class NodeConfig(BaseModel):
    """How to assemble a node. Every field has a default that runs one machine."""

    data_dir: Path
    """Where the node keeps its state, keys and authorized_keys."""
    name: str = Field(default_factory=socket.gethostname)
    """Node name; the host name by default."""
    role: NodeRole = NodeRole.BOTH
    """server (control loop), worker (runs instances) or both."""
    runtime: Literal["runc", "crun", "youki", "mock"] = "runc"
    """Container runtime: an OCI runtime CLI (runc, crun, youki), or 'mock' (nothing runs)."""
    network: Literal["bridge", "host"] = "bridge"
    """Pod networking for OCI runtimes: a CNI bridge with ports published on 127.0.0.1, or host."""
    bridge: str = "shoal0"
    """Name of the CNI bridge. Two nodes on one host need different bridges and subnets."""
    bridge_subnet: str = "198.18.0.0/24"
    """Subnet of the CNI bridge (addresses are handed out per data dir)."""
    default_registry: str | None = None
    """Registry (host[:port]) for unqualified image names; None: they must be imported."""
    allow_host_paths: bool = False
    """Let workloads mount paths of this machine (host_path volumes); refused when False."""
    state: Literal["sqlite", "memory", "etcd"] = "sqlite"
    """State store of a server: SQLite in the data dir, memory (lost on exit), or etcd."""
    etcd: list[str] = Field(default_factory=list)
    """etcd endpoints (host:port) for ``state="etcd"``: servers sharing one cluster state."""
    etcd_prefix: str = "/shoal"
    """Key prefix in etcd; clusters sharing one etcd need different prefixes."""
    join_token_file: Path | None = None
    """File holding the cluster's join token; with the gossip key, the node joins a cluster."""
    gossip_key_file: Path | None = None
    """File holding the cluster's Serf gossip key (``shoal cluster init`` writes both)."""
    bind: str | None = None
    """Gossip address HOST[:PORT] (port 7946 by default); 127.0.0.1 when clustered without it."""
    grpc_addr: str | None = None
    """Node-to-node gRPC listen address; the bind host, port 7947, by default."""
    join: list[str] = Field(default_factory=list)
    """Serf addresses of nodes already in the cluster."""
    gossip_profile: Literal["local", "lan", "wan"] | None = None
    """Serf timing profile; 'local' for loopback binds and 'lan' otherwise by default."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Node labels for placement constraints."""
    capacity: Capacity | None = None
    """Override the detected capacity (mainly for tests and simulations)."""
    api_addr: str = "127.0.0.1:7070"
    """Address the REST API listens on, published in the node record."""
    control_resync: float = 5.0
    """Seconds between timer-driven control loop passes."""
    node_resync: float = 2.0
    """Seconds between timer-driven node loop passes."""
    leader_ttl: float = 10.0
    """Seconds the leader lease lives without renewal."""


def host_capacity() -> Capacity:
    """Detect this machine's CPU count and memory."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return Capacity.model_construct(cpu=(cpus or 1) * 1000, memory=memory, pods=110)


def prepare_data_dir(path: Path) -> Path:
    """Create the data dir (0700) and prove it is writable.

    Raises:
        Unavailable: it cannot be created or written, naming the path and the fix.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise Unavailable(
            f"data dir {path} is not writable ({exc.strerror or exc}): choose another "
            "with --data-dir or fix its permissions",
            path=str(path),
        ) from None
    return path.resolve()


class ShoalNode:
    """A running node: its parts, its service, and the loops its role needs."""

    def __init__(
        self,
        config: NodeConfig,
        store: StateStore,
        runtime: ContainerRuntime,
        cluster: ClusterManager,
        clock: Clock,
        node: Node,
        *,
        images: ImageManager | None = None,
        clustering: Clustering | None = None,
    ) -> None:
        self.config = config
        self.clustering = clustering
        self.images = images
        self.store = store
        self.runtime = runtime
        self.cluster = cluster
        self.clock = clock
        self.node = node
        self.scheduler = DefaultScheduler()
        self.service = ShoalService(
            store,
            clock,
            local=LocalNode(node.name, runtime, images),
            remote=None if clustering is None else clustering.pods_of,
        )
        self.control: ControlLoop | None = None
        """The control loop of this node's current term as leader; None when not leading."""
        self.node_loop = NodeLoop(node, store, runtime, clock, resync=config.node_resync)
        self.ready = anyio.Event()
        self._left = False
        self._loops: list[anyio.CancelScope] = []
        """The scopes of the node loop and the campaign, cancelled when the node leaves."""
        self._lease: int | None = None
        """The lease of the current (or last) term as leader, revoked before the next."""
        self._cluster_id_checked = clustering is None
        """Whether this server's store was found to hold the cluster's state (see _admission)."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the node's loops until cancelled; closes its parts on the way out.

        A clustered node also serves node-to-node gRPC. To stop it gracefully,
        call :meth:`leave` first, then cancel: the others see it left (its
        instances move elsewhere, without a failure). A node that is killed, or
        cancelled without leaving, is seen failed instead.
        """
        serves = self.config.role in (NodeRole.SERVER, NodeRole.BOTH)
        runs = self.config.role in (NodeRole.WORKER, NodeRole.BOTH)
        # Nested `async with`, not an AsyncExitStack: the stack rewrites the
        # __context__ of the CancelledError it passes along, which can make a
        # cycle that anyio's task group then walks forever.
        async with _opened(self.store), _opened(self.runtime), _opened(self.cluster):
            try:
                async with anyio.create_task_group() as tg:
                    if self.clustering is not None and serves:
                        await self._admit(self.clustering)
                    if self.clustering is not None:
                        handlers = self.clustering.handlers(
                            self.store if serves else None, self.runtime if runs else None
                        )
                        await tg.start(serve_grpc, self.clustering.grpc_addr, handlers)
                    if runs:
                        await tg.start(self._forever, "node loop", self.node_loop.run)
                    elif self.clustering is not None:
                        # A server-only node runs no instances, but is listed with its role.
                        tg.start_soon(self.node_loop.register_when_reachable)
                    if serves:
                        await tg.start(self._forever, "leader campaign", self._lead)
                    self.ready.set()
                    task_status.started()
            finally:
                if self.clustering is not None:
                    with anyio.CancelScope(shield=True):
                        await self.clustering.aclose()

    async def _admit(self, clustering: Clustering) -> None:
        """Refuse to serve for a cluster this server is not of; it leaves gossip first.

        Raises:
            Conflict: another alive server keeps another cluster state.
            Unauthenticated: the cluster's servers refuse this node's join token.
        """
        try:
            self._cluster_id_checked = await admit_server(
                self.store, self.cluster, clustering.identity, clustering.token
            )
        except (Conflict, Unauthenticated):
            await self._leave_refused()
            raise

    async def _leave_refused(self) -> None:
        """Leave gossip gracefully (bounded, never raising): this server was refused."""
        self._left = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await self.cluster.leave()
            except ShoalError as exc:
                log.warning("%s could not leave gracefully: %s", self.node.name, exc)

    async def _forever(
        self,
        what: str,
        loop: Callable[..., Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``loop``, which never returns; if it does, stop the node rather than idle.

        A node whose loop ended would still gossip that it is alive while
        doing nothing; failing makes it visible (and restartable).
        """
        with anyio.CancelScope() as scope:
            self._loops.append(scope)
            await loop(task_status=task_status)
        if scope.cancel_called:
            return  # stopped on purpose: the node is leaving
        raise InternalError(
            f"the {what} of node {self.node.name} stopped unexpectedly; the agent stops "
            "so that it can be restarted (please report this)"
        )

    async def leave(self) -> None:
        """Leave the cluster gracefully, while the node still runs; then cancel :meth:`run`.

        The others see this node left, not failed, and its pods are stopped:
        their replacements run elsewhere. It must happen before the
        cancel: cancelling :meth:`run` also stops the supervision of the node's
        serf agent, after which no leave can be announced. Bounded (10 s for the
        leave, the stop grace and 10 s more for the pods), and never raises; it
        does nothing on a node that is not clustered, left already, or was
        refused by the cluster: the name a refused node gossips
        under may be another node's (a reused --name), and a leave under that
        name would take that node out. Its serf agent is only stopped, so
        gossip sees the short-lived member failed.
        """
        if self.clustering is None or self._left or self.node_loop.refused is not None:
            await anyio.lowlevel.checkpoint()
            return
        self._left = True
        # The loops stop first: the node loop would otherwise report the pods
        # stopped below as failed (and start a restarted one behind our back),
        # and a leading server resigns, so another takes over at once.
        for scope in self._loops:
            scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10) as bounded:
            try:
                await self.cluster.leave()
                log.info("%s left the cluster", self.node.name)
            except ShoalError as exc:
                log.warning("%s could not leave gracefully: %s", self.node.name, exc)
        if bounded.cancelled_caught:
            log.warning(
                "%s could not leave the cluster within 10 s: the others see it failed",
                self.node.name,
            )
        if self.config.role != NodeRole.SERVER:
            await self._stop_pods()

    async def _stop_pods(self) -> None:
        """Stop and remove this node's pods: having left, its instances run elsewhere.

        Containers outlive their agent (a runc pod belongs to its shim), so a
        node that left without this would keep running copies of replicas
        that now also run on other nodes. Bounded by the stop grace.
        """
        grace = self.node_loop.stop_grace

        async def stop(uid: str) -> None:
            with contextlib.suppress(ShoalError):  # e.g. it stopped already
                await self.runtime.stop(uid, grace)
            with contextlib.suppress(ShoalError):
                await self.runtime.remove(uid)

        with anyio.CancelScope(shield=True), anyio.move_on_after(grace + 10):
            try:
                pods = await self.runtime.list()
            except ShoalError as exc:
                log.warning("%s cannot list its pods to stop them: %s", self.node.name, exc)
                return
            async with anyio.create_task_group() as tg:
                for pod in pods:
                    tg.start_soon(stop, pod.uid)
            if pods:
                log.info("%s stopped its %d pod(s) on leaving", self.node.name, len(pods))

    async def _lead(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Campaign for the leader lease, run the leader's loops while holding it, and repeat.

        The lease is kept alive from the moment it is granted — also while the
        campaign waits for a previous leader's lease to run out. If it is lost
        (the store was unreachable for longer than its ttl), the control loop
        stops and the node campaigns again with a new lease. If the store
        cannot be reached, or the term was taken over (``Deposed``), the
        term ends too, and the node campaigns again after a backoff (1 s,
        doubling to 10 s, reset once it leads again): no scheduling happens
        meanwhile, and the agent keeps running.
        """
        task_status.started()
        backoff = Backoff(self.clock)
        while True:
            try:
                await self._term(backoff)
            except* NotFound:
                log.warning("%s lost its leader lease; campaigning again", self.node.name)
            except* Unavailable as group:
                log.warning(
                    "%s stops leading: %s; campaigning again in %g s",
                    self.node.name,
                    "; ".join(_messages(group)),
                    backoff.delay,
                )
                await backoff.wait()

    async def _term(self, backoff: Backoff) -> None:
        """Win the election, then run the leader's loops on writes fenced by that term.

        Returns never; it raises when the term ends (NotFound: the lease is
        gone; Unavailable: the store is unreachable, or the term was taken over).
        """
        ttl = self.config.leader_ttl
        await self._revoke_stale_lease()
        if not self._cluster_id_checked:
            try:
                await check_cluster_id(self.store, self.cluster, self.node.name)
            except Conflict:
                await self._leave_refused()
                raise
            self._cluster_id_checked = True
        lease = self._lease = await self.store.grant_lease(ttl)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_lease, lease, ttl)
            leadership = await self.store.campaign(LEADER_ELECTION, self.node.name, lease)
            backoff.reset()
            log.info("%s leads the control loop (lease %s)", self.node.name, lease)
            fenced = FencedStore(self.store, leadership)
            self.control = ControlLoop(
                fenced, self.scheduler, self.clock, resync=self.config.control_resync
            )
            membership = MembershipSync(
                fenced, self.cluster, self.clock, resync=self.config.control_resync
            )
            try:
                tg.start_soon(membership.run)
                await self.control.run()
            finally:
                self.control = None
                with anyio.CancelScope(shield=True), contextlib.suppress(ShoalError):
                    await self.store.resign(leadership)

    async def _revoke_stale_lease(self) -> None:
        """Revoke the lease of the previous term, and the election key held by it.

        A term that ended because the store was unreachable could not resign;
        without this, the node's next campaign would wait behind its own old
        election key until that lease ran out.

        Raises:
            Unavailable: the store is still unreachable.
        """
        if self._lease is None:
            return
        with contextlib.suppress(NotFound):  # it ran out meanwhile
            await self.store.revoke(self._lease)
        self._lease = None

    async def _keep_lease(self, lease: int, ttl: float) -> None:
        while True:
            await self.clock.sleep(ttl / 3)
            await self.store.keepalive(lease)


def _messages(group: BaseExceptionGroup[Unavailable]) -> list[str]:
    """Return the messages of the errors in ``group`` and its nested groups."""
    return [
        message
        for exc in group.exceptions
        for message in (_messages(exc) if isinstance(exc, BaseExceptionGroup) else [str(exc)])
    ]


@contextlib.asynccontextmanager
async def _opened(part: StateStore | ContainerRuntime | ClusterManager) -> AsyncIterator[None]:
    """Enter ``part`` if it is an async context manager, else close it on the way out."""
    if isinstance(part, contextlib.AbstractAsyncContextManager):
        async with part:
            yield
        return
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await part.aclose()


def build_node(config: NodeConfig, *, clock: Clock | None = None) -> ShoalNode:
    """Assemble a node from ``config``.

    Raises:
        Unavailable: the data dir cannot be written.
        InvalidInput: the configuration does not hold together (e.g. a worker
            without cluster secrets), or a secret file cannot be read.
    """
    check_config(config)
    secrets = _cluster_secrets(config)  # read before anything is written
    data_dir = prepare_data_dir(config.data_dir)
    clock = clock or SystemClock()
    identity = NodeIdentity.load_or_create(config.name, data_dir / "node.key")
    clustering = None if secrets is None else _clustering(config, data_dir, identity, *secrets)
    runtime: ContainerRuntime
    images: ImageManager | None
    if config.role == NodeRole.SERVER:
        # A server-only node runs no instances: no node loop, no Pods service.
        # Its runtime is an inert stand-in, so a server needs neither root nor runc.
        runtime, images = MockRuntime(clock), None
    else:
        runtime, images = _runtime(config, data_dir, clock)
    capacity = config.capacity or host_capacity()
    addresses = {} if config.role == NodeRole.WORKER else {"api": config.api_addr}
    if clustering is not None:
        addresses["grpc"] = clustering.advertised_grpc
    node = Node(
        name=config.name,
        node_id=identity.node_id,
        addresses=addresses,
        role=config.role,
        labels=config.labels,
        capacity=capacity,
        allocatable=capacity,
        runtime="none" if config.role == NodeRole.SERVER else runtime.name,
    )
    cluster: ClusterManager
    store: StateStore
    if clustering is None:
        cluster = StaticCluster(config.name, tags=node_tags(node))
        store = _store(config, data_dir, clock)
    else:
        cluster = clustering.serf(node, node_tags(node))
        if config.role == NodeRole.WORKER:
            store = clustering.remote_store()
        else:
            store = _store(config, data_dir, clock)
    return ShoalNode(
        config, store, runtime, cluster, clock, node, images=images, clustering=clustering
    )


def check_config(config: NodeConfig) -> None:
    """Refuse a configuration whose parts do not fit together, saying what to change.

    Raises:
        InvalidInput: naming the options at fault.
    """
    secrets = (config.join_token_file, config.gossip_key_file)
    clustered = any(path is not None for path in secrets)
    if clustered and None in secrets:
        raise InvalidInput(
            "a clustered node needs both --join-token-file and --gossip-key-file "
            "(`shoal cluster init` writes them)"
        )
    if not clustered:
        given = [
            flag
            for flag, value in (
                ("--bind", config.bind),
                ("--grpc-addr", config.grpc_addr),
                ("--join", config.join),
            )
            if value
        ]
        if given:
            raise InvalidInput(
                f"{', '.join(given)} {'clusters' if len(given) == 1 else 'cluster'} the node, "
                "which needs the cluster's secrets: "
                "add --join-token-file and --gossip-key-file (`shoal cluster init` writes them)"
            )
        if config.role == NodeRole.WORKER:
            raise InvalidInput(
                "a worker runs the instances of a cluster's servers: give it --join-token-file, "
                "--gossip-key-file and --join SERVER:7946 (see docs/cluster.md)"
            )
    if config.state == "etcd" and not config.etcd:
        raise InvalidInput("--state etcd needs the etcd endpoints: --etcd HOST:PORT[,HOST:PORT]")
    if config.etcd and config.state != "etcd":
        raise InvalidInput(f"--etcd is only used with --state etcd (not {config.state})")


def _cluster_secrets(config: NodeConfig) -> tuple[str, str] | None:
    """Return the join token and the gossip key, checked; None for a node alone."""
    if config.join_token_file is None or config.gossip_key_file is None:
        return None
    token = read_secret(config.join_token_file, "join token")
    key = check_gossip_key(read_secret(config.gossip_key_file, "gossip key"), field="gossip key")
    return token, key


def _clustering(
    config: NodeConfig, data_dir: Path, identity: NodeIdentity, token: str, gossip_key: str
) -> Clustering:
    return Clustering(
        identity,
        token,
        gossip_key,
        data_dir,
        bind=config.bind or "127.0.0.1",
        grpc_addr=config.grpc_addr,
        join=config.join,
        profile=config.gossip_profile,
    )


def _store(config: NodeConfig, data_dir: Path, clock: Clock) -> StateStore:
    if config.state == "etcd":
        return EtcdStore(config.etcd, prefix=config.etcd_prefix)
    if config.state == "memory":
        return MemoryStore(clock=clock)
    return SqliteStore(data_dir / "state.db", clock=clock)


def _runtime(
    config: NodeConfig, data_dir: Path, clock: Clock
) -> tuple[ContainerRuntime, ImageManager | None]:
    """Build the configured runtime; an OCI one needs root and its binary, said plainly."""
    if config.runtime == "mock":
        return MockRuntime(clock, allow_host_paths=config.allow_host_paths), None
    if os.geteuid() != 0:
        raise Unavailable(
            f"the {config.runtime} runtime needs root (it creates cgroups, mounts and network "
            "namespaces): run the agent as root, or start it with --runtime mock",
            runtime=config.runtime,
        )
    if shutil.which(config.runtime) is None:
        raise Unavailable(
            f"{config.runtime} is not installed: `apt-get install {config.runtime}` (or run "
            "`make run`, which installs it), or start the agent with --runtime mock",
            runtime=config.runtime,
        )
    images = ImageStore(data_dir / "images", default_registry=config.default_registry)
    network = pod_networking(
        config.network, data_dir, bridge=config.bridge, subnet=config.bridge_subnet
    )
    runtime = OciCliRuntime(
        images,
        data_dir / "runtime",
        binary=config.runtime,
        clock=clock,
        network=network,
        allow_host_paths=config.allow_host_paths,
    )
    return runtime, images
