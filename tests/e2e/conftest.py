"""Fixtures that start real `shoal agent` processes and run the real `shoal` CLI.

Every `shoal` CLI call is a fresh Python process that imports all of Shoal,
about 1.5 s before it does anything. Tests therefore *wait* through the
signed REST API from this process (:meth:`Agent.wait_for`, :meth:`Agent.until`,
the same JSON `shoal get -o json` prints), polling every :data:`POLL` seconds
under a deadline, and keep the CLI for what they check; independent CLI reads
can run side by side (:meth:`Agent.cli_side_by_side`). Tests that need no
fresh agent share one per module (:func:`agent_in`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from scripts.build_busybox_image import build_busybox_layout

from shoal.agent import reset_data_dir
from shoal.client import ShoalClient, load_keypair
from shoal.interfaces import NODE_KEY_FILE
from tests.runtime.images.support import LoopbackRegistry
from tests.shoal_cli import run_shoal

READY = "ready: API on http://"
POLL = 0.05
"""Seconds between two looks while waiting; every wait is bounded by its own deadline."""

T = TypeVar("T")


async def listing(client: ShoalClient, kind: str) -> list[Any]:
    """Return what `shoal get KIND -o json` (or `shoal events --limit 500 -o json`) prints."""
    items: list[Any]
    if kind == "workloads":
        items = await client.list_workloads()
    elif kind == "instances":
        items = await client.list_instances()
    elif kind == "nodes":
        items = await client.list_nodes()
    elif kind == "events":
        items = await client.list_events(limit=500)
    else:
        raise ValueError(f"cannot list {kind!r}")
    return [item.model_dump(mode="json") for item in items]


async def poll(probe: Callable[[], Awaitable[T | None]]) -> T:
    """Return the first truthy result of ``probe``, tried every POLL seconds.

    It never gives up on its own: callers bound it with a deadline.
    """
    while True:
        found = await probe()
        if found:
            return found
        await anyio.sleep(POLL)  # poll interval; the caller's deadline bounds the loop


async def poll_within(within: float, probe: Callable[[], Awaitable[T | None]]) -> T | None:
    """:func:`poll` for ``within`` seconds at most; None if ``probe`` never came true."""
    with anyio.move_on_after(within):
        return await poll(probe)
    return None


def until(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Return ``check()`` once it is truthy; fail after ``timeout`` seconds."""

    async def looking() -> T | None:
        async def probe() -> T | None:
            return check()

        return await poll_within(timeout, probe)

    found = anyio.run(looking)
    if found is None:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
    return found


