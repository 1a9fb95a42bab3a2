"""Finding a node's standby shims on the host, by the pipe they wait on (tests only).

A standby shim has detached (its parent is init), so it is a process's when
the pipe it reads its container from (its stdin) is one that process holds.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def pipes_of(pid: int | str) -> set[str]:
    """Return the pipes (``pipe:[inode]``) among the open files of process ``pid`` (or "self")."""
    pipes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("pipe:"):
                    pipes.add(target)
    return pipes


def standby_shims(holder: int | str | None = None) -> set[int]:
    """Return the pids of the standby shims on the host (those of process ``holder``, if given)."""
    held = None if holder is None else pipes_of(holder)
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stdin = os.readlink(entry / "fd" / "0")
        except OSError:
            continue
        if b"--standby" in cmdline and (held is None or stdin in held):
            found.add(int(entry.name))
    return found
