"""Highly available servers on a real etcd: one leads, another takes over, workers move.

Each test starts an etcd of its own (servers keep their keys under one fixed
prefix, so two clusters on one etcd would share their state) and kills it at
the end, after the cluster's agents (the ``etcd`` fixture is set up first).
Who leads is read where an operator reads it: the servers' logs ("leads the
control loop"); everything else through a server's API and the CLI.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shoal.client import ShoalClient
from shoal.interfaces import ShoalError, Unavailable
from tests.multinode.support import (
    LocalCluster,
    NodeProcess,
    node_states,
    running_by_node,
    wait_until,
    workload_yaml,
)
from tests.state.support import EtcdMember, running_etcd

pytestmark = pytest.mark.slow

LEADS = "leads the control loop"
"""What a server logs when it wins the election and starts scheduling."""
TAKEOVER = 60.0
"""Seconds for a failover: the dead leader's 10 s lease runs out, gossip declares it failed."""


@pytest.fixture
def etcd() -> Iterator[EtcdMember]:
    """A single-member etcd of this test's own, on a free loopback port."""
    with running_etcd("shoal-ha") as member:
        yield member


def on_etcd(etcd: EtcdMember) -> list[str]:
    """The agent flags of a server keeping its state in ``etcd``."""
    return ["--state", "etcd", "--etcd", etcd.endpoint]


def apply(cluster: LocalCluster, via: NodeProcess, name: str, replicas: int) -> None:
    """Apply a spread mock workload through ``via``'s API."""
    document = json.loads(workload_yaml(name, replicas))

    async def call(client: ShoalClient) -> None:
        await client.apply_documents([document])

    cluster.query(via, call)


def scale(cluster: LocalCluster, via: NodeProcess, name: str, replicas: int) -> None:
    """Scale a workload through ``via``'s API."""

    async def call(client: ShoalClient) -> None:
        await client.scale(name, replicas)

    cluster.query(via, call)


def terms(server: NodeProcess) -> int:
    """How many times ``server`` has won the election so far."""
    return server.log().count(LEADS)


def leaders(servers: list[NodeProcess]) -> list[NodeProcess]:
    """The servers that won the election at least once."""
    return [server for server in servers if terms(server)]


def replicas_of(cluster: LocalCluster, via: NodeProcess, workload: str) -> list[dict[str, Any]]:
    """The instances of ``workload`` that are not being deleted."""
    return [
        i
        for i in cluster.listing(via, "instances")
        if i["workload"] == workload and not i["deleting"]
    ]


def assert_no_replica_twice(instances: list[dict[str, Any]], replicas: int) -> None:
    """Exactly ``replicas`` instances, each name and uid once, none lost, all running."""
    names = [i["name"] for i in instances]
    uids = [i["uid"] for i in instances]
    assert len(names) == len(set(names)) == len(set(uids)) == replicas, instances
    assert all(i["state"] == "running" for i in instances), instances


def test_three_servers_elect_one_leader_and_fail_over(
    etcd: EtcdMember, cluster: LocalCluster
) -> None:
    first = cluster.add("s1", "server", extra=on_etcd(etcd))
    cluster.start(first)
    servers = [
        first,
        cluster.add("s2", "server", join=[first], extra=on_etcd(etcd)),
        cluster.add("s3", "server", join=[first], extra=on_etcd(etcd)),
    ]
    workers = [cluster.add(name, "worker", join=[first]) for name in ("w1", "w2")]
    cluster.start(*servers[1:], *workers)

    wait_until(
        "five alive nodes",
        lambda: list(node_states(cluster, first).values()).count("alive") == 5,
        60,
        cluster.logs,
    )
    roles = {n["name"]: n["role"] for n in cluster.listing(servers[2], "nodes")}
    assert roles == {"s1": "server", "s2": "server", "s3": "server", "w1": "worker", "w2": "worker"}

    # Exactly one server leads: the others wait on its lease.
    (leader,) = wait_until("a leader", lambda: leaders(servers), 60, cluster.logs)
    survivors = [server for server in servers if server is not leader]
    apply(cluster, survivors[0], "web", 4)
    wait_until(
        "4 replicas over both workers",
        lambda: (
            running_by_node(cluster.listing(survivors[1], "instances"), "web") == {"w1": 2, "w2": 2}
        ),
        60,
        cluster.logs,
    )
    before = {i["uid"]: i["node"] for i in replicas_of(cluster, survivors[0], "web")}
    assert leaders(servers) == [leader], "a second server led while the first held its lease"

    # Scaled while nobody leads, through the CLI of a surviving server: the
    # next leader places the new replicas.
    leader.signal(signal.SIGKILL)
    scaled = cluster.cli(survivors[0], "scale", "web", "6").stdout
    assert "scaled to 6" in scaled, scaled
    (successor,) = wait_until(
        "another server to lead", lambda: leaders(survivors), TAKEOVER, cluster.logs
    )
    wait_until(
        "6 replicas over both workers",
        lambda: (
            running_by_node(cluster.listing(successor, "instances"), "web") == {"w1": 3, "w2": 3}
        ),
        TAKEOVER,
        cluster.logs,
    )
    wait_until(
        f"the killed leader {leader.name} failed",
        lambda: node_states(cluster, successor)[leader.name] == "failed",
        TAKEOVER,
        cluster.logs,
    )
    failed = [
        e
        for e in cluster.listing(successor, "events")
        if e["reason"] == "NodeFailed" and e["object"]["name"] == leader.name
    ]
    assert failed, "no NodeFailed event for the killed leader"

    after = replicas_of(cluster, survivors[1], "web")
    assert_no_replica_twice(after, 6)
    kept = {i["uid"]: i["node"] for i in after if i["uid"] in before}
    assert kept == before, "the failover moved or replaced running replicas"
    assert all(i["restart_count"] == 0 for i in after), after
    assert leaders(survivors) == [successor]
    assert all(server.exited() is None for server in survivors), cluster.logs()


