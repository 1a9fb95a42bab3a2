"""A harness for clusters of real `shoal agent` processes on one machine.

Each node is its own process with its own data dir, on its own loopback
address (127.0.N.x, a block per cluster), running its own `serf agent`
(tied to the node's life: SIGKILL the node and its serf dies too). The
cluster's secrets are made as `shoal cluster init` makes them, and the
operator's key pair lives in a home of the cluster's own. Tests look at the
cluster through a server's signed REST API from this process (a `shoal` CLI
call costs a fresh Python process) and use the CLI for what they check.

Every process a cluster starts is killed by :meth:`LocalCluster.close`, which
the :func:`local_cluster` fixture calls even when the test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from shoal.client import ShoalClient, init_keypair, load_keypair
from shoal.cluster import new_gossip_key, new_join_token
from tests.shoal_cli import run_shoal

T = TypeVar("T")

POLL = 0.1
"""Seconds between two looks while waiting; every wait has its own deadline."""
_BLOCKS = (20 + (os.getpid() + n) % 200 for n in itertools.count())
"""Loopback blocks (127.N.0.0/16) handed to clusters, one each, so no two share an address
(offset by the pid, so test runs side by side on one machine do not collide either)."""


@dataclass
class NodeProcess:
    """One `shoal agent` process of a cluster."""

    name: str
    role: str
    ip: str
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    wrap: list[str] = field(default_factory=list)
    """A command the agent runs under, e.g. ``["ip", "netns", "exec", NAME]``."""

    @property
    def api(self) -> str:
        """The REST API URL (servers only)."""
        return f"http://{self.ip}:7070"

    @property
    def gossip(self) -> str:
        """The Serf address others join."""
        return f"{self.ip}:7946"

    def start(self) -> None:
        """Start the agent (returns at once; see :meth:`wait_ready`)."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "shoal.cli", "agent", *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()

    def log(self) -> str:
        """Everything the agent wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exited(self) -> int | None:
        """The exit code once the process ended, else None."""
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the process to end; return its exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


@dataclass
class LocalCluster:
    """Nodes of one cluster on this machine, and the operator's view of them."""

    root: Path
    block: int = field(default_factory=lambda: next(_BLOCKS))
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secrets = self.root / "secrets"
        self.secrets.mkdir(parents=True)
        (self.secrets / "join-token").write_text(new_join_token() + "\n")
        (self.secrets / "gossip-key").write_text(new_gossip_key() + "\n")
        self.home = self.root / "home"
        init_keypair(self.home, "tester@multinode")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        self.env.update(SHOAL_HOME=str(self.home), SHOAL_LOG_LEVEL="INFO")
        self._next_host = itertools.count(2)

    def secret_args(self, token: Path | None = None, gossip_key: Path | None = None) -> list[str]:
        """Return the flags that hand a node the cluster's secrets (or the given ones)."""
        return [
            "--join-token-file",
            str(token or self.secrets / "join-token"),
            "--gossip-key-file",
            str(gossip_key or self.secrets / "gossip-key"),
        ]

    def add(
        self,
        name: str,
        role: str,
        *,
        join: Sequence[NodeProcess] = (),
        extra: Sequence[str] = (),
        secrets: Sequence[str] | None = None,
        ip: str | None = None,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> NodeProcess:
        """Describe a node (not started): its own address, data dir and log.

        ``wrap`` is a command the agent runs under (``ip netns exec NAME``).
        """
        ip = ip or f"127.{self.block}.0.{next(self._next_host)}"
        data_dir = self.root / name
        args = [
            "--name",
            name,
            "--role",
            role,
            "--runtime",
            "mock",
            "--bind",
            ip,
            *([] if role == "worker" else ["--api-addr", f"{ip}:7070"]),
            "--data-dir",
            str(data_dir),
            *(self.secret_args() if secrets is None else secrets),
            *[arg for peer in join for arg in ("--join", peer.gossip)],
            *extra,
        ]
        node = NodeProcess(
            name,
            role,
            ip,
            data_dir,
            args,
            {**self.env, **(env or {})},
            self.root / f"{name}.log",
            wrap=list(wrap),
        )
        self.nodes[name] = node
        return node

    def start(self, *nodes: NodeProcess, timeout: float = 60.0) -> None:
        """Start ``nodes`` and wait until each says it is ready (or fail with its log)."""
        marks = {node.name: node.log().count(_ready_marker(node)) for node in nodes}
        for node in nodes:
            node.start()

        def all_ready() -> bool:
            for node in nodes:
                code = node.exited()
                if code is not None:
                    raise AssertionError(f"{node.name} exited with {code}:\n{node.log()}")
            return all(node.log().count(_ready_marker(node)) > marks[node.name] for node in nodes)

        wait_until("nodes ready", all_ready, timeout, lambda: self.logs(*nodes))

    def logs(self, *nodes: NodeProcess) -> str:
        """The logs of ``nodes`` (all by default), for failure messages."""
        chosen = nodes or tuple(self.nodes.values())
        return "\n".join(f"--- {node.name} ---\n{node.log()[-4000:]}" for node in chosen)

    def client(self, server: NodeProcess) -> ShoalClient:
        """A signed REST client of ``server`` for the cluster's operator."""
        return ShoalClient(server.api, load_keypair(self.home))

    def query(self, server: NodeProcess, call: Callable[[ShoalClient], Awaitable[T]]) -> T:
        """Run one client call against ``server``."""

        async def run() -> T:
            async with self.client(server) as client:
                return await call(client)

        return anyio.run(run)

    def listing(self, server: NodeProcess, kind: str) -> list[dict[str, Any]]:
        """What `shoal get KIND -o json` prints: nodes, instances, workloads or events."""

        async def fetch(client: ShoalClient) -> list[Any]:
            if kind == "workloads":
                return list(await client.list_workloads())
            if kind == "nodes":
                return list(await client.list_nodes())
            if kind == "instances":
                return list(await client.list_instances())
            if kind == "events":
                return list(await client.list_events(limit=500))
            raise ValueError(kind)

        return [item.model_dump(mode="json") for item in self.query(server, fetch)]

    def cli(
        self, server: NodeProcess, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `shoal` CLI against ``server``."""
        return run_shoal({**self.env, "SHOAL_SERVER": server.api}, *args, check=check, stdin=stdin)

    def close(self) -> None:
        """Kill every node (their serf agents die with them)."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=60)


def _ready_marker(node: NodeProcess) -> str:
    return f"shoal {'worker' if node.role == 'worker' else 'agent'} {node.name} ready"


def wait_until(
    what: str,
    check: Callable[[], T | bool | None],
    timeout: float = 60.0,
    context: Callable[[], str] = lambda: "",
) -> T:
    """Return ``check()`` once truthy, looking every :data:`POLL` s for ``timeout`` s at most."""

    async def looking() -> Any:
        with anyio.move_on_after(timeout):
            while True:
                value = await anyio.to_thread.run_sync(check)
                if value:
                    return value
                await anyio.sleep(POLL)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{context()}")

    result: T = anyio.run(looking)
    return result


def node_states(cluster: LocalCluster, via: NodeProcess) -> dict[str, str]:
    """Each node record's gossip state, by name, as ``via`` reports it."""
    return {n["name"]: n["state"] for n in cluster.listing(via, "nodes")}


def running_by_node(instances: list[dict[str, Any]], workload: str) -> dict[str, int]:
    """Count the running instances of ``workload`` per node."""
    counts: dict[str, int] = {}
    for inst in instances:
        if inst["workload"] == workload and inst["state"] == "running" and not inst["deleting"]:
            counts[inst["node"]] = counts.get(inst["node"], 0) + 1
    return counts


def workload_yaml(name: str, replicas: int, *, spread: bool = True) -> str:
    """A mock-runtime workload document of ``replicas`` busybox replicas."""
    doc: dict[str, Any] = {
        "kind": "Workload",
        "name": name,
        "replicas": replicas,
        "template": {
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]
        },
    }
    if spread:
        doc["placement"] = {"strategy": "spread"}
    return json.dumps(doc)


@contextmanager
def local_cluster(root: Path) -> Iterator[LocalCluster]:
    """A :class:`LocalCluster` under ``root`` whose processes die with the block."""
    cluster = LocalCluster(root)
    try:
        yield cluster
    finally:
        cluster.close()
