"""File volumes on disk, the kubelet way: atomic updates, tmpfs for secrets, sub_path mounts.

A volume whose files Shoal works out (config_map, secret, downward_api,
projected: ``Volume.files``) is a directory laid out as the kubelet's
``AtomicWriter`` lays it out::

    <volume>/
      ..2026_12_06_17_51_17.x8Kq2/    the files, with their modes (dirs 0755)
        app.properties
        conf/log.xml
      ..data -> ..2026_12_06_17_51_17.x8Kq2
      app.properties -> ..data/app.properties
      conf -> ..data/conf

:func:`write_files` replaces the whole set at once: it writes a new
timestamped directory, points a new ``..data_tmp`` symlink at it and renames
that over ``..data`` (``rename`` is atomic), then adds the top-level symlinks
of new entries, drops those of entries that are gone and deletes the old
directory. A reader that resolves ``..data`` once sees every old file or every
new one; a path resolved through the top-level symlinks follows the swap.

Secret and projected volumes (which may hold secrets) live on a tmpfs of
their own when the runtime is root, so their contents never touch the disk;
it is sized for the old and the new set side by side during an update and
grown (remounted) when a larger set comes.

:func:`resolve_sub_path` turns a mount's ``sub_path`` into the host path to
bind: through the ``..data`` symlink for a file volume (so such a mount keeps
what it had when the container was created, as in Kubernetes), creating
missing directories in an emptyDir (as the kubelet does). A bound file keeps
its contents when its directory is deleted (the mount holds the inode), but a
bound directory would be emptied: so a timestamped directory that a sub_path
mount binds into is *pinned* (named in ``..pinned/``) and outlives updates,
until the pod goes. Every step is
resolved and checked to stay inside the volume, so a symlink a container left
in an emptyDir cannot point a later mount at the host's files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from shoal.interfaces import (
    InvalidInput,
    ProjectedFile,
    RuntimeFailure,
    Volume,
    VolumeMount,
)

__all__ = [
    "DATA_LINK",
    "check_files",
    "memory_backed",
    "prepare_file_volume",
    "read_only",
    "resolve_sub_path",
    "update_file_volume",
    "write_files",
]

DATA_LINK = "..data"
"""The symlink naming the directory that holds a file volume's current files."""
_DATA_TMP = "..data_tmp"
_PINNED = "..pinned"
_MIB = 1 << 20
_SECRET_MAX = _MIB
"""The largest Secret Kubernetes (and Shoal) accepts."""
_TMPFS_SLACK = 256 * 1024
"""Room for directories and inodes beyond the files' bytes."""
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_libc = ctypes.CDLL(None, use_errno=True)


def memory_backed(volume: Volume) -> bool:
    """Return whether the volume's files belong on a tmpfs (secret or projected)."""
    return volume.secret is not None or volume.projected is not None


def read_only(mount: VolumeMount, volume: Volume) -> bool:
    """Return whether the mount is read-only: asked so, or a file volume (always, as in K8s)."""
    return mount.read_only or volume.files


def check_files(volume: str, files: Sequence[ProjectedFile]) -> None:
    """Check that the files can be laid out in one directory.

    Raises:
        InvalidInput: a path is absolute, has '..', starts with '..', is given twice,
            or is both a file and the directory of another.

    """
    seen: set[str] = set()
    for file in files:
        parts = file.path.split("/")
        if (
            not file.path
            or file.path.startswith("/")
            or file.path.startswith("..")
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise InvalidInput(
                f"volume {volume!r}: file path {file.path!r} must be relative, without '.' "
                "or '..' parts, and not start with '..' (e.g. 'conf/app.properties')",
                volume=volume,
                path=file.path,
            )
        if file.path in seen:
            raise InvalidInput(
                f"volume {volume!r}: file path {file.path!r} is given twice",
                volume=volume,
                path=file.path,
            )
        seen.add(file.path)
    for file in files:
        parts = file.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in seen:
                raise InvalidInput(
                    f"volume {volume!r}: {parent!r} is a file and also the directory of "
                    f"{file.path!r}: rename one of them",
                    volume=volume,
                    path=file.path,
                )


def _payload_bytes(files: Sequence[ProjectedFile]) -> int:
    return sum(len(file.data) for file in files)


def _tmpfs_size(files: Sequence[ProjectedFile]) -> int:
    # Old and new sets coexist while an update swaps them, and one pinned set may stay.
    return 3 * max(_payload_bytes(files), _SECRET_MAX) + _TMPFS_SLACK


def _mount_tmpfs(target: Path, size: int, *, remount: bool = False) -> None:
    flags = _MS_NOSUID | _MS_NODEV | (_MS_REMOUNT if remount else 0)
    options = f"size={size},mode=0755".encode()
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, options) != 0:
        code = ctypes.get_errno()
        raise RuntimeFailure(
            f"cannot mount a {size}-byte tmpfs for a secret volume at {target}: "
            f"{os.strerror(code)}",
            path=str(target),
        )


