"""Exec and stats for :class:`~shoal.runtime.OciCliRuntime`.

**exec** is ``runc exec --pid-file`` (no TTY, stdin on /dev/null), so the
command inherits the container's user, environment and working directory.
Killing ``runc exec`` does not kill what it started inside the container, so
a command that outlives its time limit is SIGKILLed by the pid runc wrote,
and the result says so with exit code 137. A command missing from the image
makes runc itself fail (exit 255, "exec failed"); that becomes 127 (126 when
it exists but cannot run), as a shell reports it, with runc's message.

**stats** read each container's cgroup twice, ``interval`` apart: CPU is the
usage between the two readings in millicores, memory and pids the second
reading (see :mod:`._cgroups`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from shoal.interfaces import ContainerStats, ExecResult

from ._cgroups import detect_cgroups
from ._runc import RuncCli, runc_message

__all__ = ["measure_stats", "run_exec"]


async def run_exec(
    runc: RuncCli,
    container_id: str,
    directory: Path,
    command: Sequence[str],
    time_limit: float,
) -> ExecResult:
    """Run ``command`` in a running container; SIGKILL it after ``time_limit`` seconds.

    Args:
        runc: The runtime CLI.
        container_id: The container's runtime id.
        directory: A directory for the exec's pid file.
        command: Program and arguments.
        time_limit: Seconds before the command is killed.

    """
    pid_file = directory / f"exec-{uuid.uuid4().hex[:12]}.pid"
    argv = runc.exec_command(container_id, list(command), pid_file)
    finished = False
    try:
        with anyio.move_on_after(time_limit):
            done = await anyio.run_process(argv, stdin=subprocess.DEVNULL, check=False)
            finished = True
    finally:
        _drop_pid_file(pid_file, kill=not finished)
    if not finished:
        return ExecResult(
            exit_code=137,
            stderr=f"killed: the command ran longer than its {time_limit:g}s limit",
        )
    stdout = done.stdout.decode(errors="replace")
    stderr = done.stderr.decode(errors="replace")
    if done.returncode == 255 and "exec failed" in stderr:
        message = runc_message(done.stderr)
        missing = "not found" in message or "no such file" in message
        return ExecResult(exit_code=127 if missing else 126, stdout=stdout, stderr=message)
    return ExecResult(exit_code=done.returncode, stdout=stdout, stderr=stderr)


def _drop_pid_file(pid_file: Path, *, kill: bool) -> None:
    """Delete an exec's pid file; with ``kill``, SIGKILL the process it names first."""
    try:
        pid = int(pid_file.read_text().strip()) if kill else 0
    except (OSError, ValueError):
        pid = 0
    pid_file.unlink(missing_ok=True)
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def measure_stats(cgroups: Mapping[str, str], interval: float) -> list[ContainerStats]:
    """Return the use of each container (name → cgroup path), CPU over ``interval``."""
    layout = detect_cgroups()
    before = {name: layout.sample(path) for name, path in cgroups.items()}
    began = time.monotonic()
    await anyio.sleep(interval)
    after = {name: layout.sample(path) for name, path in cgroups.items()}
    elapsed = max(time.monotonic() - began, 1e-6)
    result = []
    for name in cgroups:
        first, last = before[name], after[name]
        if first is None or last is None:
            result.append(ContainerStats(name=name))
            continue
        cpu = max(0.0, last.cpu_seconds - first.cpu_seconds) / elapsed
        result.append(
            ContainerStats(
                name=name,
                cpu_millicores=round(cpu * 1000),
                memory_bytes=last.memory_bytes,
                pids=last.pids,
            )
        )
    return result
