"""What marks a node's data dir, and the lock that says an agent is running on it.

A contract between the agent (which holds the lock while it runs), the
runtime (which names the owner of a host resource, such as a bridge, by its
data dir and agent pid) and ``shoal node reset`` (which refuses a data dir in
use). Stdlib only: ``flock`` on ``<data dir>/agent.lock``, which holds the
agent's pid. A BSD ``flock`` belongs to its open file, not to the process, so
it is never released by another open and close of the file in the holding
process (unlike ``fcntl`` record locks), and the kernel drops it when the
agent dies, however it dies. Who holds it is read from ``/proc/locks``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ._errors import Unavailable

__all__ = ["DATA_DIR_LOCK", "NODE_KEY_FILE", "DataDirLock", "agent_pid"]

DATA_DIR_LOCK = "agent.lock"
"""File in the data dir that the running agent holds locked; it contains the agent's pid."""
NODE_KEY_FILE = "node.key"
"""The node's ed25519 key in its data dir: every agent start creates it first, so it
marks a directory as a Shoal data dir."""


def agent_pid(data_dir: Path) -> int | None:
    """Return the pid of the agent running on ``data_dir``, or None if none runs.

    Reads the kernel's table of locks (``/proc/locks``) rather than probing
    with a lock of its own, which an agent starting at that instant would
    find taken. Where that table cannot be read, it probes with a shared
    lock, released at once.
    """
    path = data_dir / DATA_DIR_LOCK
    try:
        stat = path.stat()
        table = Path("/proc/locks").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _probe(path)
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue  # not a flock, or a waiter rather than the holder
        try:
            major, minor, inode = fields[5].split(":")
            held = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if held == (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino):
            return int(fields[4]) if fields[4].isdigit() else 0
    return None


def _probe(path: Path) -> int | None:
    """Tell whether ``path`` is flocked by taking a shared lock and releasing it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class DataDirLock:
    """Held by the agent for as long as it runs on a data dir: one agent per data dir.

    Args:
        data_dir: The data dir (it must exist).

    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into it.

        Raises:
            Unavailable: another agent runs on the data dir (its pid is named),
                or the lock file cannot be opened.

        """
        path = self.data_dir / DATA_DIR_LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise Unavailable(
                f"cannot open {path} ({exc.strerror or exc}): check the data dir's permissions",
                path=str(path),
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise Unavailable(
                f"another shoal agent (pid {text or '?'}) runs on data dir {self.data_dir}: "
                "stop it first, or give this one another --data-dir",
                data_dir=str(self.data_dir),
                pid=int(text) if text.isdigit() else None,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays, empty of meaning); releasing twice does nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
