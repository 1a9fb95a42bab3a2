"""CriRuntime: pods on containerd (or any CRI v1 runtime) through the Kubernetes CRI gRPC API.

:class:`CriRuntime` is the :class:`~shoal.interfaces.ContainerRuntime`;
:class:`CriImages` the node's images in the runtime's own store;
:class:`CriClient` and :func:`check_cri` reach an endpoint and check that it
speaks CRI v1. The setup helpers write a containerd config and the CNI
network for Shoal, and build the pause image offline.
"""

from ._client import DEFAULT_ENDPOINT, CriClient, check_cri
from ._cri import CriRuntime
from ._images import CriImages
from ._pause import PAUSE_IMAGE, write_pause_archive
from ._setup import (
    check_containerd,
    cni_conflist,
    containerd_config,
    import_image,
    write_cni_conflist,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "PAUSE_IMAGE",
    "CriClient",
    "CriImages",
    "CriRuntime",
    "check_containerd",
    "check_cri",
    "cni_conflist",
    "containerd_config",
    "import_image",
    "write_cni_conflist",
    "write_pause_archive",
]
