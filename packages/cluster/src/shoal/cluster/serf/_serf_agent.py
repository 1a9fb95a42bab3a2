"""One ``serf agent`` subprocess: how it is configured, started, watched and stopped.

:class:`AgentConfig` turns a node's settings into the agent's files and
command line. Secrets never appear in the command line (``ps`` shows it to
every user): the RPC auth key goes into a JSON config file and the gossip key
into a keyring file, both mode 0600 in the node's data dir. Beside them:

- ``serf.snapshot`` — the agent's snapshot, so a restarted agent rejoins the
  members it knew (``-rejoin``: even after a graceful leave) without replaying
  old events;
- ``serf-tags.json`` — the published tags (``-tags-file``); the agent rewrites
  it on every tag change, so a restart publishes the latest tags.

:class:`AgentProcess` is one run of that command line. Its output must be
drained for as long as it runs (a full pipe would block the agent), so
:meth:`AgentProcess.drain_output` keeps the last lines for error messages,
logs them, notices the line that says the agent is up, and explains gossip
key mismatches that other nodes cause.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import Process

from shoal.interfaces import InvalidInput, Unavailable

from ._serf_rpc import GOSSIP_KEY_ERRORS
from ._serf_wire import split_host_port

__all__ = ["AgentConfig", "AgentProcess", "find_serf_binary", "timing_profile"]

log = logging.getLogger("shoal.cluster.serf")

_PROFILES = ("lan", "wan", "local")
_READY_LINE = "Serf agent running!"
# An [ERR] that only means an RPC client hung up, as ours does on close.
_RPC_HANGUP = "failed to decode request header"
_OUTPUT_LINES = 40


def find_serf_binary(binary: str) -> str:
    """Return the full path of the serf executable ``binary`` names.

    Raises:
        Unavailable: there is no such executable; the message says how to install it.

    """
    found = shutil.which(binary)
    if found is None:
        raise Unavailable(
            f"the serf binary {binary!r} was not found (looked on PATH and as a path): "
            "install it with `apt-get install serf` (scripts/system-deps.sh does), "
            "or put a serf executable on the PATH",
            binary=binary,
        )
    return found


def timing_profile(bind: str, profile: str | None) -> str:
    """Return ``profile``, by default ``local`` for a loopback ``bind`` and ``lan`` otherwise.

    Raises:
        InvalidInput: ``profile`` is not one Serf knows, or ``bind`` is not host:port.

    """
    if profile is None:
        host, _ = split_host_port(bind, field="bind")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        return "local" if loopback else "lan"
    if profile not in _PROFILES:
        raise InvalidInput(f"profile must be one of {', '.join(_PROFILES)}", field="profile")
    return profile


def tied_to_parent(argv: list[str]) -> list[str]:
    """Return ``argv`` run so that the kernel kills it when this process dies.

    A node killed with SIGKILL must look failed to the cluster; a serf agent
    left running would keep gossiping that it is alive. ``setpriv`` (util-linux,
    essential on Debian) sets the parent-death signal, which survives the exec.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning(
            "setpriv (util-linux) is missing: the serf agent may outlive this process if it "
            "is killed, and keep gossiping that the node is alive"
        )
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it atomically."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    partial.replace(path)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything one node's serf agent is started with."""

    binary: str
    """Full path of the serf executable."""
    name: str
    """Node name (``-node``)."""
    data_dir: Path
    """Where the config, keyring, snapshot and tags files live."""
    bind: str
    """Gossip bind address (``-bind``)."""
    advertise: str | None
    """Address other members use to reach this one (``-advertise``)."""
    rpc_addr: str
    """RPC listen address (``-rpc-addr``); keep it on loopback."""
    rpc_auth: str
    """RPC auth key, written to the config file."""
    encrypt_key: str | None
    """Gossip key, written to the keyring file; None disables encryption."""
    profile: str
    """Timing profile: ``local`` (loopback: fast failure detection), ``lan`` or ``wan``."""
    log_level: str = "info"
    """The agent's log level."""
    extra_args: tuple[str, ...] = field(default=())
    """More ``serf agent`` flags, appended last."""

    def prepare(self, tags: dict[str, str]) -> None:
        """Create the data dir and write the config, keyring and initial tags files.

        Raises:
            Unavailable: the data dir cannot be written.

        """
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.config_file, json.dumps({"rpc_auth": self.rpc_auth}))
            if self.encrypt_key is not None:
                _write_private(self.keyring_file, json.dumps([self.encrypt_key]))
            _write_private(self.tags_file, json.dumps(tags, sort_keys=True))
        except OSError as exc:
            raise Unavailable(
                f"cannot write the serf agent's files in {self.data_dir} "
                f"({exc.strerror or exc}): choose another data dir or fix its permissions",
                path=str(self.data_dir),
            ) from exc

    @property
    def config_file(self) -> Path:
        """The JSON config file holding the RPC auth key."""
        return self.data_dir / "serf.json"

    @property
    def keyring_file(self) -> Path:
        """The keyring file holding the gossip key."""
        return self.data_dir / "serf-keyring.json"

    @property
    def tags_file(self) -> Path:
        """The file the agent keeps its tags in."""
        return self.data_dir / "serf-tags.json"

    @property
    def snapshot_file(self) -> Path:
        """The agent's snapshot, for rejoining after a restart."""
        return self.data_dir / "serf.snapshot"

    def argv(self) -> list[str]:
        """Return the ``serf agent`` command line (no secrets in it)."""
        argv = [
            self.binary,
            "agent",
            f"-node={self.name}",
            f"-bind={self.bind}",
            f"-rpc-addr={self.rpc_addr}",
            f"-config-file={self.config_file}",
            f"-tags-file={self.tags_file}",
            f"-snapshot={self.snapshot_file}",
            "-rejoin",
            f"-profile={self.profile}",
            f"-log-level={self.log_level}",
        ]
        if self.advertise:
            argv.append(f"-advertise={self.advertise}")
        if self.encrypt_key is not None:
            argv.append(f"-keyring-file={self.keyring_file}")
        return [*argv, *self.extra_args]


