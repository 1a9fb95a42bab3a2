"""Each container's own writable root filesystem, and removing it safely.

**overlayfs** where the kernel allows: the image's unpacked layers are the
read-only lower directories (top layer first) and ``upper``/``work`` in the
container's directory take its writes, so a write never reaches the shared
layers or another container. Mounting is a single ``mount(2)`` call (through
libc, no ``mount`` process). When overlayfs is not available (no kernel
support, an upper directory on a filesystem it does not accept, a lowerdir
list over the one-page option limit), the layers are **copied** instead,
bottom first, with ``cp -a`` (which keeps owners, modes, links, devices and
extended attributes) applying each layer's whiteouts on the way: a 0/0
character device or a ``.wh.<name>`` file deletes ``<name>`` from the layers
below, an opaque directory (``trusted.overlay.opaque=y`` or a
``.wh..wh..opq`` entry) hides everything below it.

Removal never follows a mount: before a directory tree is deleted every mount
under it (the overlay, a pinned network namespace) is unmounted, and if one
cannot be, the tree is left alone and the error says so. Deleting through a
still-mounted overlay would only write whiteouts, but through a bind mount it
would delete what the mount shows.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Literal

from shoal.interfaces import RuntimeFailure

__all__ = [
    "RootfsStrategy",
    "mounts_under",
    "prepare_rootfs",
    "remove_tree",
    "unmount_all",
]

RootfsStrategy = Literal["auto", "overlay", "copy"]
"""``auto`` tries overlayfs and falls back to a copy; the others force one way."""

_MNT_DETACH = 2
_PAGE = 4096
_OPAQUE_XATTR = "trusted.overlay.opaque"
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_overlay(layers: list[Path], upper: Path, work: Path, target: Path) -> None:
    lower = ":".join(str(layer) for layer in reversed(layers))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(options) >= _PAGE:
        raise OSError(errno.E2BIG, "overlay mount options longer than one page")
    result = _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode())
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _copy_layer(layer: Path, target: Path) -> None:
    """Apply one unpacked layer on top of ``target``, honouring its whiteouts."""
    whiteouts: list[Path] = []
    for directory, names, files in os.walk(layer):
        relative = Path(directory).relative_to(layer)
        opaque = ".wh..wh..opq" in files
        with contextlib.suppress(OSError):
            opaque = opaque or os.getxattr(directory, _OPAQUE_XATTR) == b"y"
        if opaque and relative != Path("."):
            _delete(target / relative)
        for name in files + names:
            path = Path(directory) / name
            info = path.lstat()
            if name.startswith(".wh."):
                whiteouts.append(relative / name)
                if name != ".wh..wh..opq":
                    _delete(target / relative / name[4:])
            elif stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                whiteouts.append(relative / name)
                _delete(target / relative / name)
    result = subprocess.run(
        ["cp", "-a", "--", f"{layer}/.", f"{target}/"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise OSError(errno.EIO, f"cp -a {layer}: {result.stderr.strip()}")
    for whiteout in whiteouts:
        _delete(target / whiteout)


def _delete(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def prepare_rootfs(
    layers: list[Path], directory: Path, strategy: RootfsStrategy = "auto"
) -> tuple[Path, str]:
    """Give a container its own writable rootfs from ``layers`` under ``directory``.

    Blocking: call it in a worker thread.

    Args:
        layers: Unpacked image layers, bottom first.
        directory: The container's directory; ``rootfs``, ``upper`` and ``work`` go there.
        strategy: ``auto`` (overlay, else copy), ``overlay`` or ``copy``.

    Returns:
        The rootfs path and how it was made (``overlay`` or ``copy``).

    Raises:
        RuntimeFailure: the rootfs could not be made (with the reason).

    """
    rootfs = directory / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    overlay_error: OSError | None = None
    if strategy in ("auto", "overlay") and layers:
        upper, work = directory / "upper", directory / "work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        try:
            _mount_overlay(layers, upper, work, rootfs)
            return rootfs, "overlay"
        except OSError as exc:
            overlay_error = exc
            shutil.rmtree(upper, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            if strategy == "overlay":
                raise RuntimeFailure(
                    f"overlayfs mount of the image layers failed ({exc.strerror or exc}): "
                    "use the copy strategy on this host",
                    path=str(rootfs),
                ) from exc
    try:
        for layer in layers:
            _copy_layer(layer, rootfs)
    except OSError as exc:
        reason = f" (overlayfs failed first: {overlay_error.strerror})" if overlay_error else ""
        raise RuntimeFailure(
            f"copying the image layers into {rootfs} failed: {exc.strerror or exc}{reason}",
            path=str(rootfs),
        ) from exc
    return rootfs, "copy"


def mounts_under(directory: Path) -> list[Path]:
    """Return mount points at or under ``directory``, deepest first."""
    prefix = str(directory.resolve())
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            point = fields[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def unmount_all(directory: Path) -> None:
    """Unmount everything at or under ``directory`` (lazily if busy).

    Raises:
        RuntimeFailure: a mount could not be removed.

    """
    for point in mounts_under(directory):
        if _libc.umount2(os.fsencode(point), 0) == 0:
            continue
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            continue
        if _libc.umount2(os.fsencode(point), _MNT_DETACH) != 0:
            code = ctypes.get_errno()
            raise RuntimeFailure(
                f"cannot unmount {point}: {os.strerror(code)}; unmount it by hand "
                "(umount -l) and remove the pod again",
                path=str(point),
            )


def remove_tree(directory: Path) -> None:
    """Unmount everything under ``directory``, then delete it; missing is fine.

    Raises:
        RuntimeFailure: a mount under it could not be removed (nothing is deleted).

    """
    if not directory.exists():
        return
    unmount_all(directory)
    if mounts_under(directory):
        raise RuntimeFailure(
            f"{directory} still has mounts under it; not deleting through them",
            path=str(directory),
        )
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        shutil.rmtree(directory)
