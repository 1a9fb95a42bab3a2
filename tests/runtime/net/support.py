"""Helpers for the pod networking tests: what is on the host, and a harness that cleans up.

Everything here looks at the real host: links in /sys/class/net, the nat
table through ``iptables-save``, host-local's reservation files, named
network namespaces. :class:`PodHarness` creates pods (namespace plus CNI
attachment) and processes inside them, and its :meth:`~PodHarness.aclose`
removes all of it even when a test failed half-way, falling back to removing
by hand what a broken teardown might leave.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shlex
from pathlib import Path

import anyio
import anyio.abc
import httpx

from shoal.interfaces import Port
from shoal.runtime import (
    CniNetwork,
    PodNetwork,
    create_netns,
    delete_netns,
    netns_name,
)

BRIDGE = "shoal-nt0"
"""A bridge of the tests' own, apart from a node's ``shoal0``."""
SUBNET = "198.19.250.0/24"
"""Inside 198.18.0.0/15, apart from the default 198.18.0.0/24."""
WAIT = 10.0
"""Bound of every wait."""


async def nat_rules() -> str:
    """Return the nat table as ``iptables-save`` prints it."""
    return (await anyio.run_process(["iptables-save", "-t", "nat"])).stdout.decode()


async def chains_mentioning(uid: str) -> set[str]:
    """Return the chains that rules naming ``uid`` (in their comment) jump to."""
    chains = set()
    for line in (await nat_rules()).splitlines():
        if f'id: \\"{uid}\\"' in line and " -j " in line:
            chains.add(line.split(" -j ", 1)[1].split()[0])
    return chains


def link_exists(name: str) -> bool:
    """Return whether the host has a network interface named ``name``."""
    return Path("/sys/class/net", name).exists()


def ipam_reservations(network: CniNetwork) -> list[str]:
    """Return the addresses host-local has reserved for ``network``."""
    directory = network.root / "ipam" / network.name
    if not directory.is_dir():
        return []
    names = (p.name for p in directory.iterdir())
    return sorted(n for n in names if n != "lock" and not n.startswith("last_reserved_ip"))


def in_subnet(ip: str) -> bool:
    """Return whether ``ip`` is in the tests' bridge subnet."""
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(SUBNET)


async def in_netns(uid: str, *command: str) -> str:
    """Run ``command`` inside the pod's namespace and return its stdout."""
    done = await anyio.run_process(["ip", "netns", "exec", netns_name(uid), *command])
    return done.stdout.decode()


async def get_page(port: int) -> str:
    """GET http://127.0.0.1:port/, retrying until it answers 200 (bounded by WAIT)."""
    # trust_env=False: a proxy from the environment must never see this request.
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/")
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    return response.text
                await anyio.sleep(0.05)  # poll interval; the bound is fail_after


class PodHarness:
    """Creates pods on a network and removes every trace of them in :meth:`aclose`."""

    def __init__(self, network: CniNetwork) -> None:
        self.network = network
        self.uids: list[str] = []
        self.processes: list[anyio.abc.Process] = []

    def new_uid(self) -> str:
        """Return a fresh pod uid that :meth:`aclose` will clean up after."""
        uid = secrets.token_hex(8)
        self.uids.append(uid)
        return uid

    async def attach(
        self, ports: list[Port] | None = None, *, network: CniNetwork | None = None
    ) -> tuple[str, PodNetwork]:
        """Create a pod's namespace and attach it; return its uid and network."""
        uid = self.new_uid()
        path = await create_netns(uid)
        return uid, await (network or self.network).setup(uid, path, ports or [])

    async def serve(self, uid: str, port: int, directory: Path) -> None:
        """Run busybox httpd serving ``directory`` on ``port`` inside the pod."""
        command = ["ip", "netns", "exec", netns_name(uid)]
        command += ["busybox", "httpd", "-f", "-p", str(port), "-h", str(directory)]
        process = await anyio.open_process(command)
        self.processes.append(process)

    async def aclose(self) -> None:
        """Stop the processes, then tear down and delete every pod, whatever it takes."""
        with anyio.CancelScope(shield=True):
            for process in self.processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                await process.aclose()
            for uid in self.uids:
                with contextlib.suppress(Exception):
                    await self.network.teardown(uid)
                await purge_rules(uid)
                with contextlib.suppress(Exception):
                    await delete_netns(uid)


async def purge_rules(uid: str) -> None:
    """Delete by hand every nat rule naming ``uid`` and the chains they jump to."""

    async def iptables(*args: str) -> None:
        await anyio.run_process(["iptables", "-t", "nat", *args], check=False)

    for line in (await nat_rules()).splitlines():
        if line.startswith("-A ") and f'id: \\"{uid}\\"' in line:
            chain, *rule = shlex.split(line)[1:]
            await iptables("-D", chain, *rule)
            target = rule[rule.index("-j") + 1] if "-j" in rule else ""
            if target.startswith("CNI-") and "HOSTPORT" not in target:
                await iptables("-F", target)
                await iptables("-X", target)
