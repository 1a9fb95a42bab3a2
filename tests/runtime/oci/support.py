"""Test doubles and clean-up for the real-container (runc) tests.

:class:`DirectoryImageSource` is the image store's stand-in: it serves
images whose only layer is a busybox root filesystem built from the host's
``/bin/busybox`` (Debian's busybox-static) with one symlink per applet.
:func:`force_cleanup` removes whatever a test left, even when it failed half
way: every container in the test's own runc state root, the shims it
started (found by their ``shim.json`` under the test's root), every mount
under the root, and the directories.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import anyio.lowlevel

from shoal.interfaces import ImageError
from shoal.runtime import ImageConfig, PreparedImage

WAIT = 10.0
"""Upper bound, in seconds, on any wait in these tests."""
BUSYBOX = Path("/bin/busybox")
RUNC = "runc"

PASSWD = """root:x:0:0:root:/root:/bin/sh
guest:x:405:100:guest:/home/guest:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
"""
GROUP = """root:x:0:
wheel:x:10:guest
users:x:100:
nogroup:x:65534:
"""


def missing_requirement() -> str | None:
    """Return why real containers cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "real-container tests need root (cgroups, mounts, namespaces)"
    if shutil.which(RUNC) is None:
        return "runc is not installed: apt-get install runc (make test installs it)"
    if not BUSYBOX.is_file():
        return "/bin/busybox is missing: apt-get install busybox-static"
    return None


def build_busybox_layer(directory: Path) -> Path:
    """Build a busybox root filesystem in ``directory`` (one image layer) and return it."""
    for sub in ("bin", "etc", "proc", "sys", "dev", "root", "home/guest", "var/www"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "tmp").mkdir(mode=0o1777, exist_ok=True)
    (directory / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, directory / "bin" / "busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = directory / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (directory / "etc" / "passwd").write_text(PASSWD)
    (directory / "etc" / "group").write_text(GROUP)
    (directory / "var" / "www" / "index.html").write_text("hello from busybox\n")
    os.chown(directory / "home" / "guest", 405, 100)
    return directory


class DirectoryImageSource:
    """An ImageSource serving fixed images made of unpacked layer directories.

    Args:
        images: Reference → (layers bottom first, image config).

    """

    def __init__(self, images: Mapping[str, tuple[list[Path], ImageConfig]]) -> None:
        self.images = dict(images)
        self.prepared: list[str] = []

    async def prepare(
        self, reference: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> PreparedImage:
        """Return the image, or raise ImageError naming a reference it does not have."""
        await anyio.lowlevel.checkpoint()
        if reference not in self.images:
            raise ImageError(f"image {reference!r} not found in the test image source")
        layers, config = self.images[reference]
        self.prepared.append(reference)
        digest = "sha256:" + f"{abs(hash(reference)):064x}"[-64:]
        return PreparedImage(reference=reference, digest=digest, config=config, layers=layers)


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (a fact outside this process, with no event to wait on) until true.

    Raises:
        TimeoutError: it stayed false for WAIT seconds.

    """
    with anyio.fail_after(WAIT):
        while True:
            if condition():
                return
            await anyio.sleep(0.02)


def runc(state_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run runc against ``state_root`` and return what it printed."""
    return subprocess.run(
        [RUNC, "--root", str(state_root), *args], capture_output=True, text=True, check=False
    )


def container_ids(state_root: Path) -> list[str]:
    """Return the ids of the containers in ``state_root``."""
    if not state_root.exists():
        return []
    return runc(state_root, "list", "-q").stdout.split()


def mounts_under(root: Path) -> list[str]:
    """Return the mount points at or under ``root`` in /proc/mounts."""
    prefix = str(root.resolve())
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def shim_pids(root: Path) -> list[int]:
    """Return the pids of shims holding files under ``root`` (their containers' logs)."""
    marker = str(root.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if b"_shim.py" not in (entry / "cmdline").read_bytes():
                continue
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            if any(target.startswith(marker + "/") for target in targets):
                found.append(int(entry.name))
    return found


def cgroup_dirs(container_id: str) -> list[Path]:
    """Return the cgroup directories that exist for ``container_id``."""
    roots = [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()] + [Path("/sys/fs/cgroup")]
    return [r / "shoal" / container_id for r in roots if (r / "shoal" / container_id).exists()]


def force_cleanup(root: Path, state_root: Path) -> None:
    """Remove every container, shim, mount and directory a test left (never raises)."""
    for container_id in container_ids(state_root):
        runc(state_root, "delete", "--force", container_id)
    for pid in shim_pids(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(mounts_under(root), key=len, reverse=True):
        libc.umount2(point.encode(), 2)  # MNT_DETACH
    if not mounts_under(root):
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(state_root, ignore_errors=True)
