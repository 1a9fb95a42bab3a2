"""Fixtures for real pod networking: root, iproute2, iptables and the CNI plugins.

The tests make real network namespaces, veths, a bridge and nat rules, and
talk to published ports on 127.0.0.1 only. Without root or the Debian
packages they are skipped with the reason. Whatever a test leaves, its
fixtures remove; the session removes the bridge, restores ``ip_forward``
(the bridge plugin turns it on) and removes portmap's shared chains when
this session created them and no other pod uses them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shoal.runtime import DEFAULT_PLUGIN_DIRS, CniNetwork
from tests.runtime.net.support import BRIDGE, SUBNET, PodHarness

PLUGINS = ("bridge", "host-local", "portmap", "loopback")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SHARED_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")
SHARED_JUMPS = (
    ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    [
        *("POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade"),
        *("-j", "CNI-HOSTPORT-MASQ"),
    ],
)


def _nat_rules() -> str:
    return subprocess.run(
        ["iptables-save", "-t", "nat"], check=True, capture_output=True, text=True
    ).stdout


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "pod networking tests need root (network namespaces, veths, iptables)"
    for tool in ("ip", "iptables", "iptables-save", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: install iproute2, iptables and busybox-static"
    for plugin in PLUGINS:
        if not any((d / plugin).is_file() for d in DEFAULT_PLUGIN_DIRS):
            return f"CNI plugin {plugin} is missing: install containernetworking-plugins"
    return None


@pytest.fixture(scope="session")
def host_networking() -> Iterator[None]:
    """Skip without root or the tools; at session end undo what the session left."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    forward = IP_FORWARD.read_text()
    chains_before = {c for c in SHARED_CHAINS if f":{c} " in _nat_rules()}
    yield
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    IP_FORWARD.write_text(forward)
    nat = _nat_rules()
    if not chains_before and "-A CNI-HOSTPORT-DNAT " not in nat:
        for jump in SHARED_JUMPS:
            subprocess.run(["iptables", "-t", "nat", "-D", *jump], capture_output=True)
        for chain in SHARED_CHAINS:
            subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


@pytest.fixture
def network(host_networking: None, tmp_path: Path) -> CniNetwork:
    """A bridge network with its state in the test's temporary directory."""
    return CniNetwork(tmp_path / "net", bridge=BRIDGE, subnet=SUBNET)


@pytest.fixture
async def pods(network: CniNetwork) -> AsyncIterator[PodHarness]:
    """Pods on ``network``; every namespace, veth, rule and process is gone afterwards."""
    harness = PodHarness(network)
    try:
        yield harness
    finally:
        await harness.aclose()
