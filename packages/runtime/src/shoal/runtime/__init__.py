"""Shoal's container runtimes.

:class:`MockRuntime` runs pods in memory, deterministically, with injectable
faults (:class:`Fault`, :class:`FaultKind`, :class:`Faults`); it is the fake
that tests and benchmarks use. :class:`OciCliRuntime` runs real containers
through runc (or crun, youki), with an optional :class:`NetworkHook`.

Images: :class:`ImageStore` pulls (OCI distribution API), imports (OCI
layouts, ``docker save``), verifies, caches and unpacks images; it is the
:class:`ImageSource` that gives a runtime a :class:`PreparedImage`.

Pod networking: :func:`pod_networking` picks :class:`HostNetworking` or
:class:`BridgeNetworking` (a network namespace per pod, attached to a bridge
by :class:`CniNetwork` through the CNI plugins, host ports published). Each
data dir's bridge and subnet are its own, claimed in the host's registry
(:class:`HostNetworks`), so two nodes on one host never collide.

:class:`CriRuntime` runs pods on containerd (or another CRI v1 runtime)
through the Kubernetes CRI; :class:`CriImages` are its images. They load on
first use (gRPC and the CRI messages are not needed by the other runtimes).
"""

from typing import TYPE_CHECKING

from shoal.interfaces import lazy_getattr

from .images._image_api import ImageConfig, ImageSource, PreparedImage
from .images._images import LOOPBACK_REGISTRIES, ImageStore
from .images._pull import ProgressCallback, PullProgress
from .images._reference import ImageReference, parse_reference
from .images._registry import check_registry_host, registry_tls
from .mock._faults import Fault, FaultKind, Faults
from .mock._mock import MockRuntime
from .net._cni import DEFAULT_PLUGIN_DIRS, CniNetwork
from .net._cni_cache import PodNetwork
from .net._hostnet import HOST_NETWORKS_DIR, HostNetworks, NetworkClaim
from .net._netns import create_netns, delete_netns, netns_exists, netns_name, netns_path
from .net._podnet import (
    BridgeNetworking,
    HostNetworking,
    NetworkMode,
    PodNetworking,
    claimed_networking,
    pod_networking,
    pod_ports,
)
from .oci._oci import NetworkHook, OciCliRuntime

if TYPE_CHECKING:
    from .cri._cri import CriRuntime
    from .cri._images import CriImages

_LAZY = {"CriRuntime": ".cri._cri", "CriImages": ".cri._images"}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_PLUGIN_DIRS",
    "HOST_NETWORKS_DIR",
    "LOOPBACK_REGISTRIES",
    "BridgeNetworking",
    "CniNetwork",
    "CriImages",
    "CriRuntime",
    "Fault",
    "FaultKind",
    "Faults",
    "HostNetworking",
    "HostNetworks",
    "ImageConfig",
    "ImageReference",
    "ImageSource",
    "ImageStore",
    "MockRuntime",
    "NetworkClaim",
    "NetworkHook",
    "NetworkMode",
    "OciCliRuntime",
    "PodNetwork",
    "PodNetworking",
    "PreparedImage",
    "ProgressCallback",
    "PullProgress",
    "check_registry_host",
    "claimed_networking",
    "create_netns",
    "delete_netns",
    "netns_exists",
    "netns_name",
    "netns_path",
    "parse_reference",
    "pod_networking",
    "pod_ports",
    "registry_tls",
]
