"""The composition root: the one place that picks concrete implementations.

``build_node(config)`` turns a :class:`NodeConfig` into a :class:`ShoalNode`
holding a store, a runtime, a cluster manager, a scheduler and a clock, and
the service layer over them. ``ShoalNode.run`` starts what the node's role
needs: the control loop (on servers, while this node holds the leader lease)
and the node loop (on workers). No other module of ``shoal.core`` imports an
implementation package.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskStatus
from pydantic import BaseModel, Field

from shoal.cluster import StaticCluster
from shoal.interfaces import (
    Capacity,
    Clock,
    ClusterManager,
    ContainerRuntime,
    ImageManager,
    InvalidInput,
    Node,
    NodeRole,
    NotFound,
    ShoalError,
    StateStore,
    Unavailable,
)
from shoal.runtime import ImageStore, MockRuntime, OciCliRuntime, pod_networking
from shoal.state import MemoryStore, SqliteStore

from ._clock import SystemClock
from ._control import ControlLoop
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
    state: Literal["sqlite", "memory"] = "sqlite"
    """State store: durable SQLite in the data dir, or memory (lost on exit)."""
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


def node_id(data_dir: Path) -> str:
    """Return this node's stable id: the fingerprint of its ed25519 key, made on first use."""
    from nacl.signing import SigningKey  # local: only the composition root needs it

    key_file = data_dir / "node.key"
    if key_file.exists():
        seed = key_file.read_bytes()
        if len(seed) != 32:
            raise InvalidInput(f"{key_file} is corrupt (expected a 32-byte seed): remove it")
        key = SigningKey(seed)
    else:
        key = SigningKey.generate()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(key))
    return hashlib.sha256(bytes(key.verify_key)).hexdigest()[:16]


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
    ) -> None:
        self.config = config
        self.images = images
        self.store = store
        self.runtime = runtime
        self.cluster = cluster
        self.clock = clock
        self.node = node
        self.scheduler = DefaultScheduler()
        self.service = ShoalService(store, clock, local=LocalNode(node.name, runtime, images))
        self.control = ControlLoop(store, self.scheduler, clock, resync=config.control_resync)
        self.node_loop = NodeLoop(node, store, runtime, clock, resync=config.node_resync)
        self.ready = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the node's loops until cancelled; closes its parts on the way out."""
        # Nested `async with`, not an AsyncExitStack: the stack rewrites the
        # __context__ of the CancelledError it passes along, which can make a
        # cycle that anyio's task group then walks forever.
        async with _opened(self.store), _opened(self.runtime), _opened(self.cluster):
            async with anyio.create_task_group() as tg:
                if self.config.role in (NodeRole.WORKER, NodeRole.BOTH):
                    await tg.start(self.node_loop.run)
                if self.config.role in (NodeRole.SERVER, NodeRole.BOTH):
                    await tg.start(self._lead)
                self.ready.set()
                task_status.started()

    async def _lead(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Campaign for the leader lease, run the control loop while holding it, and repeat.

        The lease is kept alive from the moment it is granted — also while the
        campaign waits for a previous leader's lease to run out. If it is lost
        (the store was unreachable for longer than its ttl), the control loop
        stops and the node campaigns again with a new lease.
        """
        task_status.started()
        ttl = self.config.leader_ttl
        while True:
            lease = await self.store.grant_lease(ttl)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._keep_lease, lease, ttl)
                    leadership = await self.store.campaign(LEADER_ELECTION, self.node.name, lease)
                    log.info("%s leads the control loop (lease %s)", self.node.name, lease)
                    try:
                        await self.control.run()
                    finally:
                        with anyio.CancelScope(shield=True), contextlib.suppress(ShoalError):
                            await self.store.resign(leadership)
            except* NotFound:
                log.warning("%s lost its leader lease; campaigning again", self.node.name)

    async def _keep_lease(self, lease: int, ttl: float) -> None:
        while True:
            await self.clock.sleep(ttl / 3)
            await self.store.keepalive(lease)


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
    """
    data_dir = prepare_data_dir(config.data_dir)
    clock = clock or SystemClock()
    store: StateStore
    if config.state == "sqlite":
        store = SqliteStore(data_dir / "state.db", clock=clock)
    else:
        store = MemoryStore(clock=clock)
    runtime, images = _runtime(config, data_dir, clock)
    capacity = config.capacity or host_capacity()
    ident = node_id(data_dir)
    node = Node(
        name=config.name,
        node_id=ident,
        addresses={"api": config.api_addr},
        role=config.role,
        labels=config.labels,
        capacity=capacity,
        allocatable=capacity,
        runtime=runtime.name,
    )
    cluster = StaticCluster(
        config.name, tags={"id": ident, "role": config.role.value, "api": config.api_addr}
    )
    return ShoalNode(config, store, runtime, cluster, clock, node, images=images)


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
