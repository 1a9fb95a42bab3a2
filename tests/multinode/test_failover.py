"""Three real nodes form a cluster; a killed worker's replicas come back elsewhere."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.multinode.support import LocalCluster, running_by_node, wait_until, workload_yaml

pytestmark = pytest.mark.slow


def test_three_nodes_spread_and_survive_a_killed_worker(cluster: LocalCluster) -> None:
    server = cluster.add("srv", "server")
    cluster.start(server)
    w1 = cluster.add("w1", "worker", join=[server])
    w2 = cluster.add("w2", "worker", join=[server])
    cluster.start(w1, w2)

    def three_alive() -> list[dict[str, Any]] | None:
        nodes = cluster.listing(server, "nodes")
        alive = [n for n in nodes if n["state"] == "alive"]
        return nodes if len(alive) == 3 else None

    nodes = wait_until("three alive nodes", three_alive, 60, cluster.logs)
    roles = {n["name"]: n["role"] for n in nodes}
    assert roles == {"srv": "server", "w1": "worker", "w2": "worker"}
    assert all("grpc" in n["addresses"] for n in nodes), nodes
    listed = cluster.cli(server, "get", "nodes").stdout
    assert all(name in listed for name in ("srv", "w1", "w2")), listed
    ids = {n["name"]: n["node_id"] for n in nodes}

    cluster.cli(server, "apply", "-f", "-", stdin=workload_yaml("web", 6))
    spread = wait_until(
        "6 replicas over both workers",
        lambda: (
            (c := running_by_node(cluster.listing(server, "instances"), "web"))
            == {"w1": 3, "w2": 3}
            and c
        ),
        60,
        cluster.logs,
    )
    assert spread == {"w1": 3, "w2": 3}

    w1.signal(signal.SIGKILL)
    wait_until(
        "all 6 replicas on w2",
        lambda: running_by_node(cluster.listing(server, "instances"), "web") == {"w2": 6},
        60,
        cluster.logs,
    )
    failed = {n["name"]: n["state"] for n in cluster.listing(server, "nodes")}
    assert failed["w1"] == "failed", failed
    reasons = {e["reason"] for e in cluster.listing(server, "events")}
    assert {"NodeFailed", "NodeLost"} <= reasons, reasons

    # The killed worker comes back with its identity; its stale copies are
    # removed, so no replica runs twice.
    cluster.start(w1)
    wait_until(
        "w1 alive again, with no lost instances left",
        lambda: (
            {n["name"]: n["state"] for n in cluster.listing(server, "nodes")}["w1"] == "alive"
            and all(i["state"] != "lost" for i in cluster.listing(server, "instances"))
        ),
        60,
        cluster.logs,
    )
    nodes = cluster.listing(server, "nodes")
    assert len(nodes) == 3
    assert {n["name"]: n["node_id"] for n in nodes} == ids
    instances = cluster.listing(server, "instances")
    assert running_by_node(instances, "web") == {"w2": 6}
    assert len(instances) == 6, instances
