"""Bridge networking for pods through the standard CNI plugins.

:class:`CniNetwork` attaches a pod's network namespace to a Linux bridge with
the reference plugins Debian ships in ``containernetworking-plugins``, run as
one network configuration list, in this order:

1. ``bridge`` creates the bridge (``shoal0``) with the subnet's first address
   as the pods' gateway, a veth pair with ``eth0`` in the pod, and gets the
   pod an address from ``host-local`` IPAM, whose reservations live under
   this network's own root (never in ``/var/lib/cni``).
2. ``portmap`` publishes the pod's host ports: DNAT rules in its own chain,
   for ``127.0.0.1`` unless configured otherwise, with SNAT so that
   connections from the host's loopback come back.
3. ``loopback`` brings ``lo`` up, so the pod's containers reach each other on
   ``127.0.0.1``.

Teardown runs DEL in the reverse order with the cached configuration and ADD
result (see :mod:`._cni_cache`); every DEL is idempotent, so tearing down a
pod twice, or one whose namespace is gone, succeeds and leaves no veth, no
portmap chain or rule and no IPAM reservation. By default pods get no default
route and no masquerading: they reach the bridge subnet and the host, and no
other address. ``outbound=True`` adds both, for operators who want pods to
reach the outside world. (The bridge plugin turns on ``net.ipv4.ip_forward``
as every CNI bridge does; without a default route that forwards nothing.)

Two pods cannot publish the same host port: the attachment records of this
network, those of the other nodes on the host (``neighbours``) and a test
bind on the host address catch it before any rule exists.
Plugin invocation itself, and why it is done directly, is in
:mod:`._cni_exec`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Any

import anyio

from shoal.interfaces import Conflict, InvalidInput, NotFound, Port, RuntimeFailure

from ._cni_cache import (
    AttachmentRecord,
    PodNetwork,
    RecordStore,
    check_host_ports,
    check_pod_uid,
)
from ._cni_exec import CNI_VERSION, CniCommand, PluginCall, invoke_plugin
from ._netns import is_mounted_netns

__all__ = ["DEFAULT_PLUGIN_DIRS", "CniNetwork", "check_bridge"]

DEFAULT_PLUGIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
"""Debian's plugin directory first, then the upstream default."""

Neighbours = Callable[[], Awaitable[Sequence[tuple[str, Sequence[AttachmentRecord]]]]]
"""Returns the attachment records of the other nodes on the host, each with its data dir."""

_IFNAME = "eth0"
_LINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


def check_bridge(bridge: str, subnet: str) -> ipaddress.IPv4Network:
    """Return ``subnet`` parsed, once ``bridge`` and ``subnet`` are known to be usable.

    Raises:
        InvalidInput: the bridge name is not an interface name, or the subnet
            is not an IPv4 subnet of at least four addresses.

    """
    if not _LINK_NAME.match(bridge):
        raise InvalidInput(
            f"bridge name {bridge!r} is not a valid interface name: use 1-15 letters, "
            "digits, '_', '.' or '-'",
            field="bridge",
        )
    try:
        network = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise InvalidInput(f"invalid network setting: {exc}", field="subnet") from exc
    if network.prefixlen > 30:
        raise InvalidInput(
            f"subnet {subnet} is too small: pods need at least a /30", field="subnet"
        )
    return network


