"""The two ways a pod gets a network, behind one protocol the runtime calls.

* :class:`HostNetworking`: no network namespace of its own; the pod uses the
  node's network, answers on 127.0.0.1, and a container port *is* the node
  port (so a ``host_port`` other than the ``container_port`` cannot be
  honoured and is refused).
* :class:`BridgeNetworking`: one named network namespace per pod (see
  :mod:`._netns`), attached to a bridge through the CNI plugins by a
  :class:`~shoal.runtime.CniNetwork`; the pod's host ports are published.

:func:`pod_networking` builds one from configuration (``host`` or ``bridge``).
Attaching is idempotent (attaching again with other ports re-publishes them),
and so is detaching; a failed attach leaves no namespace behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import anyio
import anyio.lowlevel
import anyio.to_thread

from shoal.interfaces import InvalidInput, PodSpec, Port

from ._cni import CniNetwork
from ._cni_cache import AttachmentRecord, PodNetwork
from ._hostnet import HostNetworks, NetworkClaim, attachments_of, legacy_network
from ._netns import create_netns, delete_netns, netns_path

__all__ = [
    "BridgeNetworking",
    "HostNetworking",
    "NetworkMode",
    "PodNetworking",
    "check_host_ports",
    "claimed_networking",
    "pod_networking",
    "pod_ports",
]

NetworkMode = Literal["host", "bridge"]
"""How pods get their network: the node's (``host``) or a CNI bridge (``bridge``)."""

_HOST = PodNetwork(ip="127.0.0.1", gateway=None, netns_path=None)


@runtime_checkable
class PodNetworking(Protocol):
    """Gives pods a network and takes it back."""

    async def attach(self, pod_uid: str, ports: Sequence[Port]) -> PodNetwork:
        """Give the pod its network and publish its host ports.

        Raises:
            InvalidInput: the ports cannot be honoured in this mode.
            RuntimeFailure: the network could not be set up; nothing is left behind.

        """
        ...

    async def detach(self, pod_uid: str) -> None:
        """Take the pod's network away; detaching a detached pod does nothing."""
        ...

    async def lookup(self, pod_uid: str) -> PodNetwork | None:
        """Return the pod's network, or None if it has none."""
        ...

    async def attached(self) -> list[str]:
        """Return the uids of the pods that hold a network (to clean up after a crash)."""
        ...


def check_host_ports(ports: Sequence[Port]) -> None:
    """Refuse a port host networking cannot publish: a host port other than its container port.

    Raises:
        InvalidInput: such a port, named with the fix.

    """
    for port in ports:
        if port.host_port is not None and port.host_port != port.container_port:
            raise InvalidInput(
                f"host networking cannot publish container port {port.container_port} "
                f"on host port {port.host_port}: set host_port equal to container_port "
                "or use bridge networking",
                field="ports",
            )


class HostNetworking:
    """Pods share the node's network: nothing to set up, nothing to tear down."""

    async def attach(self, pod_uid: str, ports: Sequence[Port]) -> PodNetwork:
        """Return the node's loopback address.

        Raises:
            InvalidInput: a port asks for a host port other than its container port.

        """
        check_host_ports(ports)
        await anyio.lowlevel.checkpoint()
        return _HOST

    async def detach(self, pod_uid: str) -> None:
        """Do nothing: the pod used the node's network."""
        await anyio.lowlevel.checkpoint()

    async def lookup(self, pod_uid: str) -> PodNetwork | None:
        """Return the node's loopback address."""
        await anyio.lowlevel.checkpoint()
        return _HOST

    async def attached(self) -> list[str]:
        """Return no pods: none holds anything."""
        await anyio.lowlevel.checkpoint()
        return []


class BridgeNetworking:
    """A network namespace per pod, attached to a CNI bridge network.

    Args:
        network: The bridge network pods are attached to.

    """

    def __init__(self, network: CniNetwork) -> None:
        self.network = network

    async def attach(self, pod_uid: str, ports: Sequence[Port]) -> PodNetwork:
        """Create the pod's namespace and attach it; a failure leaves no namespace.

        Raises:
            InvalidInput: ``pod_uid`` is not a valid uid.
            RuntimeFailure: a host port is taken or a plugin failed.

        """
        path = await create_netns(pod_uid)
        try:
            return await self.network.setup(pod_uid, path, ports)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await delete_netns(pod_uid)
            raise

    async def detach(self, pod_uid: str) -> None:
        """Detach the pod from the bridge, then delete its namespace.

        Raises:
            RuntimeFailure: a plugin failed DEL (the namespace is kept for a retry).

        """
        await self.network.teardown(pod_uid, netns_path(pod_uid))
        await delete_netns(pod_uid)

    async def lookup(self, pod_uid: str) -> PodNetwork | None:
        """Return the pod's network from its attachment record, or None."""
        return await self.network.lookup(pod_uid)

    async def attached(self) -> list[str]:
        """Return the uids of the pods attached to the bridge."""
        return await self.network.attached()


def pod_networking(
    mode: str,
    data_dir: Path,
    *,
    bridge: str | None = None,
    subnet: str | None = None,
    registry: HostNetworks | None = None,
) -> PodNetworking:
    """Return the networking for ``mode``; bridge state lives under ``data_dir``.

    In bridge mode the data dir's network is claimed in the host's registry
    (see :mod:`._hostnet`): the one it has, the one asked for, or a free one.

    Args:
        mode: ``host`` or ``bridge``.
        data_dir: The node's data dir.
        bridge: The bridge asked for; None for the data dir's own or a free one.
        subnet: The subnet asked for; None for the data dir's own or a free one.
        registry: The host's network registry; the real one by default.

    Raises:
        InvalidInput: the mode is unknown or a bridge setting is invalid.
        Conflict: the bridge or subnet belongs to another node on this host.

    """
    if mode == "host":
        return HostNetworking()
    if mode == "bridge":
        registry = registry if registry is not None else HostNetworks()
        claim = registry.claim(data_dir, bridge=bridge, subnet=subnet)
        return BridgeNetworking(_cni_network(claim, registry))
    raise InvalidInput(f"unknown network mode {mode!r}: use 'host' or 'bridge'", field="network")


def claimed_networking(data_dir: Path, registry: HostNetworks | None = None) -> PodNetworking:
    """Return the bridge networking ``data_dir`` has claimed, or host networking if none.

    For cleaning up after a node (``shoal node reset``): it claims nothing new,
    and a data dir from before bridges were claimed gets the bridge its pods
    were attached to.
    """
    registry = registry if registry is not None else HostNetworks()
    claim = registry.owned_by(data_dir) or legacy_network(data_dir)
    if claim is None:
        return HostNetworking()
    return BridgeNetworking(_cni_network(claim, registry))


def _cni_network(claim: NetworkClaim, registry: HostNetworks) -> CniNetwork:
    async def neighbours() -> list[tuple[str, list[AttachmentRecord]]]:
        claims = await anyio.to_thread.run_sync(registry.neighbours, claim.data_dir)
        return [(str(c.data_dir), await attachments_of(c).all()) for c in claims]

    return CniNetwork(
        claim.data_dir / "cni",
        bridge=claim.bridge,
        subnet=claim.subnet,
        neighbours=neighbours,
        host_lock=registry.ports_held,
    )


def pod_ports(pod: PodSpec) -> list[Port]:
    """Return the ports of every container of the pod, in order."""
    return [port for container in pod.containers for port in container.ports]