def readyz(server: NodeProcess) -> int:
    """The HTTP status of ``server``'s unauthenticated readiness check (0: no answer)."""
    try:
        return httpx.get(f"{server.api}/readyz", timeout=15).status_code
    except httpx.TransportError:
        return 0


def api_error(cluster: LocalCluster, server: NodeProcess) -> ShoalError | None:
    """The error a signed listing of workloads gets from ``server``, or None if it works."""

    async def call(client: ShoalClient) -> None:
        await client.list_workloads()

    try:
        cluster.query(server, call)
    except ShoalError as exc:
        return exc
    return None


def stopped_leading(server: NodeProcess) -> bool:
    """Whether ``server`` logged that it stopped leading for want of etcd."""
    return any(
        f"{server.name} stops leading: cannot reach etcd" in line
        for line in server.log().splitlines()
    )


def test_a_server_without_etcd_reports_it_and_resumes(
    etcd: EtcdMember, cluster: LocalCluster
) -> None:
    server = cluster.add("s1", "server", extra=on_etcd(etcd))
    cluster.start(server)
    worker = cluster.add("w1", "worker", join=[server])
    cluster.start(worker)
    apply(cluster, server, "web", 2)
    wait_until(
        "2 replicas running",
        lambda: running_by_node(cluster.listing(server, "instances"), "web") == {"w1": 2},
        60,
        cluster.logs,
    )
    assert readyz(server) == 200
    before = {i["uid"] for i in replicas_of(cluster, server, "web")}
    led = wait_until("s1 to lead", lambda: terms(server), 60, cluster.logs)
    assert not stopped_leading(server), server.log()

    etcd.stop()
    wait_until("/readyz to answer 503", lambda: readyz(server) == 503, 60, cluster.logs)
    reason = httpx.get(f"{server.api}/readyz", timeout=15).json()["reason"]
    assert f"cannot reach etcd at {etcd.endpoint}" in reason, reason
    error = wait_until("the API to fail", lambda: api_error(cluster, server), 60, cluster.logs)
    assert isinstance(error, Unavailable), error
    assert error.http_status == 503
    assert f"cannot reach etcd at {etcd.endpoint}" in error.message, error
    refused = cluster.cli(server, "scale", "web", "4", check=False)
    assert refused.returncode != 0
    assert f"cannot reach etcd at {etcd.endpoint}" in refused.stderr, refused.stderr
    # The leader lets go of the control loop instead of scheduling blind.
    wait_until("s1 to stop leading", lambda: stopped_leading(server), 60, cluster.logs)
    assert server.exited() is None, server.log()
    assert worker.exited() is None, worker.log()

    etcd.start()
    wait_until("/readyz to answer 200", lambda: readyz(server) == 200, 60, cluster.logs)
    scale(cluster, server, "web", 4)
    wait_until(
        "4 replicas running",
        lambda: running_by_node(cluster.listing(server, "instances"), "web") == {"w1": 4},
        TAKEOVER,
        cluster.logs,
    )
    assert terms(server) > led, "the new replicas were placed without a new term"
    after = replicas_of(cluster, server, "web")
    assert_no_replica_twice(after, 4)
    assert before <= {i["uid"] for i in after}, "replicas were replaced while etcd was away"
    assert all(i["restart_count"] == 0 for i in after), after
    assert server.exited() is None and worker.exited() is None, cluster.logs()


