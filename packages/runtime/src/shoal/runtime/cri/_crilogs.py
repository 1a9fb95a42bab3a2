"""Reading the log files a CRI runtime writes for a container.

The CRI log format (kubelet's, which containerd and CRI-O write) is one
record per line::

    2016-10-06T00:17:09.669794202Z stdout F the text of the line
    2016-10-06T00:17:09.669794203Z stderr P the first part of a long li

``<RFC 3339 time with nanoseconds> <stream> <tags> <text>``. The tag ``P``
marks a partial record: the runtime split a line longer than its buffer
(containerd's ``max_container_log_line_size``) and the next records of the
same stream continue it, up to one tagged ``F`` (full). Tags may carry more
flags after a colon (``F:x``); only the first letter matters here. A reader
joins the parts of each stream into one line, dated by its first part.

:func:`read_cri_log` yields the history (``since``, then the last ``tail``
lines), then with ``follow`` new lines as the runtime appends them, until the
container has finished: once ``finished()`` says so, one more read takes
what the runtime wrote last and the reader ends. New lines are looked for
every ``poll`` seconds (a file another process appends to has no event to
wait on).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import anyio

from shoal.interfaces import LogLine

__all__ = ["CriLogParser", "parse_cri_time", "read_cri_log"]

_CHUNK = 1 << 20


def parse_cri_time(text: str) -> datetime:
    """Parse an RFC 3339 time with up to nanoseconds (kept to microseconds).

    Raises:
        ValueError: it is not such a time.

    """
    stamp = text.removesuffix("Z")
    offset = "+00:00"
    if len(stamp) != len(text):
        pass
    elif len(stamp) > 6 and stamp[-6] in "+-" and stamp[-3] == ":":
        stamp, offset = stamp[:-6], stamp[-6:]
    whole, dot, fraction = stamp.partition(".")
    if dot:
        whole += "." + (fraction[:6].ljust(6, "0"))
    parsed = datetime.fromisoformat(whole + offset)
    return parsed.astimezone(UTC)


class CriLogParser:
    """Turns CRI log records into lines, joining the partial records of each stream."""

    def __init__(self) -> None:
        self._partial: dict[str, tuple[datetime, list[str]]] = {}

    def feed(self, record: bytes) -> LogLine | None:
        """Take one record (without its newline); return the line it completes, if any."""
        text = record.decode("utf-8", errors="replace")
        fields = text.split(" ", 3)
        if len(fields) < 3:
            return None
        try:
            time = parse_cri_time(fields[0])
        except ValueError:
            return None
        stream, tag = fields[1], fields[2]
        content = fields[3] if len(fields) == 4 else ""
        first, parts = self._partial.pop(stream, (time, []))
        parts.append(content)
        if tag.startswith("P"):
            self._partial[stream] = (first, parts)
            return None
        return LogLine.model_construct(time=first, stream=stream, line="".join(parts))


class _LogFile:
    """A log file read record by record; it may not exist yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._rest = b""

    def records(self) -> Iterator[bytes]:
        """Yield the complete records appended since the last call."""
        if self._file is None:
            try:
                self._file = self.path.open("rb")
            except FileNotFoundError:
                return
        while chunk := self._file.read(_CHUNK):
            self._rest += chunk
            *whole, self._rest = self._rest.split(b"\n")
            yield from whole

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_cri_log(
    path: Path,
    finished: Callable[[], Awaitable[bool]],
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
    poll: float = 0.05,
) -> AsyncIterator[LogLine]:
    """Yield the lines of the CRI log at ``path``, then with ``follow`` new ones until finished."""
    file, parser = _LogFile(path), CriLogParser()

    def wanted(line: LogLine) -> bool:
        return since is None or line.time >= since

    try:
        kept: deque[LogLine] = deque(maxlen=tail)
        for record in await anyio.to_thread.run_sync(lambda: list(file.records())):
            line = parser.feed(record)
            if line is not None and wanted(line):
                kept.append(line)
        for line in kept:
            yield line
        if not follow:
            return
        done = False
        while True:
            records = await anyio.to_thread.run_sync(lambda: list(file.records()))
            for record in records:
                line = parser.feed(record)
                if line is not None and wanted(line):
                    yield line
            if done:
                return
            if not records:
                # Asked only when idle; one more read after it says yes takes the last lines.
                done = await finished()
                if not done:
                    await anyio.sleep(poll)
    finally:
        with contextlib.suppress(OSError):
            file.close()
