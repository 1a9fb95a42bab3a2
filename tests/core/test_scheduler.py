import random
from collections.abc import Mapping

import pytest

from shoal.core import DefaultScheduler
from shoal.interfaces import (
    Capacity,
    GossipState,
    Node,
    NodeRole,
    NodeUsage,
    PlacementRequest,
    PlacementStrategy,
)


def node(name: str, cpu: int = 4000, memory: int = 8 << 30, pods: int = 110, **kw: object) -> Node:
    capacity = Capacity.model_validate({"cpu": f"{cpu}m", "memory": memory, "pods": pods})
    return Node.model_validate({"name": name, "capacity": capacity, "allocatable": capacity, **kw})


def requests(
    n: int, group: str = "default/web", cpu: int = 1000, memory: int = 0, **kw: object
) -> list[PlacementRequest]:
    return [
        PlacementRequest(instance=f"{group}-{i}", group=group, cpu=cpu, memory=memory, **kw)  # type: ignore[arg-type]
        for i in range(n)
    ]


def counts(assigned: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in assigned.values():
        out[name] = out.get(name, 0) + 1
    return out


def test_binpack_fills_one_node_before_the_next() -> None:
    result = DefaultScheduler().place(requests(5), [node("a"), node("b")], {})
    assert counts(result.assigned) == {"a": 4, "b": 1}
    assert result.failed == {}


def test_binpack_prefers_the_busier_node() -> None:
    usage = {"b": NodeUsage(cpu=2000, pods=2)}
    result = DefaultScheduler().place(requests(1), [node("a"), node("b")], usage)
    assert result.assigned == {"default/web-0": "b"}


def test_spread_alternates_between_nodes() -> None:
    reqs = requests(4, strategy=PlacementStrategy.SPREAD, cpu=100)
    result = DefaultScheduler().place(reqs, [node("a"), node("b")], {})
    assert counts(result.assigned) == {"a": 2, "b": 2}


def test_every_request_is_placed_or_explained_per_node() -> None:
    nodes = [
        node("small", cpu=500),
        node("off", state=GossipState.FAILED),
        node("closed", cordoned=True),
        node("ctl", role=NodeRole.SERVER),
        node("zone-b", labels={"zone": "b"}),
    ]
    reqs = requests(2, constraints={"zone": "a"})
    result = DefaultScheduler().place(reqs, nodes, {})
    assert result.assigned == {}
    failure = result.failed["default/web-0"]
    assert failure.nodes["off"] == "node is failed"
    assert failure.nodes["closed"] == "node is cordoned"
    assert failure.nodes["ctl"] == "node is server-only and runs no instances"
    assert failure.nodes["zone-b"] == "constraint zone='a' not met (node has 'b')"
    assert "constraint zone='a' not met (node has missing)" == failure.nodes["small"]
    assert failure.message.startswith("0/5 nodes fit:")


def test_resources_are_counted_after_each_placement() -> None:
    result = DefaultScheduler().place(requests(3, cpu=1500), [node("a", cpu=4000)], {})
    assert len(result.assigned) == 2
    (failure,) = result.failed.values()
    assert failure.nodes == {"a": "insufficient cpu: requests 1500m, free 1 of 4"}


def test_memory_and_pod_limits() -> None:
    mem = DefaultScheduler().place(
        requests(2, cpu=0, memory=3 << 30), [node("a", memory=4 << 30)], {}
    )
    assert len(mem.assigned) == 1
    assert next(iter(mem.failed.values())).nodes["a"] == (
        "insufficient memory: requests 3Gi, free 1Gi of 4Gi"
    )
    pods = DefaultScheduler().place(requests(3, cpu=0), [node("a", pods=2)], {})
    assert len(pods.assigned) == 2
    assert next(iter(pods.failed.values())).nodes["a"] == "too many instances (2 of 2)"


def test_host_ports_conflict() -> None:
    ports = frozenset({(8080, "tcp")})
    usage = {"a": NodeUsage(host_ports={(8080, "tcp")})}
    result = DefaultScheduler().place(
        requests(2, cpu=0, host_ports=ports), [node("a"), node("b"), node("c")], usage
    )
    assert sorted(result.assigned.values()) == ["b", "c"]
    more = DefaultScheduler().place(requests(3, cpu=0, host_ports=ports), [node("b")], {})
    assert len(more.assigned) == 1
    assert next(iter(more.failed.values())).nodes["b"] == "host port 8080/tcp already in use"


def test_zero_nodes() -> None:
    result = DefaultScheduler().place(requests(1), [], {})
    assert result.failed["default/web-0"].message == "no nodes in the cluster"


def test_placement_is_deterministic() -> None:
    nodes = [node(f"n{i}") for i in range(20)]
    reqs = requests(30, cpu=700) + requests(10, group="default/db", cpu=300)
    first = DefaultScheduler().place(reqs, nodes, {})
    second = DefaultScheduler().place(list(reversed(reqs)), list(reversed(nodes)), {})
    assert first.assigned == second.assigned


def test_usage_input_is_not_mutated() -> None:
    usage = {"a": NodeUsage(cpu=100)}
    DefaultScheduler().place(requests(2), [node("a")], usage)
    assert usage["a"].cpu == 100 and usage["a"].pods == 0


def _reference_binpack(
    reqs: list[PlacementRequest], nodes: list[Node], usage: Mapping[str, NodeUsage]
) -> dict[str, str]:
    """Binpack by brute force: each request to the fullest node that fits, one at a time.

    In the scheduler's order: batches of one group and shape (sorted by group,
    shape and constraints), each batch's requests by instance.
    """
    used = {
        n.name: NodeUsage(cpu=u.cpu, memory=u.memory, pods=u.pods, host_ports=set(u.host_ports))
        for n in nodes
        for u in [usage.get(n.name, NodeUsage())]
    }
    order = sorted(
        reqs,
        key=lambda r: (
            r.group,
            r.cpu,
            r.memory,
            tuple(sorted(r.host_ports)),
            tuple(sorted(r.constraints.items())),
            r.instance,
        ),
    )
    assigned: dict[str, str] = {}
    for request in order:
        best: tuple[float, str] | None = None
        for n in sorted(nodes, key=lambda n: n.name):
            u, alloc = used[n.name], n.allocatable
            fits = (
                all(n.labels.get(k) == v for k, v in request.constraints.items())
                and u.pods + 1 <= alloc.pods
                and u.cpu + request.cpu <= alloc.cpu
                and u.memory + request.memory <= alloc.memory
                and not request.host_ports & u.host_ports
            )
            if fits:
                fullness = (u.cpu / alloc.cpu + u.memory / alloc.memory + u.pods / alloc.pods) / 3
                if best is None or fullness > best[0]:
                    best = (fullness, n.name)
        if best is not None:
            assigned[request.instance] = best[1]
            chosen = used[best[1]]
            chosen.cpu += request.cpu
            chosen.memory += request.memory
            chosen.pods += 1
            chosen.host_ports |= request.host_ports
    return assigned


@pytest.mark.parametrize("seed", range(60))
def test_binpack_places_as_a_brute_force_search_does(seed: int) -> None:
    rng = random.Random(seed)
    port = (8080, "tcp")
    nodes = [
        node(
            f"n{i:02d}",
            cpu=rng.choice([1000, 2000, 4000]),
            memory=rng.choice([1, 2, 4]) << 30,
            pods=rng.choice([3, 5, 110]),
            labels={"zone": rng.choice(["a", "b"])},
        )
        for i in range(rng.randint(1, 12))
    ]
    usage = {
        n.name: NodeUsage(
            cpu=rng.randrange(0, 900, 100),
            pods=rng.randint(0, 2),
            host_ports={port} if rng.random() < 0.3 else set(),
        )
        for n in nodes
        if rng.random() < 0.5
    }
    # Several groups, some with constraints: batches share heaps and see each other's placements.
    reqs: list[PlacementRequest] = []
    for group in range(rng.randint(1, 4)):
        constraints = rng.choice([{}, {}, {"zone": "a"}, {"zone": "b"}])
        reqs += requests(
            rng.randint(1, 25),
            group=f"default/g{group}",
            cpu=rng.choice([0, 100, 300, 700]),
            memory=rng.choice([0, 64 << 20, 256 << 20]),
            host_ports=frozenset({port}) if rng.random() < 0.25 else frozenset(),
            constraints=constraints,
        )
    result = DefaultScheduler().place(reqs, nodes, usage)
    assert result.assigned == _reference_binpack(reqs, nodes, usage)
    assert set(result.assigned) | set(result.failed) == {r.instance for r in reqs}


def test_a_node_placed_on_by_another_heap_stays_a_candidate() -> None:
    nodes = [node("n1", cpu=4000, labels={"zone": "a"}), node("n2", cpu=500, labels={"zone": "a"})]
    first = requests(1, group="default/a", cpu=1000)
    second = requests(1, group="default/b", cpu=1000, constraints={"zone": "a"})
    result = DefaultScheduler().place(first + second, nodes, {})
    assert result.assigned == {"default/a-0": "n1", "default/b-0": "n1"}
    assert result.failed == {}


def test_the_summary_counts_nodes_in_plain_words() -> None:
    nodes = [
        *(node(f"closed-{i}", cordoned=True) for i in range(3)),
        *(node(f"ctl-{i}", role=NodeRole.SERVER) for i in range(2)),
        node("off", state=GossipState.FAILED),
        node("small", cpu=500),
    ]
    failure = DefaultScheduler().place(requests(1), nodes, {}).failed["default/web-0"]
    assert failure.message == (
        "0/7 nodes fit: 3 nodes are cordoned, 2 nodes are server-only and run no instances, "
        "1 node is failed, 1 insufficient cpu"
    )
