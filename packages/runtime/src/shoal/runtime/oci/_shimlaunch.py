"""Starting container shims quickly: one is always kept warm for the next container.

Starting a shim costs an interpreter start and its imports, tens of
milliseconds that every container create would wait for. So the
:class:`ShimLauncher` keeps the next shim in *standby* (``_shim.py
--standby``): it starts, imports, and blocks reading one line from its
stdin, already detached (double fork, ``setsid``) and a child subreaper.
The next create writes the container's ``shim.json`` path to it and closes
its stdin; from there on it is an ordinary shim (it creates the container,
answers and keeps the logs). The runtime calls
:meth:`ShimLauncher.replenish` for the next standby shim once the pod has
started, not before: the new interpreter's start would compete for the CPU
with this pod's ``runc create`` and ``runc start``; and in the background
when it has a task group (inside ``async with``), so that the pod's start is
reported meanwhile. A standby shim holds
nothing yet: if the agent dies, its stdin reaches EOF and it simply exits;
:meth:`ShimLauncher.aclose` does the same on purpose. Creates running at the
same time, or a pod's second container, take the one standby shim or start
a shim of their own.

A shim is started with ``posix_spawn`` on three pipes the launcher reads and
writes itself, not through the event loop's subprocess machinery: that
forks the agent (page tables copied, milliseconds for a large process) and
starts a thread to wait for the child, all on the event loop, which then
stalls whatever else is under way there (the start it follows is reported
meanwhile). ``posix_spawn`` (``vfork`` and ``exec``) takes well under a
millisecond. The launcher reaps the shim's first process itself (it exits
as soon as the shim has detached).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import anyio

__all__ = ["ShimLauncher"]

log = logging.getLogger(__name__)

SHIM = Path(__file__).with_name("_shim.py")


@dataclass
class _Shim:
    """A started shim: its first process and the agent's ends of its three pipes."""

    pid: int
    stdin: int | None
    """The write end of its stdin (None once closed: the shim has its config, or EOF)."""
    stdout: int
    stderr: int

    def close_stdin(self) -> None:
        """Close the shim's stdin (it reads EOF, or the line written before)."""
        fd, self.stdin = self.stdin, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close the agent's ends of every pipe."""
        self.close_stdin()
        for fd in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)


async def _read_all(fd: int) -> bytes:
    """Read the pipe ``fd`` (non-blocking) to its end."""
    chunks: list[bytes] = []
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def _reap(pid: int) -> None:
    """Wait for the child ``pid`` to exit and reap it (a shim's first process exits soon)."""
    if _reaped(pid):  # usually: it exited once the shim had detached, long before
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone and reaped already
        return
    except (OSError, AttributeError):  # no pidfds (Linux before 5.3): a thread waits
        await anyio.to_thread.run_sync(_wait, pid)
        return
    try:
        await anyio.wait_readable(pidfd)  # readable once it has exited
    finally:
        os.close(pidfd)
    _wait(pid)


def _reaped(pid: int) -> bool:
    """Reap the child ``pid`` if it has exited, without waiting; return whether it is gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        return True
    return done != 0


def _wait(pid: int) -> None:
    """Reap the child ``pid`` (blocking until it exits); fine if it was reaped already."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class ShimLauncher:
    """Launches shims, keeping one warm.

    Args:
        python: The interpreter that runs the shims.

    """

    def __init__(self, python: str) -> None:
        self.python = python
        self._standby: _Shim | None = None
        self._closed = False

    def _spawn(self) -> _Shim:
        """Start a standby shim (see the module docstring for why ``posix_spawn``).

        Raises:
            OSError: it could not be started.

        """
        with contextlib.ExitStack() as made:  # closes every pipe end made if a later step fails
            ends: list[int] = []
            for _ in range(3):
                pair = os.pipe()
                ends += pair
                for fd in pair:
                    made.callback(os.close, fd)
            stdin_read, stdin_write, stdout_read, stdout_write, stderr_read, stderr_write = ends
            theirs = (stdin_read, stdout_write, stderr_write)
            pid = os.posix_spawnp(
                self.python,
                [self.python, "-I", "-S", str(SHIM), "--standby"],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(theirs)
                ],
                # As subprocess does: the agent ignores SIGPIPE, a child need not.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
            made.pop_all()  # spawned: the shim's ends close below, the agent's are kept
        for fd in theirs:
            os.close(fd)
        os.set_blocking(stdout_read, False)
        os.set_blocking(stderr_read, False)
        return _Shim(pid, stdin_write, stdout_read, stderr_read)

    async def replenish(self) -> None:
        """Start the next standby shim, unless one is there (or the launcher is closed)."""
        if not self._closed and self._standby is None:
            self._standby = self._spawn()

    async def replenish_quietly(self, after: float = 0.0) -> None:
        """:meth:`replenish` ``after`` seconds, in the background.

        A shim that cannot be started is no error here: the next create then
        starts a shim of its own, and fails with the reason.
        """
        try:
            await anyio.sleep(after)
            await self.replenish()
        except OSError:
            pass
        except Exception:  # it runs in the runtime's task group: it must not end the agent
            log.exception("could not start a standby shim; the next start makes its own")

    def closed(self) -> bool:
        """Return whether :meth:`aclose` was called (no standby shim is started then)."""
        return self._closed

    async def launch(self, config: Path) -> tuple[dict[str, object], str]:
        """Hand ``config`` to a shim and wait for its answer (``runc create`` is done then).

        Returns:
            The shim's answer (``{}`` if it gave none) and what it wrote to stderr.

        Raises:
            OSError: no standby shim was there and none could be started.

        """
        shim, self._standby = self._standby, None
        if shim is None or not self._hand(shim, config):
            if shim is not None:
                await self._discard(shim)
            shim = self._spawn()
            if not self._hand(shim, config):
                await self._discard(shim)
                return {}, "the shim exited before it was given its container"
        try:
            output: dict[str, bytes] = {}

            async def read(name: str, fd: int) -> None:
                output[name] = await _read_all(fd)

            async with anyio.create_task_group() as group:
                group.start_soon(read, "stdout", shim.stdout)
                group.start_soon(read, "stderr", shim.stderr)
        finally:
            with anyio.CancelScope(shield=True):
                await self._discard(shim)
        answer: dict[str, object] = {}
        for line in output["stdout"].decode(errors="replace").splitlines():
            try:
                answer = json.loads(line)
            except ValueError:
                continue
        return answer, output["stderr"].decode(errors="replace").strip()

    @staticmethod
    def _hand(shim: _Shim, config: Path) -> bool:
        """Give ``shim`` (waiting on its stdin) its config; False if it is gone.

        The shim detaches at once (its first process exits), so only a write
        to the pipe its detached copy reads tells whether that is still there.
        The line is far shorter than a pipe's buffer: the write never blocks.
        """
        if shim.stdin is None:
            return False
        try:
            os.write(shim.stdin, f"{config}\n".encode())
        except OSError:  # EPIPE: nobody reads it any more
            return False
        finally:
            shim.close_stdin()
        return True

    @staticmethod
    async def _discard(shim: _Shim) -> None:
        """Close the agent's ends of the shim's pipes and reap its first process."""
        shim.close()
        with anyio.CancelScope(shield=True):
            await _reap(shim.pid)

    async def aclose(self) -> None:
        """Let the standby shim go (it exits on EOF) and wait for it."""
        self._closed = True
        shim, self._standby = self._standby, None
        if shim is not None:
            await self._discard(shim)
