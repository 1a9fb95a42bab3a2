"""The previous run's logs a runtime keeps: rotated files kept too, and keeping is best effort."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import LogLine
from shoal.runtime.oci._ocilogs import read_log
from shoal.runtime.oci._previous import PreviousLogs

pytestmark = pytest.mark.anyio

UID = "0123456789abcdef"


def lines_file(path: Path, *lines: str) -> None:
    now = datetime.now(UTC).isoformat()
    records = [json.dumps({"time": now, "stream": "stdout", "line": line}) for line in lines]
    path.write_text("".join(f"{record}\n" for record in records))


async def read(path: Path) -> list[str]:
    with anyio.fail_after(10):
        found: list[LogLine] = [
            line async for line in read_log(path, lambda: True, follow=False, tail=None, since=None)
        ]
    return [line.line for line in found]


async def test_a_rotated_log_is_kept_whole(tmp_path: Path) -> None:
    pod = tmp_path / "pods" / UID
    pod.mkdir(parents=True)
    lines_file(pod / "app.log.2", "oldest")
    lines_file(pod / "app.log.1", "older")
    lines_file(pod / "app.log", "last words")
    lines_file(pod / "app.log.tmp", "not a rotation")
    previous = PreviousLogs(tmp_path)
    previous.keep(UID, {"app": pod / "app.log"}, ran=True)
    assert await read(previous.log(UID, "app")) == ["oldest", "older", "last words"]
    assert (tmp_path / "previous").stat().st_mode & 0o777 == 0o700
    kept = previous.log(UID, "app").parent  # the run's own directory, behind the link
    assert kept.stat().st_mode & 0o777 == 0o700 and (tmp_path / "previous" / UID).is_symlink()


async def test_a_file_system_that_refuses_loses_the_logs_not_the_removal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pod = tmp_path / "pods" / UID
    pod.mkdir(parents=True)
    lines_file(pod / "app.log", "last words")
    (tmp_path / "previous").write_text("a file where the directory goes")
    PreviousLogs(tmp_path).keep(UID, {"app": pod / "app.log"}, ran=True)  # does not raise
    assert "cannot keep the logs of pod" in caplog.text


def test_a_reader_finds_one_run_whole_while_runs_are_swapped_in(tmp_path: Path) -> None:
    previous = PreviousLogs(tmp_path)
    pod = tmp_path / "pods" / UID
    pod.mkdir(parents=True)

    def keep(run: int) -> None:
        lines_file(pod / "app.log.1", f"run-{run}")
        lines_file(pod / "app.log", f"run-{run}", f"run-{run}")
        previous.keep(UID, {"app": pod / "app.log"}, ran=True)

    keep(0)
    seen: list[set[str]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            path = previous.log(UID, "app")  # never "none kept" while one always is
            texts = []
            for name in (f"{path.name}.1", path.name):
                with contextlib.suppress(FileNotFoundError):  # the run went after this look
                    texts += (path.parent / name).read_text().splitlines()
            seen.append({json.loads(text)["line"] for text in texts})

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for run in range(1, 200):
            keep(run)
    finally:
        done.set()
        reader.join(timeout=10)
    assert seen and all(len(lines) <= 1 for lines in seen)  # never two runs mixed
    assert not list((tmp_path / "previous").glob(".run-*"))[1:]  # one run kept, no more