def _is_mount_point(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.ismount(path)
    return False


def prepare_file_volume(directory: Path, volume: Volume, files: Sequence[ProjectedFile]) -> None:
    """Create a file volume's directory (a tmpfs for secrets, as root) with its files (blocking).

    Raises:
        InvalidInput: the files cannot be laid out (see :func:`check_files`).
        RuntimeFailure: the tmpfs could not be mounted.

    """
    check_files(volume.name, files)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    if memory_backed(volume) and os.geteuid() == 0 and not _is_mount_point(directory):
        _mount_tmpfs(directory, _tmpfs_size(files))
    write_files(directory, files)


def update_file_volume(directory: Path, volume: Volume, files: Sequence[ProjectedFile]) -> None:
    """Swap a file volume's files for ``files`` at once, growing its tmpfs if needed (blocking).

    Raises:
        InvalidInput: the files cannot be laid out (see :func:`check_files`).
        RuntimeFailure: the tmpfs could not be grown.

    """
    check_files(volume.name, files)
    if memory_backed(volume) and _is_mount_point(directory):
        stats = os.statvfs(directory)
        needed = _tmpfs_size(files)
        if stats.f_blocks * stats.f_frsize < needed:
            _mount_tmpfs(directory, needed, remount=True)
    write_files(directory, files)


def write_files(directory: Path, files: Sequence[ProjectedFile]) -> None:
    """Replace the files under ``directory`` with ``files`` in one atomic swap (blocking).

    ``directory`` must exist; the paths must have passed :func:`check_files`.
    """
    data_link = directory / DATA_LINK
    stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S")
    fresh = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=directory))
    fresh.chmod(0o755)
    for file in files:
        target = fresh / file.path
        _make_dirs(fresh, target.parent)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(descriptor, file.data)
            os.fchmod(descriptor, file.mode)
        finally:
            os.close(descriptor)
    temporary = directory / _DATA_TMP
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(fresh.name)
    os.replace(temporary, data_link)  # the swap: atomic
    entries = {file.path.split("/", 1)[0] for file in files}
    for entry in sorted(entries):
        link = directory / entry
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{entry}")
    for link in directory.iterdir():
        if link.name.startswith(".."):
            continue
        if link.is_symlink() and link.name not in entries:
            link.unlink()
    pinned = directory / _PINNED
    keep = {fresh.name, DATA_LINK, _PINNED}
    if pinned.is_dir():
        keep.update(pin.name for pin in pinned.iterdir())
    for leftover in directory.iterdir():
        # The previous set, and any a crash left half-written.
        if leftover.name.startswith("..") and leftover.name not in keep:
            if not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _make_dirs(root: Path, directory: Path) -> None:
    """Create ``directory`` (under ``root``) and its parents with mode 0755."""
    missing: list[Path] = []
    while directory != root and not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        path.chmod(0o755)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_sub_path(source: Path, sub_path: str, *, volume: str, create: bool) -> Path:
    """Return the host path to bind for ``sub_path`` of the volume at ``source`` (blocking).

    Each part is resolved in turn (symlinks included) and must stay inside the
    volume. With ``create``, missing directories are made (mode 0777, as an
    emptyDir's own).

    Raises:
        RuntimeFailure: the path leaves the volume, or does not exist (and is not created).

    """
    root = Path(os.path.realpath(source))
    current = root
    for part in sub_path.split("/"):
        if part in ("", "."):
            continue
        candidate = current / part
        if create and not os.path.lexists(candidate):
            candidate.mkdir(mode=0o777)
            candidate.chmod(0o777)
        current = Path(os.path.realpath(candidate))
        if not _inside(current, root):
            raise RuntimeFailure(
                f"sub_path {sub_path!r} of volume {volume!r} leads outside the volume "
                "(through a symlink): refusing to mount it",
                volume=volume,
                sub_path=sub_path,
            )
    if not current.exists():
        raise RuntimeFailure(
            f"sub_path {sub_path!r} does not exist in volume {volume!r}: correct "
            "volume_mounts[].sub_path or add the key or file it names",
            volume=volume,
            sub_path=sub_path,
        )
    if current.is_dir() and current != root:
        top = current.relative_to(root).parts[0]
        if top.startswith("..") and top != _PINNED:  # inside a file volume's set: pin it
            (root / _PINNED).mkdir(mode=0o700, exist_ok=True)
            (root / _PINNED / top).touch()
    return current
