"""The network hook :class:`~shoal.runtime.OciCliRuntime` calls, and what it needs back.

Without a hook a pod uses the host's network: no network namespace is made,
every container of the pod shares the node's, and the pod's address is
127.0.0.1. With a hook (e.g. a CNI bridge) the runtime calls ``attach``
before it creates the first container and puts the returned namespace path
into every container's ``config.json``, so the containers of a pod share one
network namespace that outlives each of them; ``detach`` runs when the pod
is removed (also after an agent restart: the record says it was attached).
The protocols are structural: any object with these methods fits, such as
the runtime package's ``BridgeNetworking`` and ``HostNetworking``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from shoal.interfaces import PodSpec, Port

__all__ = ["NetworkHook", "pod_ports"]


class _Attachment(Protocol):
    """What a network hook gives a pod."""

    @property
    def ip(self) -> str | None:
        """The pod's address, if it has one."""
        ...

    @property
    def netns_path(self) -> Path | None:
        """The network namespace its containers join; None to share the host's."""
        ...


class NetworkHook(Protocol):
    """Gives pods a network (e.g. a CNI bridge); ``None`` means host networking."""

    async def attach(self, pod_uid: str, ports: Sequence[Port]) -> _Attachment:
        """Give the pod a network namespace and publish its ports."""
        ...

    async def detach(self, pod_uid: str) -> None:
        """Undo attach; idempotent."""
        ...


def pod_ports(pod: PodSpec) -> list[Port]:
    """Return the ports of every container of the pod."""
    return [port for container in pod.containers for port in container.ports]
