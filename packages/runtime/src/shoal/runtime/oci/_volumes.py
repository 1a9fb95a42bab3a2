"""Pod volumes: the node's host-path policy, and emptyDir directories of OciCliRuntime.

**Host paths** are a hole through the container's isolation, so a node mounts
them only when its agent was started with ``--allow-host-paths``; any runtime
refuses a pod that asks for one otherwise (:func:`check_host_paths`), before
it creates anything. The path must exist on the node: it is bind-mounted as
it is, never created.

**emptyDir** volumes live in the pod's directory, ``pods/<uid>/volumes/<name>``
(mode 0777, as Kubernetes makes them, so a non-root user in any container
can write), created with the pod and deleted with it. Without a
``size_limit`` it is a plain directory on the runtime root's filesystem; with
one it is a tmpfs of exactly that size mounted there, so the limit is
enforced by the kernel (a write past it fails with ENOSPC) and the contents
use memory. Removing the pod unmounts it first (``remove_tree`` never deletes
through a mount).

**File volumes** (config_map, secret, downward_api, projected) live there
too, laid out by :mod:`shoal.runtime._filevolumes` (the kubelet's ``..data``
symlink swap; a tmpfs for secret and projected volumes).

Every container that mounts a volume gets a ``bind`` mount of its source, with
``nosuid`` and ``nodev``, read-only when asked, and always for a file volume
(as in Kubernetes). The bind is not recursive: a mount below a host path is
not carried into the container, so a read-only mount has no writable part. A
mount with a ``sub_path`` binds that path of the volume, resolved when the
container is created (see :func:`~shoal.runtime._filevolumes.resolve_sub_path`).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.interfaces import (
    Container,
    Forbidden,
    InvalidInput,
    PodSpec,
    ProjectedFile,
    RuntimeFailure,
    Volume,
)
from shoal.runtime._filevolumes import prepare_file_volume, read_only, resolve_sub_path

__all__ = [
    "check_host_paths",
    "prepare_volumes",
    "volume_mounts",
    "volume_sources",
]

_MS_NOSUID = 2
_MS_NODEV = 4
_libc = ctypes.CDLL(None, use_errno=True)


def check_host_paths(pod: PodSpec, allowed: bool, *, must_exist: bool = True) -> None:
    """Refuse the pod's host path volumes unless the node allows them.

    Args:
        pod: The pod to be created.
        allowed: Whether this node's runtime was started with host paths allowed.
        must_exist: Also check that each host path exists on this machine.

    Raises:
        Forbidden: the pod has a host path volume and the node does not allow them.
        InvalidInput: a host path does not exist on the node.

    """
    for volume in pod.volumes:
        if volume.host_path is None:
            continue
        path = volume.host_path.path
        if not allowed:
            raise Forbidden(
                f"volume {volume.name!r} mounts host path {path!r}, but host path volumes are "
                "disabled on this node: start the agent with --allow-host-paths, or use an "
                "empty_dir volume",
                uid=pod.uid,
                volume=volume.name,
                path=path,
            )
        if must_exist and not os.path.exists(path):
            raise InvalidInput(
                f"volume {volume.name!r}: host path {path!r} does not exist on this node: "
                "create it first or correct volumes[].host_path.path",
                field="host_path.path",
                uid=pod.uid,
                volume=volume.name,
                path=path,
            )


def volume_sources(pod_directory: Path, volumes: Sequence[Volume]) -> dict[str, Path]:
    """Return the host path each volume is mounted from, by volume name."""
    sources: dict[str, Path] = {}
    for volume in volumes:
        if volume.host_path is not None:
            sources[volume.name] = Path(volume.host_path.path)
        else:
            sources[volume.name] = pod_directory / "volumes" / volume.name
    return sources


def _mount_tmpfs(target: Path, size: int) -> None:
    options = f"size={size},mode=0777".encode()
    flags = _MS_NOSUID | _MS_NODEV
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, options) != 0:
        code = ctypes.get_errno()
        raise RuntimeFailure(
            f"cannot mount a {size}-byte tmpfs for an empty_dir volume at {target}: "
            f"{os.strerror(code)}",
            path=str(target),
        )


def prepare_volumes(
    pod_directory: Path,
    volumes: Sequence[Volume],
    files: Mapping[str, Sequence[ProjectedFile]] | None = None,
) -> None:
    """Create the pod's emptyDir and file volumes under ``pod_directory`` (blocking).

    Args:
        pod_directory: The pod's directory.
        volumes: The pod's volumes.
        files: The files of each file volume, by volume name (none: empty).

    Raises:
        InvalidInput: a file volume's files cannot be laid out.
        RuntimeFailure: a size-limited volume's or a secret volume's tmpfs could not be mounted.

    """
    sources = volume_sources(pod_directory, volumes)
    for volume in volumes:
        directory = sources[volume.name]
        if volume.files:
            prepare_file_volume(directory, volume, (files or {}).get(volume.name, ()))
            continue
        if volume.empty_dir is None:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # mkdir's mode is cut by the umask
        if volume.empty_dir.size_limit > 0:
            _mount_tmpfs(directory, volume.empty_dir.size_limit)


def volume_mounts(
    container: Container, sources: dict[str, Path], volumes: Sequence[Volume] = ()
) -> list[dict[str, Any]]:
    """Return the OCI mounts of the container's volume mounts, parents before children.

    Args:
        container: The container whose ``volume_mounts`` to turn into mounts.
        sources: The host path of each volume, by name.
        volumes: The pod's volumes: file volumes are mounted read-only, and a
            ``sub_path`` missing in an emptyDir is created (blocking: run in a thread).

    Raises:
        RuntimeFailure: a mount names a volume that has no source, or its
            sub_path leaves the volume or does not exist.

    """
    by_name = {volume.name: volume for volume in volumes}
    mounts: list[dict[str, Any]] = []
    ordered = sorted(container.volume_mounts, key=lambda m: len(Path(m.mount_path).parts))
    for mount in ordered:
        source = sources.get(mount.name)
        if source is None:
            raise RuntimeFailure(
                f"container {container.name!r} mounts volume {mount.name!r}, which the pod "
                "does not define: add it to the pod's volumes",
                container=container.name,
                volume=mount.name,
            )
        volume = by_name.get(mount.name)
        if mount.sub_path is not None:
            scratch = volume is not None and volume.empty_dir is not None
            source = resolve_sub_path(source, mount.sub_path, volume=mount.name, create=scratch)
        locked = read_only(mount, volume) if volume is not None else mount.read_only
        mounts.append(
            {
                "destination": mount.mount_path,
                "type": "bind",
                "source": str(source),
                "options": ["bind", "ro" if locked else "rw", "nosuid", "nodev"],
            }
        )
    return mounts
