"""The composition root: the one place that picks concrete implementations.

``build_node(config)`` turns a :class:`NodeConfig` into a :class:`ShoalNode`
holding a store, a runtime, a cluster manager, a scheduler and a clock, and
the service layer over them. ``ShoalNode.run`` starts what the node's role
needs: the leader campaign with the control loop and the membership sync (on
servers, see :mod:`shoal.core._leader`) and the node loop (on workers). Only
the composition root — this module, with :mod:`~shoal.agent._clustering` and
:mod:`~shoal.agent._admission` — imports implementation packages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from shoal.cluster import (
    NodeIdentity,
    StaticCluster,
    check_gossip_key,
    check_listenable,
    node_tags,
    serve_grpc,
)
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    Leader,
    LocalNode,
    LocalNodeState,
    MeteredStore,
    NodeLoop,
    Repository,
    ShoalService,
    SystemClock,
    UsageSampler,
    finish_deletions,
    report_survivors,
)
from shoal.interfaces import (
    NODE_KEY_FILE,
    Actor,
    Clock,
    ClusterManager,
    ContainerRuntime,
    DataDirLock,
    ImageManager,
    ImagePeers,
    InternalError,
    Metrics,
    Node,
    NodeRole,
    NodeState,
    NullMetrics,
    ShoalError,
    StateStore,
    Tag,
    TraceSource,
    Unavailable,
    UsageHistory,
    Via,
    agent_pid,
)
from shoal.kube import ManifestWatcher
from shoal.runtime import (
    LOOPBACK_REGISTRIES,
    CriRuntime,
    ImageStore,
    MockRuntime,
    OciCliRuntime,
    pod_networking,
)
from shoal.state import (
    KEYRING_FILE,
    USAGE_FILE,
    EtcdStore,
    Keyring,
    MemoryStore,
    SealedStore,
    SqliteStore,
    SqliteUsageHistory,
)

from ._admission import admit_server
from ._clustering import Clustering, NoStore, advertised_host, read_secret
from ._config import NodeConfig, check_config, host_capacity, prepare_data_dir
from ._metrics import PrometheusMetrics
from ._reset import ResetReport, reset_data_dir
from ._tracing import install_tracing

__all__ = [
    "NodeConfig",
    "ResetReport",
    "ShoalNode",
    "build_node",
    "host_capacity",
    "prepare_data_dir",
    "reset_data_dir",
]

log = logging.getLogger(__name__)


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
        images: ImageStore | None = None,
        clustering: Clustering | None = None,
        image_manager: ImageManager | None = None,
        metrics: Metrics | None = None,
        node_state: NodeState | None = None,
        usage: UsageHistory | None = None,
        traces: TraceSource | None = None,
    ) -> None:
        self.config = config
        runs = config.role in (NodeRole.WORKER, NodeRole.BOTH)
        self.usage: UsageHistory | None = (
            usage if usage is not None or not runs else SqliteUsageHistory()
        )
        """The usage history of this node's instances (None on a server-only node, which
        runs none); in memory unless given (:func:`build_node` keeps it in DATA_DIR/usage.db)."""
        self.metrics: Metrics = metrics if metrics is not None else PrometheusMetrics()
        """The node's metrics, served at the API's ``GET /metrics``."""
        self.measured: StateStore = (
            store if isinstance(self.metrics, NullMetrics) else MeteredStore(store, self.metrics)
        )
        """The store as the node's parts use it: each call timed (``store`` is the raw one)."""
        self.clustering = clustering
        self.images = images
        self.store = store
        self.runtime = runtime
        self.cluster = cluster
        self.clock = clock
        self.node = node
        self.scheduler = DefaultScheduler()
        self.service = ShoalService(
            self.measured,
            clock,
            # A CRI runtime's images are in its own store (image_manager), not an ImageStore.
            local=LocalNode(node.name, runtime, image_manager or images, self.usage),
            remote=None if clustering is None else clustering.pods_of,
            members=cluster.members,
            remote_images=None if clustering is None else clustering.images_of,
            remote_usage=None if clustering is None else clustering.usage_of,
            traces=traces,
            remote_traces=None if clustering is None else clustering.traces_of,
        )
        if isinstance(store, SealedStore):  # the roll-on-change hash, keyed by a server secret
            self.service.config_hash_key = store.keyring.derive("config-hash")
        self.manifests: ManifestWatcher | None = None
        """The watched manifests directories (--manifests); None when there are none."""
        if config.manifests:
            actor = Actor(id=f"manifests@{node.name}", via=Via.SYSTEM)
            self.manifests = ManifestWatcher(
                self.service.with_actor(actor), config.manifests, node.name, clock=clock
            )
            self.service.manifests = self.manifests.statuses
        self.leader = Leader(
            node.name,
            self.measured,
            cluster,
            self.scheduler,
            clock,
            ttl=config.leader_ttl,
            resync=config.control_resync,
            metrics=self.metrics,
        )
        self.node_state: NodeState = node_state or LocalNodeState(self.measured, node.name)
        """What the node loop reads and writes of the cluster state (a worker's is remote)."""
        self.node_loop = NodeLoop(
            node, self.node_state, runtime, clock, resync=config.node_resync, metrics=self.metrics
        )
        self.sampler: UsageSampler | None = None
        """Samples this node's instances into :attr:`usage` every 10 s (None: no history)."""
        if self.usage is not None:
            loop = self.node_loop
            self.sampler = UsageSampler(
                node.name,
                runtime,
                self.usage,
                clock,
                lambda: [s.value for s in loop.instances.by_index("node", loop.name)],
            )
        self.ready = anyio.Event()
        self._left = False
        self._loops: list[anyio.CancelScope] = []
        """The scopes of the node loop and the campaign, cancelled when the node leaves."""

    @property
    def control(self) -> ControlLoop | None:
        """The control loop of this node's current term as leader; None when not leading."""
        return self.leader.control

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the node's loops until cancelled; closes its parts on the way out.

        A clustered node also serves node-to-node gRPC. To stop it gracefully,
        call :meth:`leave` first, then cancel: the others see it left (its
        instances move elsewhere, without a failure). A node that is killed, or
        cancelled without leaving, is seen failed instead.
        """
        serves = self.config.role in (NodeRole.SERVER, NodeRole.BOTH)
        runs = self.config.role in (NodeRole.WORKER, NodeRole.BOTH)
        if self.clustering is not None:
            check_listenable(self.clustering.grpc_addr)  # before gossip sees this node
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with DataDirLock(self.config.data_dir):
            await self._run(serves, runs, task_status)

    async def _run(self, serves: bool, runs: bool, task_status: TaskStatus[None]) -> None:
        # Nested `async with`, not an AsyncExitStack: the stack rewrites the
        # __context__ of the CancelledError it passes along, which can make a
        # cycle that anyio's task group then walks forever.
        async with _opened(self.store), _opened(self.runtime), _opened(self.cluster):
            if self.config.rotate_secrets_key and isinstance(self.store, SealedStore):
                await _rotate_secrets_key(self.store)
            try:
                async with anyio.create_task_group() as tg:
                    if self.clustering is not None and serves:
                        await self._admit(self.clustering)
                    if self.clustering is not None:
                        handlers = self.clustering.handlers(
                            self.measured if serves else None,
                            self.runtime if runs else None,
                            self.images,
                            clock=self.clock,
                            usage=self.usage,
                            traces=self.service.traces,
                        )
                        if self.clustering.assignments is not None:
                            await tg.start(self.clustering.assignments.run)
                        await tg.start(serve_grpc, self.clustering.grpc_addr, handlers)
                    if runs:
                        await tg.start(self._forever, "node loop", self.node_loop.run)
                        if self.sampler is not None:
                            await tg.start(self._forever, "usage sampler", self.sampler.run)
                    elif self.clustering is not None:
                        # A server-only node runs no instances, but is listed with its role.
                        tg.start_soon(self.node_loop.register_when_reachable)
                    if serves:
                        await tg.start(self._forever, "leader campaign", self.leader.run)
                    if self.manifests is not None:
                        await tg.start(self._forever, "manifests watcher", self.manifests.run)
                    self.ready.set()
                    task_status.started()
            finally:
                if self.usage is not None:
                    with anyio.CancelScope(shield=True):
                        await self.usage.aclose()
                if self.clustering is not None:
                    with anyio.CancelScope(shield=True):
                        await self.clustering.aclose()

    async def _admit(self, clustering: Clustering) -> None:
        """Refuse to serve for a cluster this server is not of; it leaves gossip first.

        Raises:
            Conflict: other alive servers keep another cluster state.
            Unauthenticated: the cluster's servers refuse this node's join token.
            Unavailable: the store or the serf agent cannot be reached.
        """
        try:
            await admit_server(self.store, self.cluster, clustering.identity, clustering.token)
        except ShoalError:
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

    async def shutdown(self) -> None:
        """Stop gracefully, while the node still runs; then cancel :meth:`run`.

        A clustered node leaves the cluster (:meth:`leave`). A node alone
        finishes the deletions in flight first — its loops stop and remove the
        pods being deleted, bounded by the stop grace — and logs one line per
        workload whose pods keep running after it (see :mod:`._shutdown`).
        Never raises.
        """
        if self.clustering is not None:
            await self.leave()
            return
        if self.config.role == NodeRole.SERVER or not self.ready.is_set():
            await anyio.lowlevel.checkpoint()
            return
        repo = Repository(self.store, self.clock)
        with anyio.CancelScope(shield=True):
            await finish_deletions(
                repo, self.node.name, self.clock, within=self.node_loop.stop_grace + 5
            )
            await report_survivors(repo, self.runtime, self.node.name, self.config.data_dir)

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
            with contextlib.suppress(ShoalError):  # kept of pods gone before it left
                await self.runtime.prune_logs(())
            if pods:
                log.info("%s stopped its %d pod(s) on leaving", self.node.name, len(pods))


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


async def _rotate_secrets_key(store: SealedStore) -> None:
    """Seal every Secret with a new key (the old keys stay in the keyring to read old copies)."""
    new = store.keyring.rotate()
    resealed = await store.reseal()
    log.warning(
        "secrets keyring rotated: key %s now seals Secrets; %d Secret(s) resealed. Servers "
        "sharing this store need the new keyring (%s) before they can read them",
        new,
        resealed,
        store.keyring.path,
    )


def build_node(
    config: NodeConfig,
    *,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    tracing: bool = True,
) -> ShoalNode:
    """Assemble a node from ``config``.

    Its metrics are recorded in a Prometheus registry of its own unless
    ``metrics`` says otherwise (:data:`~shoal.interfaces.NO_METRICS` turns
    metrics off). With ``tracing`` the process's tracing is set up as the
    ``OTEL_*`` variables say (:func:`~shoal.agent.install_tracing`).

    Raises:
        Unavailable: the data dir cannot be written.
        InvalidInput: the configuration does not hold together (e.g. a worker
            without cluster secrets), or a secret file cannot be read.
    """
    check_config(config)
    traces = install_tracing(config.name) if tracing else None  # bad OTEL_* refused first
    secrets = _cluster_secrets(config)  # read before anything is written
    data_dir = prepare_data_dir(config.data_dir)
    pid = agent_pid(data_dir)
    if pid is not None:
        raise Unavailable(
            f"another shoal agent (pid {pid}) runs on data dir {data_dir}: stop it first, "
            "or give this one another --data-dir",
            data_dir=str(data_dir),
            pid=pid,
        )
    clock = clock or SystemClock()
    identity = NodeIdentity.load_or_create(config.name, data_dir / NODE_KEY_FILE)
    clustering = None if secrets is None else _clustering(config, data_dir, identity, *secrets)
    runtime: ContainerRuntime
    images: ImageStore | None
    image_manager: ImageManager | None = None
    peers = None if clustering is None else clustering.image_peers
    if config.role == NodeRole.SERVER:
        # A server-only node runs no instances: no node loop, no Pods service.
        # Its runtime is an inert stand-in, so a server needs neither root nor runc.
        # It keeps images (without unpacking them) to share with its workers.
        runtime = MockRuntime(clock)
        images = _images(config, data_dir, None, unpack=False) if clustering else None
    elif config.runtime == "cri":
        cri = _cri_runtime(config, data_dir)
        runtime, images, image_manager = cri, None, cri.images
    else:
        runtime, images = _runtime(config, data_dir, clock, peers)
    capacity = config.capacity or host_capacity()
    addresses = {} if config.role == NodeRole.WORKER else {Tag.API: config.api_addr}
    if clustering is not None:
        addresses[Tag.GRPC] = clustering.advertised_grpc
        if Tag.API in addresses:  # 0.0.0.0 is where it listens, not where others reach it
            api_host, _, api_port = config.api_addr.rpartition(":")
            addresses[Tag.API] = f"{advertised_host(api_host.strip('[]'))}:{api_port}"
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
    node_state: NodeState | None = None
    if clustering is None:
        cluster = StaticCluster(config.name, tags=node_tags(node))
        store = _store(config, data_dir, clock)
    else:
        cluster = clustering.serf(node, node_tags(node))
        if config.role == NodeRole.WORKER:
            store = NoStore(config.name)  # a worker keeps none: its node loop asks a server
            node_state = clustering.node_state()
        else:
            store = _store(config, data_dir, clock)
    return ShoalNode(
        config,
        store,
        runtime,
        cluster,
        clock,
        node,
        images=images,
        clustering=clustering,
        image_manager=image_manager,
        metrics=metrics,
        node_state=node_state,
        usage=None if config.role == NodeRole.SERVER else SqliteUsageHistory(data_dir / USAGE_FILE),
        traces=traces,
    )


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
    """The server's store, its Secrets sealed by the data dir's keyring (or --secrets-keyring)."""
    keyring = Keyring.load(config.secrets_keyring or data_dir / KEYRING_FILE)
    return SealedStore(_backend(config, data_dir, clock), keyring)


def _backend(config: NodeConfig, data_dir: Path, clock: Clock) -> StateStore:
    if config.state == "etcd":
        return EtcdStore(config.etcd, prefix=config.etcd_prefix)
    if config.state == "memory":
        return MemoryStore(clock=clock)
    return SqliteStore(data_dir / "state.db", clock=clock)


def _images(
    config: NodeConfig, data_dir: Path, peers: ImagePeers | None, *, unpack: bool = True
) -> ImageStore:
    """The node's image store, with the registries settings of ``config``.

    Raises:
        InvalidInput: the registry CA file cannot be read or parsed.
    """
    return ImageStore(
        data_dir / "images",
        default_registry=config.default_registry,
        insecure_registries=LOOPBACK_REGISTRIES | set(config.insecure_registries),
        registry_ca=config.registry_ca,
        peers=peers,
        unpack=unpack,
    )


def _cri_runtime(config: NodeConfig, data_dir: Path) -> CriRuntime:
    """Build the CRI runtime; whether its endpoint answers is checked when the node starts.

    Its pods carry the node's name as their owner label, so agents sharing one
    containerd each adopt their own.
    """
    if os.geteuid() != 0:
        raise Unavailable(
            "the cri runtime needs root (it talks to the runtime's root-owned socket and "
            "makes the pods' volume directories): run the agent as root, or with --runtime mock",
            runtime="cri",
        )
    return CriRuntime(
        data_dir / "cri",
        endpoint=config.cri_endpoint,
        owner=config.name,
        allow_host_paths=config.allow_host_paths,
        host_network=config.network == "host",
    )


def _runtime(
    config: NodeConfig, data_dir: Path, clock: Clock, peers: ImagePeers | None
) -> tuple[ContainerRuntime, ImageStore | None]:
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
    images = _images(config, data_dir, peers)
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
