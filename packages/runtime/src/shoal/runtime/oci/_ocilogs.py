"""Reading the JSON-lines log files a container's shim writes, rotated or not.

The shim appends ``{"time", "stream", "line"}`` records to ``<name>.log``
and rotates by renaming: ``.log`` → ``.log.1`` → ``.log.2`` ... (see
:mod:`._shim`). A reader therefore

* opens the current file *first* and remembers its inode, then reads the
  rotated files oldest first (skipping one that is the file it holds open,
  rotated meanwhile), then the open file to its end: that is the history,
  filtered by ``since`` and cut to the last ``tail`` lines;
* with ``follow``, keeps reading the open file; when it has nothing new it
  checks whether ``<name>.log`` is now another file (a rotation: it finishes
  the old one, which it still holds, and switches), and whether the
  container has finished. The shim writes ``exit.json`` only after the last
  line, so once the container has finished, one more read gets everything
  and the follower ends. It also ends when the pod is removed or the runtime
  closed. New lines are looked for every ``poll`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from shoal.interfaces import LogLine

__all__ = ["LogTail", "read_log"]

_CHUNK = 1 << 20


def _parse(raw: bytes) -> LogLine | None:
    try:
        record: Any = json.loads(raw)
        return LogLine.model_construct(
            time=datetime.fromisoformat(record["time"]),
            stream=str(record["stream"]),
            line=str(record["line"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class LogTail:
    """An open log file being read line by line, across rotations.

    Args:
        path: The current log file (``<name>.log``); it may not exist yet.

    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._pending = b""
        self._open()

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")  # kept open across calls
        except FileNotFoundError:
            return False
        if self._file is not None:
            self._file.close()
        self._file, self._pending = handle, b""
        self._inode = os.fstat(handle.fileno()).st_ino
        return True

    def rotated_files(self) -> list[Path]:
        """Return the rotated files, oldest first, without the one held open."""
        found: list[tuple[int, Path]] = []
        for candidate in self.path.parent.glob(f"{self.path.name}.*"):
            suffix = candidate.name.rsplit(".", 1)[1]
            if not suffix.isdigit():
                continue
            with contextlib.suppress(FileNotFoundError):
                if candidate.stat().st_ino != self._inode:
                    found.append((int(suffix), candidate))
        return [path for _, path in sorted(found, reverse=True)]

    def read(self) -> list[LogLine]:
        """Return the complete lines written since the last read (switching on rotation)."""
        lines = self._read_open()
        try:
            current = self.path.stat().st_ino
        except FileNotFoundError:
            return lines
        if current != self._inode and self._open():
            lines += self._read_open()
        return lines

    def _read_open(self) -> list[LogLine]:
        if self._file is None:
            return []
        lines: list[LogLine] = []
        while chunk := self._file.read(_CHUNK):
            *complete, self._pending = (self._pending + chunk).split(b"\n")
            lines += [line for raw in complete if (line := _parse(raw)) is not None]
        return lines

    def close(self) -> None:
        """Close the open file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _history(tail: LogTail, since: datetime | None, count: int | None) -> list[LogLine]:
    """Read everything written so far (blocking: run it in a worker thread)."""
    lines: list[LogLine] = []
    for path in tail.rotated_files():
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
            lines += [line for raw in handle if (line := _parse(raw.rstrip(b"\n")))]
    lines += tail.read()
    if since is not None:
        lines = [line for line in lines if line.time >= since]
    if count is not None:
        lines = lines[len(lines) - count :] if count > 0 else []
    return lines


async def read_log(
    path: Path,
    finished: Callable[[], bool],
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
    poll: float = 0.05,
) -> AsyncIterator[LogLine]:
    """Yield a container's log lines, then (with ``follow``) new ones until it finishes.

    Args:
        path: The container's current log file.
        finished: Returns True once no line can come any more (the container
            exited, the pod was removed or the runtime closed).
        follow: Keep yielding new lines until ``finished()``.
        tail: Only the last ``tail`` lines of history.
        since: Only lines written at or after this time.
        poll: Seconds between looks for new lines while following.

    Yields:
        The lines, oldest first.

    """
    reader = LogTail(path)
    try:
        for line in await anyio.to_thread.run_sync(_history, reader, since, tail):
            yield line
        while follow:
            fresh = reader.read()
            if not fresh:
                if finished():
                    fresh = reader.read()  # everything is written before the exit is
                    for line in fresh:
                        if since is None or line.time >= since:
                            yield line
                    return
                await anyio.sleep(poll)
            for line in fresh:
                if since is None or line.time >= since:
                    yield line
    finally:
        reader.close()