def test_a_worker_moves_to_another_server_when_its_server_dies(
    etcd: EtcdMember, cluster: LocalCluster
) -> None:
    # The worker starts while a is the only server, so its RemoteNodeState uses a.
    a = cluster.add("a", "server", extra=on_etcd(etcd))
    cluster.start(a)
    worker = cluster.add("w1", "worker", join=[a])
    cluster.start(worker)
    apply(cluster, a, "web", 2)
    b = cluster.add("b", "server", join=[a, worker], extra=on_etcd(etcd))
    cluster.start(b)
    wait_until(
        "2 replicas running",
        lambda: running_by_node(cluster.listing(a, "instances"), "web") == {"w1": 2},
        60,
        cluster.logs,
    )
    wait_until(
        "three alive nodes",
        lambda: node_states(cluster, b) == {"a": "alive", "b": "alive", "w1": "alive"},
        60,
        cluster.logs,
    )
    assert leaders([a, b]) == [a]
    before = {i["uid"]: i for i in replicas_of(cluster, b, "web")}

    # Scaled through b while nobody leads: only through b can w1 learn of the
    # new replica, and report it running.
    a.signal(signal.SIGKILL)
    scale(cluster, b, "web", 3)
    wait_until(
        "3 replicas running on w1",
        lambda: running_by_node(cluster.listing(b, "instances"), "web") == {"w1": 3},
        TAKEOVER,
        cluster.logs,
    )
    assert leaders([b]) == [b]
    wait_until(
        "w1 to have lost a (the server its store used)",
        lambda: f"{a.ip}:7947 is not reachable" in worker.log(),
        60,
        cluster.logs,
    )
    wait_until(
        "a failed, w1 alive",
        lambda: node_states(cluster, b) == {"a": "failed", "b": "alive", "w1": "alive"},
        TAKEOVER,
        cluster.logs,
    )
    after = replicas_of(cluster, b, "web")
    assert_no_replica_twice(after, 3)
    kept = {i["uid"]: i for i in after if i["uid"] in before}
    assert kept.keys() == before.keys(), "the worker's replicas were replaced"
    for uid, instance in kept.items():
        assert instance["restart_count"] == 0, instance
        assert instance["container_ids"] == before[uid]["container_ids"], instance
        assert instance["started_at"] == before[uid]["started_at"], instance
    assert worker.exited() is None, worker.log()


def test_a_rollout_goes_on_when_its_leader_is_killed_mid_way(
    etcd: EtcdMember, cluster: LocalCluster
) -> None:
    """SIGKILL the leading server half way through a rolling update: the next leader finishes it."""
    first = cluster.add("s1", "server", extra=on_etcd(etcd))
    cluster.start(first)
    servers = [first, cluster.add("s2", "server", join=[first], extra=on_etcd(etcd))]
    workers = [cluster.add(name, "worker", join=[first]) for name in ("w1", "w2")]
    cluster.start(servers[1], *workers)
    wait_until(
        "four alive nodes",
        lambda: list(node_states(cluster, first).values()).count("alive") == 4,
        60,
        cluster.logs,
    )
    (leader,) = wait_until("a leader", lambda: leaders(servers), 60, cluster.logs)
    (survivor,) = [server for server in servers if server is not leader]
    document = json.loads(workload_yaml("web", 4))
    # Slow enough to be caught half way: each new instance counts after 2 s.
    document["update"] = {"max_surge": 1, "max_unavailable": 0, "min_ready_seconds": 2}

    def apply_image(image: str) -> None:
        document["template"]["containers"][0]["image"] = image

        async def call(client: ShoalClient) -> None:
            await client.apply_documents([document])

        cluster.query(survivor, call)

    apply_image("busybox:1.36")
    wait_until(
        "4 running replicas",
        lambda: sum(running_by_node(cluster.listing(survivor, "instances"), "web").values()) == 4,
        60,
        cluster.logs,
    )
    apply_image("busybox:2")
    wait_until(
        "the rollout under way",
        lambda: any(i["revision"] == 2 for i in replicas_of(cluster, survivor, "web")),
        60,
        cluster.logs,
    )
    leader.signal(signal.SIGKILL)

    def finished() -> bool:
        status = next(w for w in cluster.listing(survivor, "workloads"))["status"]
        return (status["revision"], status["updated_replicas"], status["available_replicas"]) == (
            2,
            4,
            4,
        ) and status["replicas"] == 4

    wait_until("the next leader to finish the rollout", finished, TAKEOVER + 60, cluster.logs)
    assert leaders([survivor]) == [survivor]
    after = replicas_of(cluster, survivor, "web")
    assert_no_replica_twice(after, 4)
    assert {i["revision"] for i in after} == {2}
    assert {i["template"]["containers"][0]["image"] for i in after} == {"busybox:2"}