class AgentProcess:
    """One running ``serf agent``; start it with :meth:`start`."""

    def __init__(self, process: Process, name: str) -> None:
        self._process = process
        self._name = name
        self.output: deque[str] = deque(maxlen=_OUTPUT_LINES)
        """The agent's last lines of output."""
        self.ready = anyio.Event()
        """Set once the agent says it is running (its RPC listener is up)."""
        self.exited = anyio.Event()
        """Set once the agent's output ended, i.e. it exited or is exiting."""

    @classmethod
    async def start(cls, config: AgentConfig) -> AgentProcess:
        """Start the agent; run :meth:`drain_output` in a task right after.

        Raises:
            Unavailable: the serf binary could not be executed.

        """
        try:
            process = await anyio.open_process(
                tied_to_parent(config.argv()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise Unavailable(
                f"cannot run the serf binary {config.binary!r}: {exc.strerror or exc}; "
                "install it with `apt-get install serf` (scripts/system-deps.sh does)",
                binary=config.binary,
            ) from exc
        return cls(process, config.name)

    @property
    def pid(self) -> int:
        """The agent's process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, once the agent has exited (negative: killed by that signal)."""
        return self._process.returncode

    def describe(self, when: str = "") -> str:
        """Return how the agent ended (``when``: e.g. "while starting") and its last output."""
        code = self._process.returncode
        how = "is still running" if code is None else f"exited with code {code}"
        if code is not None and code < 0:
            how = f"was killed by signal {-code}"
        tail = " | ".join(line.strip() for line in list(self.output)[-6:] if line.strip())
        how = f"{how} {when}" if when else how
        said = f"serf agent {self._name!r} {how}" + (f"; last output: {tail}" if tail else "")
        if "address already in use" in tail:
            said += (
                "; another process (another shoal agent?) gossips on that address: stop it, "
                "or give this node another --bind HOST[:PORT]"
            )
        return said

    async def drain_output(self) -> None:
        """Read the agent's output until it ends, remembering and logging it."""
        stdout = self._process.stdout
        if stdout is None:  # not opened with stdout=PIPE: nothing to read
            self.exited.set()
            return
        pending = b""
        try:
            async for chunk in stdout:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._note(line.decode("utf-8", "replace").rstrip())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            if pending:
                self._note(pending.decode("utf-8", "replace").rstrip())
            self.exited.set()

    def _note(self, line: str) -> None:
        self.output.append(line)
        if _READY_LINE in line:
            self.ready.set()
        if any(marker in line for marker in GOSSIP_KEY_ERRORS):
            log.warning(
                "serf agent %s: a peer's gossip key does not match this node's key, so their "
                "messages are dropped; every node must use the cluster's gossip key: %s",
                self._name,
                line.strip(),
            )
        elif "[ERR]" in line and _RPC_HANGUP not in line:
            log.warning("serf agent %s: %s", self._name, line.strip())
        else:
            log.debug("serf agent %s: %s", self._name, line.strip())

    async def wait_ready(self) -> None:
        """Wait until the agent's RPC listener is up; bound it with ``anyio.fail_after``.

        Raises:
            Unavailable: the agent exited first.

        """
        async with anyio.create_task_group() as group:

            async def cancel_when(event: anyio.Event) -> None:
                await event.wait()
                group.cancel_scope.cancel()

            group.start_soon(cancel_when, self.ready)
            group.start_soon(cancel_when, self.exited)
        if self.exited.is_set():
            with anyio.move_on_after(1):
                await self._process.wait()  # so describe() has the exit code
            raise Unavailable(self.describe("while starting"), node=self._name)

    async def wait(self) -> int:
        """Wait for the agent to exit; return its exit code."""
        return await self._process.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the agent: SIGTERM (no graceful leave), then SIGKILL after ``grace`` s."""
        with anyio.CancelScope(shield=True):
            if self._process.returncode is None:
                try:
                    self._process.terminate()
                except ProcessLookupError:
                    pass
                with anyio.move_on_after(grace):
                    await self._process.wait()
            if self._process.returncode is None:
                log.warning("serf agent %s ignored SIGTERM for %g s: killing it", self._name, grace)
                try:
                    self._process.kill()
                except ProcessLookupError:
                    pass
            await self._process.aclose()
