"""Pods on the network: a real HTTP server in a container, in host and in bridge mode.

Bridge mode uses the runtime package's CNI networking on a bridge and subnet
of this test's own (198.19.251.0/24, inside 198.18.0.0/15), publishes the
port on 127.0.0.1 only, and removes the bridge afterwards.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from shoal.interfaces import Container, InvalidInput, Port
from shoal.runtime import DEFAULT_PLUGIN_DIRS, HostNetworking, HostNetworks, pod_networking
from shoal.runtime.oci._ocinet import NetworkHook
from tests.ports import free_port
from tests.runtime.oci.harness import IMAGE, RuntimeFactory, new_pod
from tests.runtime.oci.support import WAIT

pytestmark = pytest.mark.anyio

BRIDGE = "shoal-oci0"
SUBNET = "198.19.251.0/24"
HOSTPORT_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def httpd(port: int) -> Container:
    command = ["httpd", "-f", "-p", str(port), "-h", "/var/www"]
    return Container(name="web", image=IMAGE, command=command, ports=[])


async def get_page(port: int) -> str:
    """GET http://127.0.0.1:port/ until it answers 200 (bounded)."""
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/")
                    if response.status_code == 200:
                        return response.text
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)  # the server starts in the background; bounded above


def nat_rules() -> str:
    return subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False
    ).stdout


def test_the_networking_modes_fit_the_runtime_hook() -> None:
    hooks: list[NetworkHook] = [HostNetworking(), pod_networking("host", Path("/nonexistent"))]
    assert hooks


async def test_host_networking_serves_on_the_node(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(network=HostNetworking()) as runtime:
        port = free_port()
        web = httpd(port).model_copy(update={"ports": [Port(container_port=port, host_port=port)]})
        spec = new_pod(web)
        await runtime.create(spec)
        status = await runtime.start(spec.uid)
        assert status.ip == "127.0.0.1"
        assert await get_page(port) == "hello from busybox\n"


@pytest.mark.parametrize("hook", [None, HostNetworking()], ids=["no hook", "HostNetworking"])
async def test_host_networking_refuses_a_host_port_other_than_its_own(
    make_runtime: RuntimeFactory, hook: NetworkHook | None
) -> None:
    """The pod shares the node's ports: 80 cannot be published on 8080; nothing is left."""
    async with make_runtime(network=hook) as runtime:
        web = httpd(80).model_copy(update={"ports": [Port(container_port=80, host_port=8080)]})
        spec = new_pod(web)
        with pytest.raises(InvalidInput, match="host networking cannot publish container port 80"):
            await runtime.run(spec)
        assert await runtime.list() == []


@pytest.fixture
def bridge_host() -> Iterator[None]:
    """Skip without the CNI tools; afterwards remove the bridge and chains this test made."""
    for tool in ("ip", "iptables", "iptables-save"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: install iproute2 and iptables")
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not any((d / plugin).is_file() for d in DEFAULT_PLUGIN_DIRS):
            pytest.skip(f"CNI plugin {plugin} is missing: install containernetworking-plugins")
    chains_before = {chain for chain in HOSTPORT_CHAINS if f":{chain} " in nat_rules()}
    yield
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    if not chains_before and "-A CNI-HOSTPORT-DNAT " not in nat_rules():
        jumps = [
            ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
            ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
            [
                *("POSTROUTING", "-m", "comment", "--comment"),
                *("CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"),
            ],
        ]
        for jump in jumps:
            subprocess.run(["iptables", "-t", "nat", "-D", *jump], capture_output=True)
        for chain in HOSTPORT_CHAINS:
            subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


async def test_bridge_networking_publishes_a_container_port(
    make_runtime: RuntimeFactory, tmp_path: Path, bridge_host: None
) -> None:
    registry = HostNetworks(tmp_path / "registry")
    network = pod_networking(
        "bridge", tmp_path / "net", bridge=BRIDGE, subnet=SUBNET, registry=registry
    )
    async with make_runtime(network=network) as runtime:
        host_port = free_port()
        web = httpd(80).model_copy(update={"ports": [Port(container_port=80, host_port=host_port)]})
        spec = new_pod(web, Container(name="side", image=IMAGE, command=["sleep", "300"]))
        await runtime.create(spec)
        status = await runtime.start(spec.uid)

        assert status.ip is not None
        assert ipaddress.IPv4Address(status.ip) in ipaddress.IPv4Network(SUBNET)
        assert await get_page(host_port) == "hello from busybox\n"
        # The sidecar reaches the web server on the pod's loopback: one namespace.
        fetched = await runtime.exec(spec.uid, "side", ["wget", "-qO-", "http://127.0.0.1/"])
        assert fetched.stdout == "hello from busybox\n"

        await runtime.remove(spec.uid)
        assert spec.uid not in nat_rules()
        assert await network.attached() == []
