"""Publishing a node in serf tags and reading it back."""

from __future__ import annotations

import msgpack
import pytest

from shoal.cluster import check_tags, node_from_member, node_tags
from shoal.interfaces import (
    Capacity,
    GossipState,
    InvalidInput,
    Member,
    Node,
    NodeRole,
)


def test_a_node_survives_the_round_trip_through_tags() -> None:
    capacity = Capacity(cpu="4", memory="8Gi", pods=50)
    node = Node(
        name="worker-1",
        node_id="0123456789abcdef",
        addresses={"api": "127.0.0.2:7070", "grpc": "127.0.0.2:7071", "metrics": "x"},
        role=NodeRole.WORKER,
        labels={"zone": "a", "disk": "ssd"},
        capacity=capacity,
    )
    tags = node_tags(node)
    assert tags == {
        "id": "0123456789abcdef",
        "role": "worker",
        "api": "127.0.0.2:7070",
        "grpc": "127.0.0.2:7071",
        "cpu": "4000m",
        "mem": str(8 * 2**30),
        "pods": "50",
        "l.zone": "a",
        "l.disk": "ssd",
    }
    member = Member(name="worker-1", address="127.0.0.2:7946", state=GossipState.FAILED, tags=tags)
    back = node_from_member(member)
    assert back.model_dump(include={"name", "node_id", "role", "labels", "capacity", "state"}) == {
        "name": "worker-1",
        "node_id": "0123456789abcdef",
        "role": NodeRole.WORKER,
        "labels": {"zone": "a", "disk": "ssd"},
        "capacity": capacity.model_dump(),
        "state": GossipState.FAILED,
    }
    assert back.addresses == {"api": "127.0.0.2:7070", "grpc": "127.0.0.2:7071"}
    assert check_tags(tags) == tags


def test_a_member_without_tags_reads_as_a_default_node() -> None:
    node = node_from_member(Member(name="bare", address="127.0.0.1:1", state=GossipState.ALIVE))
    assert (node.name, node.role, node.labels, node.node_id) == ("bare", NodeRole.BOTH, {}, "")


def test_a_member_with_a_bad_role_is_refused_naming_it() -> None:
    member = Member(name="odd", address="a:1", state=GossipState.ALIVE, tags={"role": "king"})
    with pytest.raises(InvalidInput, match="'odd' publishes tags that do not describe a node"):
        node_from_member(member)


def test_tags_over_serfs_limit_are_refused_with_their_size() -> None:
    with pytest.raises(
        InvalidInput, match=r"tags take \d+ bytes encoded; serf carries at most 512"
    ):
        check_tags({f"l.label-{i}": "v" * 20 for i in range(20)})


def test_room_is_kept_for_the_cluster_id_and_the_goodbye() -> None:
    def fill(size: int) -> dict[str, str]:
        return {"id": "x" * 64, "l.pad": "p" * size}

    largest = max(n for n in range(512) if _fits(fill(n)))
    tags = check_tags(fill(largest))
    # What is added after start still fits Serf's 512 bytes.
    later = {**tags, "cid": "0123456789abcdef", "bye": "1"}
    assert 1 + len(msgpack.packb(later)) <= 512
    with pytest.raises(InvalidInput, match="use fewer or shorter labels"):
        check_tags(fill(largest + 1))


def _fits(tags: dict[str, str]) -> bool:
    try:
        check_tags(tags)
    except InvalidInput:
        return False
    return True
