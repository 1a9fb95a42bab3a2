"""The OCI runtime command line (runc, crun, youki): one subprocess per operation.

Only the subcommands and flags the three share are used (``state``, ``list
--format json``, ``start``, ``kill``, ``delete --force``, ``exec``), always
with ``--root`` so that every runtime object keeps its containers in a state
directory of its own. Their errors are printed as logfmt (``level=error
msg="..."``) or JSON; :func:`runc_message` turns either into the plain
message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from shoal.interfaces import RuntimeFailure, Unavailable

__all__ = ["RuncCli", "RuncState", "runc_message"]

LIST_ATTEMPTS = 5
"""Tries of ``runc list`` when a container deleted meanwhile fails it (:meth:`RuncCli.states`)."""

_LOGFMT_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def runc_message(output: bytes) -> str:
    """Return the error message in runc's stderr (logfmt, JSON or plain text)."""
    text = output.decode("utf-8", "replace").strip()
    messages: list[str] = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and "msg" in record:
                messages.append(str(record["msg"]))
                continue
        match = _LOGFMT_MESSAGE.search(line)
        messages.append(match.group(1).replace('\\"', '"') if match else line)
    return "; ".join(m for m in messages if m) or text


@dataclass(frozen=True)
class RuncState:
    """What ``runc state``/``runc list`` say about one container.

    Attributes:
        id: The container id.
        status: ``creating``, ``created``, ``running``, ``paused`` or ``stopped``.
        pid: Its init process on the host (0 once stopped).
        created: When it was created (RFC 3339 text).

    """

    id: str
    status: str
    pid: int
    created: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuncState:
        """Build from one object of runc's JSON output."""
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            pid=int(data.get("pid") or 0),
            created=str(data.get("created", "")),
        )


class RuncCli:
    """Runs one OCI runtime binary against one state directory.

    Args:
        binary: Name or path of the binary (``runc``, ``crun``, ``youki``).
        state_root: Its ``--root``: where it keeps container state.

    Raises:
        Unavailable: the binary is not installed.

    """

    def __init__(self, binary: str, state_root: Path) -> None:
        found = shutil.which(binary)
        if found is None:
            raise Unavailable(
                f"the container runtime {binary!r} is not installed or not on PATH: "
                f"install it (apt-get install {Path(binary).name}) or run the node "
                "with --runtime mock",
                binary=binary,
            )
        self.path = found
        self.state_root = state_root
        # runc names its root as Go's filepath.Abs does: absolute and cleaned, links kept.
        self._raced = f"stat {os.path.abspath(state_root)}/"
        """How a list that a delete raced names the root (see :meth:`states`)."""

    def command(self, *args: str) -> list[str]:
        """Return the argv of a subcommand, global flags included."""
        return [self.path, "--root", str(self.state_root), *args]

    async def run(self, *args: str, check: bool = True) -> tuple[int, bytes, bytes]:
        """Run a subcommand; return its exit code, stdout and stderr.

        Raises:
            RuntimeFailure: ``check`` is set and it failed (with runc's message), or it
                could not be started at all (whatever ``check`` says).

        """
        try:
            result = await anyio.run_process(
                self.command(*args), stdin=subprocess.DEVNULL, check=False
            )
        except OSError as exc:  # gone since the node started, or no process to be had
            raise RuntimeFailure(
                f"could not run {self.path} {args[0]}: {exc.strerror or exc}",
                command=args[0],
            ) from exc
        if check and result.returncode != 0:
            raise RuntimeFailure(
                f"{Path(self.path).name} {args[0]} failed: {runc_message(result.stderr)}",
                command=args[0],
            )
        return result.returncode, result.stdout, result.stderr

    async def state(self, container_id: str) -> RuncState | None:
        """Return the container's state, or None if the runtime does not know it."""
        code, out, _ = await self.run("state", container_id, check=False)
        if code != 0:
            return None
        try:
            return RuncState.from_json(json.loads(out))
        except (ValueError, TypeError):
            return None

    async def states(self) -> dict[str, RuncState]:
        """Return every container in the state root, by id.

        ``runc list`` (1.1) fails as a whole when a container's state directory
        goes between its reading the root and its reading that directory
        (``stat <root>/<id>: no such file or directory``): a ``delete`` ran at
        the same moment, about one list in twenty-five while containers come
        and go. That failure is tried again at once, up to LIST_ATTEMPTS times
        in all; any other is raised.

        Raises:
            RuntimeFailure: the list failed otherwise, or raced that often.

        """
        if not self.state_root.exists():
            return {}
        attempts = 0
        while True:
            attempts += 1
            code, out, err = await self.run("list", "--format", "json", check=False)
            if code == 0:
                break
            message = runc_message(err)
            raced = self._raced in message and message.endswith(": no such file or directory")
            if attempts == LIST_ATTEMPTS or not raced:
                raise RuntimeFailure(
                    f"{Path(self.path).name} list failed: {message}", command="list"
                )
        try:
            entries = json.loads(out or b"null") or []
        except ValueError as exc:
            raise RuntimeFailure(f"runc list printed no JSON: {out[:200]!r}") from exc
        states = [RuncState.from_json(entry) for entry in entries if isinstance(entry, dict)]
        return {state.id: state for state in states}

    async def start(self, container_id: str) -> None:
        """Start a created container.

        Raises:
            RuntimeFailure: it could not be started.

        """
        await self.run("start", container_id)

    async def kill(self, container_id: str, signal: str) -> bool:
        """Send ``signal`` to the container's init; return whether it was delivered."""
        code, _, _ = await self.run("kill", container_id, signal, check=False)
        return code == 0

    async def delete(self, container_id: str) -> None:
        """Kill and delete the container (its state and cgroup); a missing one is fine.

        Raises:
            RuntimeFailure: the runtime could not delete it.

        """
        code, _, err = await self.run("delete", "--force", container_id, check=False)
        if code != 0 and "does not exist" not in runc_message(err):
            if await self.state(container_id) is not None:
                raise RuntimeFailure(
                    f"{Path(self.path).name} delete {container_id} failed: {runc_message(err)}",
                    container_id=container_id,
                )

    def exec_command(self, container_id: str, argv: Sequence[str], pid_file: Path) -> list[str]:
        """Return the argv that runs ``argv`` in the container (no TTY, detached from none)."""
        return self.command("exec", "--pid-file", str(pid_file), container_id, *argv)
