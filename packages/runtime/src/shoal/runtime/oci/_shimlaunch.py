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
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

__all__ = ["ShimLauncher"]

log = logging.getLogger(__name__)

SHIM = Path(__file__).with_name("_shim.py")


async def _read_all(stream: ByteReceiveStream | None) -> bytes:
    if stream is None:
        return b""
    chunks = [chunk async for chunk in stream]
    return b"".join(chunks)


class ShimLauncher:
    """Launches shims, keeping one warm.

    Args:
        python: The interpreter that runs the shims.

    """

    def __init__(self, python: str) -> None:
        self.python = python
        self._standby: Process | None = None
        self._replenishing = False
        self._closed = False

    async def _spawn(self) -> Process:
        command = [self.python, "-I", "-S", str(SHIM), "--standby"]
        return await anyio.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    async def replenish(self) -> None:
        """Start the next standby shim, unless one is there or on its way."""
        if self._closed or self._standby is not None or self._replenishing:
            return
        self._replenishing = True
        try:
            with anyio.CancelScope(shield=True):  # never a shim started and then lost
                self._standby = await self._spawn()
        finally:
            self._replenishing = False
        if self.closed():  # closed while it started: let it go as aclose would have
            await self.aclose()

    async def replenish_quietly(self) -> None:
        """:meth:`replenish`, in the background: a shim that cannot be started is no error here.

        The next create then starts a shim of its own, and fails with the reason.
        """
        try:
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

        """
        process, self._standby = self._standby, None
        if process is None or not await self._hand(process, config):
            if process is not None:
                await process.aclose()
            process = await self._spawn()
            if not await self._hand(process, config):
                await process.aclose()
                return {}, "the shim exited before it was given its container"
        try:
            output: dict[str, bytes] = {}

            async def read(name: str, stream: ByteReceiveStream | None) -> None:
                output[name] = await _read_all(stream)

            async with anyio.create_task_group() as group:
                group.start_soon(read, "stdout", process.stdout)
                group.start_soon(read, "stderr", process.stderr)
            await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
        answer: dict[str, object] = {}
        for line in output["stdout"].decode(errors="replace").splitlines():
            try:
                answer = json.loads(line)
            except ValueError:
                continue
        return answer, output["stderr"].decode(errors="replace").strip()

    @staticmethod
    async def _hand(process: Process, config: Path) -> bool:
        """Give ``process`` (a shim waiting on its stdin) its config; False if it is gone.

        The shim detaches at once (its first process exits), so only a write
        to the pipe its detached copy reads tells whether that is still there.
        """
        assert process.stdin is not None
        try:
            await process.stdin.send(f"{config}\n".encode())
            await process.stdin.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def aclose(self) -> None:
        """Let the standby shim go (it exits on EOF) and wait for it."""
        self._closed = True
        process, self._standby = self._standby, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                if process.stdin is not None:
                    await process.stdin.aclose()
                await process.wait()
                await process.aclose()
