"""A worker cut off by a network partition, then healed: no replica runs twice.

The partitioned worker runs in a network namespace of this test's own, tied
to the host by a veth pair; the server and the other worker bind addresses
on the host end. The partition sets the namespace's end of the link down:
the worker's agent (and its mock containers) keep running, but it reaches
nobody, and nobody reaches it. Every address is in 198.19.N.0/24 (a free
/24 of 198.18.0.0/15 picked per test); nothing leaves the veth pair, since
the host end stays up and keeps its routes.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.multinode.support import (
    LocalCluster,
    NodeProcess,
    node_states,
    running_by_node,
    wait_until,
    workload_yaml,
)

# More than the default per-test timeout: on a loaded machine, starting three
# agents, a failure, and Serf's reconnect after the heal add up.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LOCAL = ["--gossip-profile", "local"]
"""Serf's fast failure detection (a non-loopback bind gets the slower ``lan`` by default)."""
SERF_REJOIN = 90.0
"""Seconds for a healed node to be alive again: gossip finds it by its own probes, a
push/pull sync (15 s apart in the local profile) or Serf's reconnect of failed members (30 s)."""
SILENT = 90.0
"""Seconds for a silent worker to be suspect: 40 s without a heartbeat, then the leader's
next pass, with room for a loaded machine."""
WATCH_FAILED = re.compile(r"the watch on \S+ failed|cache of \S+ lost its store")
"""A loop's watch broke: the control loop's (_wake) or the node loop's cache (_informer)."""
"""What a node loop logs when its watch of the state breaks (keepalive or a dropped server)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _free_prefix() -> str:
    """Return a ``198.19.N`` whose /24 no address or route of this host uses."""
    for n in random.sample(range(250), 250):  # 198.19.250+ is used by other tests
        prefix = f"198.19.{n}"
        if not _ip("-4", "-o", "addr", "show", "to", f"{prefix}.0/24").stdout.strip() and not (
            _ip("-4", "route", "show", "root", f"{prefix}.0/24").stdout.strip()
        ):
            return prefix
    raise AssertionError("no free /24 in 198.19.0.0/16")


@dataclass(frozen=True)
class SplitNetwork:
    """A namespace joined to the host by a veth pair whose namespace end can be cut."""

    netns: str
    host_end: str
    netns_end: str
    prefix: str

    def address(self, host: int) -> str:
        """``prefix.host``: 1 and 3 are on the host end, 2 in the namespace."""
        return f"{self.prefix}.{host}"

    @property
    def inside(self) -> list[str]:
        """The command that runs a process in the namespace."""
        return ["ip", "netns", "exec", self.netns]

    def block_tcp(self, address: str, *, on: bool = True) -> None:
        """Drop (or, ``on=False``, stop dropping) TCP from the namespace to ``address``.

        The rule lives in the namespace's own netfilter table and goes with it.
        """
        host, _, port = address.rpartition(":")
        rule = ["OUTPUT", "-p", "tcp", "-d", host, "--dport", port, "-j", "DROP"]
        subprocess.run(
            [*self.inside, "iptables", "-A" if on else "-D", *rule],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def cut(self) -> None:
        """Partition the namespace: its end of the link goes down."""
        _ip("-n", self.netns, "link", "set", self.netns_end, "down")

    def heal(self) -> None:
        """End the partition (the namespace's routes come back with its link)."""
        _ip("-n", self.netns, "link", "set", self.netns_end, "up")

    def create(self) -> None:
        """Create the namespace, the veth pair and the addresses."""
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.netns_end)
        _ip("link", "set", self.netns_end, "netns", self.netns)
        # No IPv6 link-local addresses: the only addresses are the ones below.
        _ip("link", "set", self.host_end, "addrgenmode", "none")
        _ip("-n", self.netns, "link", "set", self.netns_end, "addrgenmode", "none")
        # Routes through a link whose peer is down stay in use (the kernel
        # default, made sure of here): traffic for the namespace is dropped on
        # the veth, never sent along another route.
        Path(f"/proc/sys/net/ipv4/conf/{self.host_end}/ignore_routes_with_linkdown").write_text(
            "0\n"
        )
        for host in (1, 3):
            _ip("addr", "add", f"{self.address(host)}/24", "dev", self.host_end)
        _ip("link", "set", self.host_end, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")  # the agent talks to its serf on it
        _ip("-n", self.netns, "addr", "add", f"{self.address(2)}/24", "dev", self.netns_end)
        _ip("-n", self.netns, "link", "set", self.netns_end, "up")

    def remove(self) -> list[str]:
        """Delete the veth pair and the namespace; return what could not be removed."""
        left = []
        if _ip("link", "show", self.host_end, check=False).returncode == 0:
            result = _ip("link", "del", self.host_end, check=False)
            if result.returncode != 0:
                left.append(f"link {self.host_end}: {result.stderr.strip()}")
        result = _ip("netns", "del", self.netns, check=False)
        if result.returncode != 0 and self.netns in _ip("netns", "list").stdout.split():
            left.append(f"netns {self.netns}: {result.stderr.strip()}")
        return left


@pytest.fixture
def split(cluster: LocalCluster) -> Iterator[SplitNetwork]:
    """A :class:`SplitNetwork` that outlives ``cluster``'s processes, then is removed."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and veth links need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    tag = secrets.token_hex(3)
    network = SplitNetwork(f"shp-{tag}", f"shp{tag}h", f"shp{tag}n", _free_prefix())
    try:
        network.create()
    except subprocess.CalledProcessError as exc:
        network.remove()
        pytest.skip(f"cannot build a network namespace here: {' '.join(exc.cmd)}: {exc.stderr}")
    try:
        yield network
    finally:
        cluster.close()  # the agents first: the namespace goes with its last process
        left = network.remove()
        assert not left, f"left behind: {left}"


def three_nodes(
    split: SplitNetwork, cluster: LocalCluster
) -> tuple[NodeProcess, NodeProcess, NodeProcess]:
    """Start srv and w1 on the host end and w2 in the namespace; wait until all are alive."""
    server = cluster.add("srv", "server", ip=split.address(1), extra=LOCAL)
    cluster.start(server)
    w1 = cluster.add("w1", "worker", join=[server], ip=split.address(3), extra=LOCAL)
    w2 = cluster.add(
        "w2", "worker", join=[server], ip=split.address(2), extra=LOCAL, wrap=split.inside
    )
    cluster.start(w1, w2)
    wait_until(
        "three alive nodes",
        lambda: node_states(cluster, server) == {"srv": "alive", "w1": "alive", "w2": "alive"},
        60,
        cluster.logs,
    )
    return server, w1, w2


def run_web(
    cluster: LocalCluster, server: NodeProcess, replicas: int, want: dict[str, int]
) -> None:
    """Apply or scale workload ``web`` to ``replicas``; wait until it runs as ``want``."""
    cluster.cli(server, "apply", "-f", "-", stdin=workload_yaml("web", replicas))
    wait_until(
        f"web running as {want}",
        lambda: running_by_node(cluster.listing(server, "instances"), "web") == want,
        60,
        cluster.logs,
    )


def test_partitioned_worker_heals_without_duplicate_replicas(
    split: SplitNetwork, cluster: LocalCluster
) -> None:
    server, w1, w2 = three_nodes(split, cluster)

    def states() -> dict[str, str]:
        return node_states(cluster, server)

    run_web(cluster, server, 4, {"w1": 2, "w2": 2})
    stale = {i["name"] for i in cluster.listing(server, "instances") if i["node"] == "w2"}
    assert len(stale) == 2, stale
    watch_failures = len(WATCH_FAILED.findall(w2.log()))

    split.cut()

    def replaced() -> bool:
        instances = {i["name"]: i for i in cluster.listing(server, "instances")}
        return (
            states()["w2"] == "failed"
            and running_by_node(list(instances.values()), "web") == {"w1": 4}
            # w2 cannot delete its instances' records: they stay lost meanwhile.
            and all(instances[name]["state"] == "lost" for name in stale if name in instances)
            and stale <= instances.keys()
        )

    wait_until("w2 failed and its replicas replaced on w1", replaced, 60, cluster.logs)
    # Keep the partition until w2 noticed it too: its watch of the state broke
    # (gRPC keepalive) instead of hanging on a dead connection.
    wait_until(
        "w2's watch to fail",
        lambda: len(WATCH_FAILED.findall(w2.log())) > watch_failures,
        60,
        lambda: cluster.logs(w2),
    )
    reasons = {(e["reason"], e["object"]["name"]) for e in cluster.listing(server, "events")}
    assert ("NodeFailed", "w2") in reasons, reasons
    assert {("NodeLost", name) for name in stale} <= reasons, reasons
    assert w2.exited() is None, cluster.logs(w2)  # its agent, and so its containers, kept running

    split.heal()

    def healed() -> bool:
        instances = cluster.listing(server, "instances")
        return (
            states() == {"srv": "alive", "w1": "alive", "w2": "alive"}
            and not stale & {i["name"] for i in instances}
            and running_by_node(instances, "web") == {"w1": 4}
        )

    wait_until("w2 back, its stale copies removed", healed, SERF_REJOIN, cluster.logs)
    events = cluster.listing(server, "events")
    removed_by_w2 = {
        e["object"]["name"] for e in events if e["reason"] == "Removed" and e["actor"]["id"] == "w2"
    }
    assert removed_by_w2 == stale, events
    instances = cluster.listing(server, "instances")
    assert len(instances) == 4, instances
    assert len({i["uid"] for i in instances}) == 4, instances

    # w2 takes work again: its state watch and its calls reach the server anew.
    cluster.cli(server, "scale", "web", "6")
    wait_until(
        "the 2 new replicas on w2",
        lambda: running_by_node(cluster.listing(server, "instances"), "web") == {"w1": 4, "w2": 2},
        60,
        cluster.logs,
    )
    instances = cluster.listing(server, "instances")
    assert len(instances) == 6, instances
    assert not stale & {i["name"] for i in instances}, instances
    assert all(i["state"] == "running" and not i["deleting"] for i in instances), instances
    assert states() == {"srv": "alive", "w1": "alive", "w2": "alive"}
    assert all(node.exited() is None for node in (server, w1, w2)), cluster.logs()


def test_a_worker_whose_grpc_is_blocked_is_suspect_and_gets_no_new_work(
    split: SplitNetwork, cluster: LocalCluster
) -> None:
    """Gossip still reaches w2, its calls to the server do not: it falls silent."""
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (scripts/system-deps.sh installs it)")
    server, w1, w2 = three_nodes(split, cluster)

    def states() -> dict[str, str]:
        return node_states(cluster, server)

    run_web(cluster, server, 2, {"w1": 1, "w2": 1})

    grpc = f"{split.address(1)}:7947"
    split.block_tcp(grpc)
    # 40 s of silence, then the leader's next pass (5 s apart).
    wait_until("w2 suspect", lambda: states()["w2"] == "suspect", SILENT, cluster.logs)
    assert states()["w1"] == "alive"
    reasons = [
        e["message"]
        for e in cluster.listing(server, "events")
        if (e["reason"], e["object"]["name"]) == ("NodeSuspect", "w2")
    ]
    assert reasons and "alive in gossip but has not reported for" in reasons[-1], reasons

    # New work goes to w1 only; w2 keeps what it runs.
    run_web(cluster, server, 4, {"w1": 3, "w2": 1})

    split.block_tcp(grpc, on=False)
    wait_until("w2 alive again", lambda: states()["w2"] == "alive", 60, cluster.logs)
    run_web(cluster, server, 6, {"w1": 3, "w2": 3})  # w2 takes new work again
    assert all(node.exited() is None for node in (server, w1, w2)), cluster.logs()
