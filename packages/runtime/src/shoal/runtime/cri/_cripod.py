"""Shoal pods as CRI objects, and CRI statuses as Shoal's.

A pod is one CRI **pod sandbox** (its network namespace, held by the pause
container) and one CRI **container** per Shoal container. Everything needed
to find them again after a restart lives in the runtime, as labels:

* ``io.shoal.runtime``: the owner (one value per agent, so two agents sharing
  a containerd never adopt each other's pods, and pods started by other CRI
  clients are never touched);
* ``io.shoal.pod-uid``: the instance uid;
* on containers, ``io.shoal.container`` (its name in the pod) and
  ``io.shoal.index`` (its place in the pod's order);

and the pod spec itself as the sandbox annotation ``io.shoal.pod-spec``, so
an exited container can be created again without the caller's help.

Mapping (Kubernetes' own semantics, which containerd implements):
``command``/``args`` are CRI's ``command``/``args`` (entrypoint and cmd);
``limits.cpu`` is a CFS quota over a 100 ms period, ``requests.cpu`` (or the
limit) CPU shares, ``limits.memory`` the memory limit; volumes are bind
mounts of the pod directory's emptyDirs or of host paths; host ports are the
sandbox's port mappings, published by containerd's CNI ``portmap`` plugin.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from shoal.interfaces import (
    Container,
    ContainerState,
    ContainerStatus,
    InvalidInput,
    PodSpec,
    RuntimeFailure,
)
from shoal.runtime._filevolumes import read_only, resolve_sub_path

from ._pb import cri_api_pb2 as pb

__all__ = [
    "LABEL_CONTAINER",
    "LABEL_INDEX",
    "LABEL_OWNER",
    "LABEL_UID",
    "SPEC_ANNOTATION",
    "container_config",
    "container_status",
    "is_init",
    "ordered",
    "sandbox_config",
]

LABEL_OWNER = "io.shoal.runtime"
LABEL_UID = "io.shoal.pod-uid"
LABEL_CONTAINER = "io.shoal.container"
LABEL_INDEX = "io.shoal.index"
SPEC_ANNOTATION = "io.shoal.pod-spec"

CPU_PERIOD = 100_000
"""CFS period in microseconds (100 ms), as the runc runtime uses."""

_STATES = {
    pb.CONTAINER_CREATED: ContainerState.CREATED,
    pb.CONTAINER_RUNNING: ContainerState.RUNNING,
    pb.CONTAINER_EXITED: ContainerState.EXITED,
    pb.CONTAINER_UNKNOWN: ContainerState.UNKNOWN,
}


def sandbox_config(
    pod: PodSpec,
    *,
    owner: str,
    log_directory: Path,
    cgroup_parent: str,
    host_network: bool,
    host_ip: str,
) -> pb.PodSandboxConfig:
    """Return the sandbox of ``pod``: its metadata, labels, spec, network and ports.

    Raises:
        InvalidInput: with host networking, a port asks for a host port other
            than its container port.

    """
    mappings = []
    for container in pod.containers:
        for port in container.ports:
            if port.host_port is None:
                continue
            if host_network and port.host_port != port.container_port:
                raise InvalidInput(
                    f"host networking cannot publish container port {port.container_port} "
                    f"on host port {port.host_port}: set host_port equal to container_port "
                    "or use bridge networking",
                    field="ports",
                )
            mappings.append(
                pb.PortMapping(
                    protocol=pb.UDP if port.protocol == "udp" else pb.TCP,
                    container_port=port.container_port,
                    host_port=port.host_port,
                    host_ip=host_ip,
                )
            )
    mode = pb.NODE if host_network else pb.POD
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=pod.name, uid=pod.uid, namespace=pod.namespace, attempt=0
        ),
        hostname="" if host_network else pod.name[:63],
        log_directory=str(log_directory),
        port_mappings=mappings,
        labels={LABEL_OWNER: owner, LABEL_UID: pod.uid, "io.shoal.workload": pod.workload},
        # Not the files: a Secret's data has no place in the runtime's metadata.
        annotations={SPEC_ANNOTATION: pod.model_dump_json(exclude={"files"})},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=mode, pid=pb.CONTAINER)
            ),
        ),
    )


def container_config(
    pod: PodSpec,
    container: Container,
    key: str,
    *,
    owner: str,
    volume_sources: dict[str, Path],
    host_network: bool = False,
    attempt: int = 0,
) -> pb.ContainerConfig:
    """Return the CRI config of one of the pod's containers (blocking: sub_paths are resolved).

    Args:
        pod: The pod.
        container: One of its containers or init containers.
        key: Its place: ``"0"``, ``"1"``... for containers, ``"init-0"``... for init containers.
        owner: The runtime's owner label.
        volume_sources: The host path of each volume, by name.
        host_network: Whether the pod uses the node's network namespace.
        attempt: How many times it was created before.

    Raises:
        RuntimeFailure: a mount names a volume the pod does not define.

    """
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=container.name, attempt=attempt),
        image=pb.ImageSpec(image=container.image),
        command=container.command or [],
        args=container.args or [],
        working_dir=container.working_dir or "",
        envs=[pb.KeyValue(key=name, value=value.encode()) for name, value in container.env.items()],
        mounts=_mounts(container, pod, volume_sources),
        labels={
            LABEL_OWNER: owner,
            LABEL_UID: pod.uid,
            LABEL_CONTAINER: container.name,
            LABEL_INDEX: key,
        },
        log_path=f"{container.name}.log",
        linux=pb.LinuxContainerConfig(
            resources=_resources(container),
            # Each container is PID 1 of its own PID namespace, as with runc (and
            # Kubernetes' default); the network is the pod's.
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(
                    network=pb.NODE if host_network else pb.POD, pid=pb.CONTAINER, ipc=pb.POD
                )
            ),
        ),
    )


def _mounts(container: Container, pod: PodSpec, sources: dict[str, Path]) -> list[pb.Mount]:
    """Return the container's bind mounts, parents first (blocking: a sub_path is resolved).

    File volumes are always read-only (as in Kubernetes); a ``sub_path`` binds
    that path of the volume as it is now (see
    :func:`~shoal.runtime._filevolumes.resolve_sub_path`).
    """
    volumes = {volume.name: volume for volume in pod.volumes}
    mounts = []
    for mount in sorted(container.volume_mounts, key=lambda m: len(Path(m.mount_path).parts)):
        source = sources.get(mount.name)
        volume = volumes.get(mount.name)
        if source is None or volume is None:
            raise RuntimeFailure(
                f"container {container.name!r} mounts volume {mount.name!r}, which the pod "
                "does not define: add it to the pod's volumes",
                container=container.name,
                volume=mount.name,
            )
        if mount.sub_path is not None:
            scratch = volume.empty_dir is not None
            source = resolve_sub_path(source, mount.sub_path, volume=mount.name, create=scratch)
        mounts.append(
            pb.Mount(
                container_path=mount.mount_path,
                host_path=str(source),
                readonly=read_only(mount, volume),
                propagation=pb.PROPAGATION_PRIVATE,
            )
        )
    return mounts


def _resources(container: Container) -> pb.LinuxContainerResources:
    limits, requests = container.resources.limits, container.resources.requests
    resources = pb.LinuxContainerResources()
    if limits.cpu > 0:
        resources.cpu_period = CPU_PERIOD
        resources.cpu_quota = max(1000, limits.cpu * CPU_PERIOD // 1000)
    share_basis = requests.cpu or limits.cpu
    if share_basis > 0:
        resources.cpu_shares = max(2, share_basis * 1024 // 1000)
    if limits.memory > 0:
        resources.memory_limit_in_bytes = limits.memory
    return resources


def _time(nanoseconds: int) -> datetime | None:
    if nanoseconds <= 0:
        return None
    return datetime.fromtimestamp(nanoseconds / 1e9, UTC)


def container_status(name: str, status: pb.ContainerStatus) -> ContainerStatus:
    """Return Shoal's status of a container from CRI's."""
    state = _STATES.get(status.state, ContainerState.UNKNOWN)
    message = status.reason if status.reason == "OOMKilled" else status.message
    return ContainerStatus(
        name=name,
        id=status.id,
        state=state,
        exit_code=status.exit_code if state == ContainerState.EXITED else None,
        started_at=_time(status.started_at),
        finished_at=_time(status.finished_at) if state == ContainerState.EXITED else None,
        message=message,
    )


def is_init(container: pb.Container) -> bool:
    """Return whether a CRI container is one of the pod's init containers."""
    return container.labels.get(LABEL_INDEX, "").startswith("init-")


def ordered(containers: Sequence[pb.Container]) -> list[pb.Container]:
    """Return a pod's CRI containers (init ones first) in the pod's order, the newest of each."""
    newest: dict[str, pb.Container] = {}
    for container in sorted(containers, key=lambda c: c.created_at):
        newest[container.labels.get(LABEL_INDEX, container.metadata.name)] = container

    def place(container: pb.Container) -> tuple[int, int]:
        key = container.labels.get(LABEL_INDEX, "0")
        init, _, number = key.rpartition("-")
        return (0 if init else 1, int(number) if number.isdigit() else 0)

    return sorted(newest.values(), key=place)
