"""The two networking modes a runtime picks from: host and bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.interfaces import Container, InvalidInput, PodSpec, Port, RuntimeFailure
from shoal.runtime import (
    BridgeNetworking,
    CniNetwork,
    HostNetworking,
    HostNetworks,
    PodNetwork,
    PodNetworking,
    netns_exists,
    netns_path,
    pod_networking,
    pod_ports,
)
from tests.ports import free_port
from tests.runtime.net.support import PodHarness, in_subnet, ipam_reservations, nat_rules

pytestmark = pytest.mark.anyio


async def test_bridge_networking_attaches_and_detaches_a_pod(pods: PodHarness) -> None:
    networking = BridgeNetworking(pods.network)
    uid = pods.new_uid()

    net = await networking.attach(uid, [Port(container_port=80, host_port=free_port())])

    assert isinstance(networking, PodNetworking)
    assert net.netns_path == netns_path(uid) and await netns_exists(uid)
    assert net.ip is not None and in_subnet(net.ip)
    assert uid in await nat_rules()
    assert await networking.lookup(uid) == net
    assert await networking.attached() == [uid]
    await networking.attach(uid, [Port(container_port=80)])  # the ports changed
    assert uid not in await nat_rules()
    await networking.detach(uid)
    assert not await netns_exists(uid)
    assert ipam_reservations(pods.network) == []
    assert await networking.attached() == []
    await networking.detach(uid)


async def test_a_failed_bridge_attach_leaves_no_namespace(pods: PodHarness) -> None:
    networking = BridgeNetworking(pods.network)
    host_port = free_port()
    await networking.attach(pods.new_uid(), [Port(container_port=80, host_port=host_port)])
    uid = pods.new_uid()

    with pytest.raises(RuntimeFailure, match="already published"):
        await networking.attach(uid, [Port(container_port=80, host_port=host_port)])

    assert not await netns_exists(uid)
    assert len(ipam_reservations(pods.network)) == 1


async def test_host_networking_uses_the_node_address() -> None:
    networking = HostNetworking()
    expected = PodNetwork(ip="127.0.0.1", gateway=None, netns_path=None)

    assert isinstance(networking, PodNetworking)
    assert await networking.attach("abc", [Port(container_port=80, host_port=80)]) == expected
    assert await networking.lookup("abc") == expected
    assert await networking.attached() == []
    await networking.detach("abc")


async def test_host_networking_cannot_map_a_port_to_another() -> None:
    with pytest.raises(InvalidInput, match="set host_port equal to container_port"):
        await HostNetworking().attach("abc", [Port(container_port=80, host_port=8080)])


def test_the_mode_comes_from_configuration(tmp_path: Path) -> None:
    assert isinstance(pod_networking("host", tmp_path), HostNetworking)
    registry = HostNetworks(tmp_path / "registry")
    bridge = pod_networking(
        "bridge", tmp_path, bridge="shoal9", subnet="198.18.9.0/24", registry=registry
    )
    assert isinstance(bridge, BridgeNetworking)
    assert isinstance(bridge.network, CniNetwork)
    assert (bridge.network.bridge, bridge.network.gateway) == ("shoal9", "198.18.9.1")
    with pytest.raises(InvalidInput, match="unknown network mode 'overlay'"):
        pod_networking("overlay", tmp_path)


def test_pod_ports_gathers_every_container() -> None:
    web = Container(name="web", image="busybox", ports=[Port(container_port=80, host_port=8080)])
    side = Container(name="side", image="busybox", ports=[Port(container_port=9000)])
    pod = PodSpec(uid="u", name="n", namespace="default", workload="w", containers=[web, side])

    assert pod_ports(pod) == [*web.ports, *side.ports]