@dataclass
class Agent:
    """A `shoal agent` subprocess and the environment its CLI calls share."""

    data_dir: Path
    home: Path
    env: dict[str, str]
    runtime: str = "mock"
    process: subprocess.Popen[str] | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)

    def start(self, *extra: str, expect_ready: bool = True) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoal.cli",
                "agent",
                "--data-dir",
                str(self.data_dir),
                "--api-addr",
                "127.0.0.1:0",
                "--name",
                "e2e-node",
                "--runtime",
                self.runtime,
                *extra,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.process = process
        if not expect_ready:
            return process
        assert process.stderr is not None
        # readline blocks, but the agent either logs READY or exits (EOF); the
        # per-test timeout bounds the rare hang.
        for line in process.stderr:
            self.log.append(line)
            if READY in line:
                self.url = "http://" + line.split(READY, 1)[1].split(",", 1)[0]
                self.env["SHOAL_SERVER"] = self.url
                return process
        raise AssertionError("agent exited before it was ready:\n" + "".join(self.log))

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the agent to exit; what it logged meanwhile joins ``log``."""
        assert self.process is not None
        self.process.send_signal(sig)
        _, rest = self.process.communicate(timeout=timeout)
        self.log.extend(rest.splitlines(keepends=True))
        code = self.process.returncode
        self._close()
        return code

    def _close(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        """Kill the agent if it still runs and remove every pod it left behind."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=30)
            self._close()
        if self.runtime != "mock":
            anyio.run(remove_pods, self.data_dir)

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_shoal(self.env, *args, check=check, stdin=stdin)

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def cli_side_by_side(
        self, *calls: Sequence[str], check: bool = True
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent `shoal` calls at the same time; return their results in order.

        For reads that do not depend on each other: each call still is its own
        `shoal` process, but their Python start-ups overlap.
        """
        started = [
            (
                list(args),
                subprocess.Popen(
                    [sys.executable, "-m", "shoal.cli", *args],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for args in calls
        ]
        results = []
        try:
            for args, process in started:
                stdout, stderr = process.communicate(timeout=60)
                results.append(
                    subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
                )
        finally:
            for _, process in started:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        if check:
            for result in results:
                assert result.returncode == 0, (
                    f"shoal {' '.join(result.args)} failed:\n{result.stderr}"
                )
        return results

    def client(self) -> ShoalClient:
        """Return a signed API client for the running agent, with the CLI's key."""
        assert self.url, "the agent is not started"
        return ShoalClient(self.url, load_keypair(self.home))

    def api(self, call: Callable[[ShoalClient], Awaitable[T]]) -> T:
        """Make one call through the signed API, from this process."""

        async def calling() -> T:
            async with self.client() as client:
                return await call(client)

        return anyio.run(calling)

    def read(self, kind: str) -> list[Any]:
        """Return the JSON `shoal get KIND -o json` prints, read through the API."""
        return self.api(lambda client: listing(client, kind))

    def until(
        self,
        what: str,
        probe: Callable[[ShoalClient], Awaitable[T | None]],
        timeout: float = 60.0,
    ) -> T:
        """Return ``probe(client)`` once it is truthy, asking the API every POLL seconds."""

        async def looking() -> T | None:
            async with self.client() as client:
                return await poll_within(timeout, lambda: probe(client))

        found = anyio.run(looking)
        if found is None:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        return found

    def wait_for(self, kind: str, check: Callable[[Any], T | None], timeout: float = 60.0) -> T:
        """Return ``check(items)`` once it is truthy, ``items`` being what `get KIND` lists.

        On time out the message shows the last listing, which says what did not happen.
        """
        seen: list[Any] = []

        async def looking() -> T | None:
            async with self.client() as client:

                async def probe() -> T | None:
                    seen[:] = [await listing(client, kind)]
                    return check(seen[0])

                return await poll_within(timeout, probe)

        found = anyio.run(looking)
        if found is None:
            raise AssertionError(f"timed out after {timeout:g}s waiting on {kind}; last saw {seen}")
        return found


@contextmanager
def agent_in(root: Path) -> Iterator[Agent]:
    """An agent handle whose data and SHOAL_HOME live under ``root``; cleaned up on exit.

    Whatever happens in between, the agent process is killed and the pods it
    started are removed (containers outlive their agent by design).
    """
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_HOME"] = str(home)
    env["SHOAL_LOG_LEVEL"] = "INFO"
    handle = Agent(root / "data", home, env)
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A fresh, not yet started agent handle for one test."""
    with agent_in(tmp_path) as handle:
        yield handle


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox:1.36 OCI layout, built once for the whole session (read-only to tests)."""
    return build_busybox_layout(tmp_path_factory.mktemp("layout") / "busybox", "1.36").layout


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, busybox_layout: Path) -> Iterator[str]:
    missing = LoopbackRegistry.missing()
    if missing:
        pytest.skip(missing)
    server = LoopbackRegistry(tmp_path_factory.mktemp("registry"))
    server.start()
    try:
        yield server.push(busybox_layout, "1.36")
    finally:
        server.stop()


def leftovers(data_dir: Path, uid: str) -> list[str]:
    """Everything the runtime could leave behind for one pod."""
    found = []
    runc = subprocess.run(
        ["runc", "--root", str(data_dir / "runtime" / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    found += [f"runc container {c}" for c in runc if c.startswith(uid)]
    pods = data_dir / "runtime" / "pods"
    if pods.exists():
        found += [f"pod dir {p.name}" for p in pods.iterdir() if p.name.startswith(uid)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if uid[:12] in line]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    found += [f"iptables {line}" for line in rules.splitlines() if uid in line]
    mounts = Path("/proc/mounts").read_text()
    found += [f"mount {line}" for line in mounts.splitlines() if uid in line]
    return found


async def remove_pods(data_dir: Path) -> None:
    """Remove every pod an agent left under ``data_dir`` and free its bridge.

    Through ``shoal node reset``'s own code: containers outlive their agent by
    design, so a failed test would leave them running (mounts, network
    namespaces, port rules, a bridge) without this.
    """
    if (data_dir / NODE_KEY_FILE).is_file():
        await reset_data_dir(data_dir, grace=1.0)
