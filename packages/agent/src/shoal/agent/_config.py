"""How a node is configured: :class:`NodeConfig`, and the checks before anything starts.

Part of the composition root (:mod:`shoal.agent._node` builds the node from it).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shoal.interfaces import Capacity, InvalidInput, NodeRole, Unavailable
from shoal.runtime import check_registry_host, registry_tls

__all__ = ["NodeConfig", "check_config", "host_capacity", "prepare_data_dir"]


class NodeConfig(BaseModel):
    """How to assemble a node. Every field has a default that runs one machine."""

    data_dir: Path
    """Where the node keeps its state, keys and authorized_keys."""
    name: str = Field(default_factory=socket.gethostname)
    """Node name; the host name by default."""
    role: NodeRole = NodeRole.BOTH
    """server (control loop), worker (runs instances) or both."""
    runtime: Literal["runc", "crun", "youki", "cri", "mock"] = "runc"
    """Container runtime: an OCI runtime CLI (runc, crun, youki), a CRI runtime such as
    containerd ('cri', at ``cri_endpoint``), or 'mock' (nothing runs)."""
    cri_endpoint: str = "unix:///run/containerd/containerd.sock"
    """The CRI v1 socket of ``runtime="cri"`` (containerd's by default)."""
    network: Literal["bridge", "host"] = "bridge"
    """Pod networking: a CNI bridge with ports published on 127.0.0.1, or host. With the
    CRI runtime the bridge is the runtime's CNI network (scripts/setup_containerd.py)."""
    bridge: str | None = None
    """Name of the CNI bridge; None: the data dir's own, or the first free ``shoalN``.
    Bridges are owned host-wide: another node's is refused, naming its owner."""
    bridge_subnet: str | None = None
    """Subnet of the CNI bridge; None: the data dir's own, or the first free
    ``198.18.N.0/24``. One that overlaps another node's is refused."""
    default_registry: str | None = None
    """Registry (host[:port]) for unqualified image names; None: they must be imported."""
    insecure_registries: list[str] = Field(default_factory=list)
    """Registries (HOST for any port, or HOST:PORT) spoken to over plain HTTP, besides
    loopback ones: only for a trusted network."""
    registry_ca: Path | None = None
    """PEM file of a private CA that registries' TLS certificates may chain to."""
    allow_host_paths: bool = False
    """Let workloads mount paths of this machine (host_path volumes); refused when False."""
    state: Literal["sqlite", "memory", "etcd"] = "sqlite"
    """State store of a server: SQLite in the data dir, memory (lost on exit), or etcd."""
    etcd: list[str] = Field(default_factory=list)
    """etcd endpoints (host:port) for ``state="etcd"``: servers sharing one cluster state."""
    etcd_prefix: str = "/shoal"
    """Key prefix in etcd; clusters sharing one etcd need different prefixes."""
    rotate_secrets_key: bool = False
    """At start, add a new key to the secrets keyring and reseal every Secret with it."""
    secrets_keyring: Path | None = None
    """Keyring that seals Secrets at rest; <data-dir>/secrets.keyring (made on first start) by
    default. Servers that share etcd must use the same keyring: copy the first one's."""
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
    metrics_addr: str | None = None
    """Also serve ``GET /metrics`` (and ``/healthz``) alone at this HOST:PORT: how a worker,
    which serves no API, is scraped. None: only the API serves them (not on workers)."""
    control_resync: float = 5.0
    """Seconds between timer-driven membership syncs on the leader (the control loop is
    woken by what changed, and requeues every workload every 5 minutes)."""
    node_resync: float = 2.0
    """Seconds between timer-driven node loop passes."""
    leader_ttl: float = 10.0
    """Seconds the leader lease lives without renewal."""
    manifests: list[Path] = Field(default_factory=list)
    """Directories whose manifests (Kubernetes' or Shoal's) the node applies and keeps
    applied: a changed file is applied, a removed object or file pruned (docs/kubernetes.md)."""


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


def check_config(config: NodeConfig) -> None:
    """Refuse a configuration whose parts do not fit together, saying what to change.

    Raises:
        InvalidInput: naming the options at fault (an --insecure-registry that is
            not HOST[:PORT], a --registry-ca that cannot be read or parsed, ...).
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
    if config.default_registry is not None:  # no credentials, no scheme: statusz shows it
        check_registry_host(config.default_registry, field="--registry")
    for registry in config.insecure_registries:
        check_registry_host(registry, field="--insecure-registry")
    if config.registry_ca is not None:
        registry_tls(config.registry_ca)  # unreadable or not a certificate: refused now
    if config.state == "etcd" and not config.etcd:
        raise InvalidInput("--state etcd needs the etcd endpoints: --etcd HOST:PORT[,HOST:PORT]")
    if config.etcd and config.state != "etcd":
        raise InvalidInput(f"--etcd is only used with --state etcd (not {config.state})")
    for directory in config.manifests:
        if not directory.is_dir():
            raise InvalidInput(
                f"--manifests {directory}: no such directory: create it (mkdir -p {directory}) "
                "or fix the path",
                field="manifests",
            )