class CniNetwork:
    """A bridge network for pods, driven through the CNI plugins.

    Args:
        root: Directory for this network's state: ``pods/`` (one attachment
            record per pod) and ``ipam/`` (host-local's reservations).
        bridge: Name of the Linux bridge (at most 15 characters); it also
            names the CNI network.
        subnet: IPv4 subnet of the bridge; its first address is the gateway.
        plugin_dirs: Where to find the plugins, searched in order.
        host_ip: Host address published ports are reachable on.
        outbound: Give pods a default route and masquerade their traffic
            leaving the subnet. Off by default: pods reach only the subnet
            and the host.
        timeout: Seconds one plugin invocation may take.
        neighbours: Returns the attachment records of the other nodes on this
            host (with their data dirs), so that a host port one of them
            publishes is refused here too; None when there are none to ask.
        host_lock: Held while a pod's host ports are checked against
            everyone's and its record written, so that two nodes of this host
            cannot publish one port at the same instant.

    Raises:
        InvalidInput: a setting is not valid; the message names it.

    """

    def __init__(
        self,
        root: Path,
        *,
        bridge: str = "shoal0",
        subnet: str = "198.18.0.0/24",
        plugin_dirs: Sequence[Path] = DEFAULT_PLUGIN_DIRS,
        host_ip: str = "127.0.0.1",
        outbound: bool = False,
        timeout: float = 30.0,
        neighbours: Neighbours | None = None,
        host_lock: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        network = check_bridge(bridge, subnet)
        try:
            ipaddress.IPv4Address(host_ip or "0.0.0.0")
        except ValueError as exc:
            raise InvalidInput(f"invalid network setting: {exc}", field="host_ip") from exc
        self.root = root
        self.bridge = bridge
        self.subnet = network
        self.gateway = str(network.network_address + 1)
        self.plugin_dirs = tuple(plugin_dirs)
        self.host_ip = host_ip
        self.outbound = outbound
        self.timeout = timeout
        self.neighbours = neighbours
        self.host_lock = host_lock
        self._records = RecordStore(root / "pods")
        self._lock = anyio.Lock()

    @property
    def name(self) -> str:
        """Return the CNI network name (the bridge's name)."""
        return self.bridge

    def network_config(self) -> dict[str, Any]:
        """Return the CNI network configuration list this network adds pods with."""
        ipam: dict[str, Any] = {
            "type": "host-local",
            "ranges": [[{"subnet": str(self.subnet), "gateway": self.gateway}]],
            "routes": [{"dst": "0.0.0.0/0"}] if self.outbound else [],
            "dataDir": str(self.root / "ipam"),
        }
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": self.outbound,
            "ipam": ipam,
        }
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
        return {
            "cniVersion": CNI_VERSION,
            "name": self.name,
            "plugins": [bridge, portmap, {"type": "loopback"}],
        }

    def port_mappings(self, ports: Sequence[Port]) -> list[dict[str, Any]]:
        """Return portmap's ``portMappings`` for the ports that have a host port."""
        return [
            {
                "hostPort": port.host_port,
                "containerPort": port.container_port,
                "protocol": port.protocol,
                "hostIP": self.host_ip,
            }
            for port in ports
            if port.host_port is not None
        ]

    async def setup(self, pod_uid: str, netns_path: Path, ports: Sequence[Port]) -> PodNetwork:
        """Attach the pod's network namespace: ``eth0`` on the bridge, ports published.

        Setting up a pod that is attached already with the same namespace and
        ports returns its network once CHECK confirms it; otherwise the old
        attachment is torn down first.

        Args:
            pod_uid: The instance uid (the CNI container id).
            netns_path: The pod's network namespace (e.g. from ``create_netns``).
            ports: The pod's ports; those with a host port are published.

        Returns:
            The pod's address, gateway and namespace.

        Raises:
            InvalidInput: ``pod_uid`` is not a valid uid.
            RuntimeFailure: a host port is taken (by another pod or a host
                process), or a plugin failed; nothing is left behind.

        """
        check_pod_uid(pod_uid)
        mappings = self.port_mappings(ports)
        async with self._lock:
            old = await self._records.load(pod_uid)
            if old is not None:
                if old.result is not None and (old.netns_path, old.port_mappings) == (
                    str(netns_path),
                    mappings,
                ):
                    try:
                        await self._run_chain("CHECK", old)
                    except RuntimeFailure:
                        pass
                    else:
                        return old.attachment(self.bridge)
                await self._delete(old)
            record = AttachmentRecord(
                pod_uid, str(netns_path), _IFNAME, self.network_config(), mappings
            )
            held = self.host_lock() if self.host_lock is not None and mappings else nullcontext()
            async with held:
                others = [r for r in await self._records.all() if r.pod_uid != pod_uid]
                elsewhere = await self.neighbours() if self.neighbours and mappings else []
                check_host_ports(mappings, others, elsewhere=elsewhere)
                await self._records.save(record)  # before ADD: a crash still leaves the undo
            try:
                result = await self._run_chain("ADD", record)
                record = dataclasses.replace(record, result=result)
                network = record.attachment(self.bridge)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._delete(record, best_effort=True)
                raise
            await self._records.save(record)
            return network

    async def check(self, pod_uid: str) -> PodNetwork:
        """Confirm with CNI CHECK that the pod's attachment is intact.

        Raises:
            NotFound: the pod is not attached to this network.
            RuntimeFailure: a plugin found the attachment broken.

        """
        check_pod_uid(pod_uid)
        record = await self._records.load(pod_uid)
        if record is None or record.result is None:
            raise NotFound(f"pod {pod_uid} is not attached to network {self.name}")
        await self._run_chain("CHECK", record)
        return record.attachment(self.bridge)

    async def teardown(
        self, pod_uid: str, netns_path: Path | None = None, ports: Sequence[Port] = ()
    ) -> None:
        """Detach the pod: DEL in reverse order; tearing down a detached pod does nothing.

        The cached record of the pod's ADD is used when there is one (also
        after an agent restart); without it the current configuration is used,
        which still removes what the plugins keyed by the pod uid.

        Args:
            pod_uid: The instance uid.
            netns_path: The pod's namespace, if there is no record; it may be gone.
            ports: The pod's ports, if there is no record.

        Raises:
            InvalidInput: ``pod_uid`` is not a valid uid.
            RuntimeFailure: a plugin failed DEL; the record is kept for a retry.

        """
        check_pod_uid(pod_uid)
        async with self._lock:
            record = await self._records.load(pod_uid)
            if record is None:
                netns = "" if netns_path is None else str(netns_path)
                mappings = self.port_mappings(ports)
                record = AttachmentRecord(pod_uid, netns, _IFNAME, self.network_config(), mappings)
            await self._delete(record)

    async def lookup(self, pod_uid: str) -> PodNetwork | None:
        """Return the pod's network from its record, or None if it is not attached."""
        record = await self._records.load(check_pod_uid(pod_uid))
        if record is None or record.result is None:
            return None
        return record.attachment(self.bridge)

    async def attached(self) -> list[str]:
        """Return the uids of the pods this network has records of (also half-attached)."""
        return [record.pod_uid for record in await self._records.all()]

    async def remove_bridge(self) -> None:
        """Delete the bridge; deleting a missing one does nothing.

        Raises:
            Conflict: pods are still attached.
            RuntimeFailure: ``ip link delete`` failed.

        """
        if pods := await self.attached():
            raise Conflict(f"pods still attached to {self.bridge}: {', '.join(pods)}")
        if not await anyio.Path("/sys/class/net", self.bridge).exists():
            return
        done = await anyio.run_process(["ip", "link", "delete", self.bridge], check=False)
        if done.returncode != 0 and await anyio.Path("/sys/class/net", self.bridge).exists():
            message = done.stderr.decode(errors="replace").strip()
            raise RuntimeFailure(f"cannot delete bridge {self.bridge}: {message}")

    async def _delete(self, record: AttachmentRecord, *, best_effort: bool = False) -> None:
        """Run DEL over every plugin in reverse, then forget the pod.

        Every plugin gets its DEL even when one fails, so as much as possible
        is freed. After a failure the record stays, so that a later teardown
        (or the runtime's clean-up of :meth:`attached` pods) retries, and the
        first failure is raised unless ``best_effort``: undoing a failed ADD
        must not hide why ADD failed.
        """
        failures: list[RuntimeFailure] = []
        await self._run_chain("DEL", record, failures=failures)
        if not failures:
            await self._records.remove(record.pod_uid)
        elif not best_effort:
            raise failures[0]

    async def _run_chain(
        self,
        command: CniCommand,
        record: AttachmentRecord,
        *,
        failures: list[RuntimeFailure] | None = None,
    ) -> dict[str, Any]:
        """Invoke every plugin of the record's network list, as libcni does.

        ADD runs in order, each plugin getting the previous one's result;
        CHECK runs in order and DEL in reverse, each with the cached result.
        """
        network = record.network
        plugins: list[dict[str, Any]] = list(network["plugins"])
        netns = record.netns_path
        if command == "DEL" and netns and not is_mounted_netns(Path(netns)):
            # The namespace is gone (maybe a stale file is left): DEL without
            # one, as the CNI spec allows, still frees addresses and port rules.
            netns = ""
        call = PluginCall(command, record.pod_uid, netns, record.ifname)
        previous = record.result
        for plugin in reversed(plugins) if command == "DEL" else plugins:
            config = {**plugin, "cniVersion": network["cniVersion"], "name": network["name"]}
            if previous is not None:
                config["prevResult"] = previous
            if plugin.get("capabilities", {}).get("portMappings"):
                config["runtimeConfig"] = {"portMappings": record.port_mappings}
            try:
                result = await invoke_plugin(
                    config, call, self.plugin_dirs, time_limit=self.timeout
                )
            except RuntimeFailure as failure:
                if command == "CHECK" and _false_alarm(plugin, failure, record.result):
                    continue
                if failures is None:
                    raise
                failures.append(failure)
                continue
            if command == "ADD" and result is not None:
                previous = result
        return previous or {}


def _false_alarm(plugin: dict[str, Any], failure: RuntimeFailure, result: Any) -> bool:
    """Return whether a CHECK failure is portmap's known false alarm.

    portmap before 1.2 (Debian ships 1.1) checks for ip6tables rules even
    for a pod without an IPv6 address, which it never created, and so fails
    CHECK on every IPv4-only pod (containernetworking/plugins#819).
    """
    ips = result.get("ips", []) if isinstance(result, dict) else []
    has_ipv6 = any(":" in str(entry.get("address", "")) for entry in ips)
    return plugin.get("type") == "portmap" and "ipv6" in failure.message and not has_ipv6
