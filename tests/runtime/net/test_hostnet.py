"""The host's registry of bridge networks: two data dirs never share a bridge or a subnet.

Each test uses a registry directory of its own (the real one is
``/var/lib/shoal/networks``); the host's interfaces and addresses are the
real ones, which is why the picked names and subnets are compared with each
other rather than with fixed values.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import Conflict, DataDirLock, InvalidInput
from shoal.runtime import HostNetworks, NetworkClaim


def data_dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def overlaps(a: NetworkClaim, b: NetworkClaim) -> bool:
    return ipaddress.IPv4Network(a.subnet).overlaps(ipaddress.IPv4Network(b.subnet))


def test_two_data_dirs_get_networks_of_their_own_and_keep_them(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    first = registry.claim(data_dir(tmp_path, "a"))
    second = registry.claim(data_dir(tmp_path, "b"))

    assert first.bridge != second.bridge and not overlaps(first, second)
    for claim in (first, second):
        index = int(claim.bridge.removeprefix("shoal"))
        assert claim.subnet == f"198.18.{index}.0/24"
    # A restart keeps the network; the registry and the data dir agree on it.
    assert registry.claim(tmp_path / "a") == first
    assert registry.owned_by(tmp_path / "a") == first
    assert registry.neighbours(tmp_path / "a") == [second]


def test_another_owners_bridge_or_subnet_is_refused_naming_the_owner(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    owner = data_dir(tmp_path, "owner")
    taken = registry.claim(owner)
    newcomer = data_dir(tmp_path, "newcomer")

    with pytest.raises(Conflict) as caught:
        registry.claim(newcomer, bridge=taken.bridge)
    message = caught.value.message
    assert f"bridge {taken.bridge} belongs to the node on data dir {owner}" in message
    assert "no agent running" in message and "shoal node reset" in message
    assert "--bridge NAME --bridge-subnet CIDR" in message

    with DataDirLock(owner):  # an agent runs on it: its pid is named
        with pytest.raises(Conflict, match=f"agent pid {os.getpid()}"):
            registry.claim(newcomer, bridge="shoal-other", subnet=taken.subnet)
    # A subnet inside the owner's overlaps it.
    inside = str(next(ipaddress.IPv4Network(taken.subnet).subnets(new_prefix=26)))
    with pytest.raises(Conflict, match=f"overlaps {taken.subnet} of bridge {taken.bridge}"):
        registry.claim(newcomer, subnet=inside)
    assert registry.owned_by(newcomer) is None  # nothing was written


def test_a_subnet_over_an_address_of_the_host_is_refused(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    with pytest.raises(Conflict, match=r"overlaps address 127\.0\.0\.1/8 of interface lo"):
        registry.claim(data_dir(tmp_path, "a"), bridge="shoal-lo", subnet="127.0.5.0/24")


def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    with pytest.raises(InvalidInput, match="not a valid interface name"):
        registry.claim(data_dir(tmp_path, "a"), bridge="a bridge name that is far too long")
    with pytest.raises(InvalidInput, match="invalid network setting"):
        registry.claim(tmp_path / "a", subnet="198.18.0.1/24")
    assert registry.owned_by(tmp_path / "a") is None


def test_a_deleted_or_released_data_dir_frees_its_network(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    gone = data_dir(tmp_path, "gone")
    claim = registry.claim(gone)
    (gone / "cni" / "network.json").unlink()  # as when the data dir is deleted
    taker = data_dir(tmp_path, "taker")
    assert registry.claim(taker, bridge=claim.bridge, subnet=claim.subnet).data_dir == taker

    assert registry.release(taker) is not None
    assert registry.owned_by(taker) is None
    assert list((tmp_path / "registry").glob("*.json")) == []
    assert registry.release(taker) is None


def test_a_data_dir_with_attached_pods_keeps_its_network(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    node = data_dir(tmp_path, "node")
    mine = registry.claim(node)
    pods = node / "cni" / "pods"
    pods.mkdir()
    (pods / "abc.json").write_text("{}")
    with pytest.raises(Conflict, match=f"pod\\(s\\) attached to bridge {mine.bridge}"):
        registry.claim(node, bridge="shoal-new", subnet="198.19.248.0/24")
    assert registry.claim(node) == mine  # asking for nothing in particular is fine


def test_a_data_dir_from_before_the_registry_keeps_its_pods_bridge(tmp_path: Path) -> None:
    node = data_dir(tmp_path, "legacy")
    pods = node / "cni" / "pods"
    pods.mkdir(parents=True)
    record = {
        "format": 1,
        "pod_uid": "abc",
        "netns_path": "/var/run/netns/shoal-abc",
        "ifname": "eth0",
        "network": {
            "cniVersion": "1.0.0",
            "name": "shoal-legacy",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "shoal-legacy",
                    "ipam": {"ranges": [[{"subnet": "198.19.247.0/24"}]]},
                }
            ],
        },
        "port_mappings": [],
        "result": None,
    }
    (pods / "abc.json").write_text(json.dumps(record))
    claim = HostNetworks(tmp_path / "registry").claim(node)
    assert (claim.bridge, claim.subnet) == ("shoal-legacy", "198.19.247.0/24")


def test_agents_starting_at_once_never_get_the_same_network(tmp_path: Path) -> None:
    registry = HostNetworks(tmp_path / "registry")
    dirs = [data_dir(tmp_path, f"n{i}") for i in range(6)]
    claims: list[NetworkClaim] = []
    threads = [threading.Thread(target=lambda d=d: claims.append(registry.claim(d))) for d in dirs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(claims) == len(dirs)
    assert len({c.bridge for c in claims}) == len(dirs)
    assert not any(overlaps(a, b) for a in claims for b in claims if a is not b)


def test_a_data_dir_from_before_the_registry_cannot_take_a_bridge_someone_owns(
    tmp_path: Path,
) -> None:
    registry = HostNetworks(tmp_path / "registry")
    owner = registry.claim(data_dir(tmp_path, "owner"))
    legacy = data_dir(tmp_path, "legacy")
    (legacy / "cni" / "pods").mkdir(parents=True)
    record = {
        "format": 1,
        "pod_uid": "abc",
        "netns_path": "/var/run/netns/shoal-abc",
        "ifname": "eth0",
        "network": {
            "cniVersion": "1.0.0",
            "name": owner.bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": owner.bridge,
                    "ipam": {"ranges": [[{"subnet": owner.subnet}]]},
                }
            ],
        },
        "port_mappings": [],
        "result": None,
    }
    (legacy / "cni" / "pods" / "abc.json").write_text(json.dumps(record))
    with pytest.raises(Conflict, match=f"but it belongs to the node on data dir {owner.data_dir}"):
        registry.claim(legacy)
    assert registry.owned_by(owner.data_dir) == owner  # untouched
    assert registry.neighbours(legacy) == [owner]


@pytest.mark.anyio
async def test_publishing_ports_is_one_node_at_a_time_across_the_host(tmp_path: Path) -> None:
    """Two nodes (two registry objects, as two processes would have) take turns."""
    first, second = HostNetworks(tmp_path / "registry"), HostNetworks(tmp_path / "registry")
    order: list[str] = []
    inside = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        async with first.ports_held():
            order.append("first in")
            inside.set()
            await release.wait()
            order.append("first out")

    async def wait_turn() -> None:
        async with second.ports_held():
            order.append("second in")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await inside.wait()
            tg.start_soon(wait_turn)
            await anyio.wait_all_tasks_blocked()
            assert order == ["first in"]  # the second waits for the lock
            release.set()
    assert order == ["first in", "first out", "second in"]
