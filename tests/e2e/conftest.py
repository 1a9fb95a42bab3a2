"""Fixtures that start real `shoal agent` processes and run the real `shoal` CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from shoal.runtime import ImageStore, OciCliRuntime, pod_networking

READY = "ready: API on http://"


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

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self._close()
        return code

    def _close(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "shoal.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, f"shoal {' '.join(args)} failed:\n{result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_HOME"] = str(home)
    env["SHOAL_LOG_LEVEL"] = "INFO"
    handle = Agent(tmp_path / "data", home, env)
    yield handle
    if handle.process is not None:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait(timeout=30)
        handle._close()
    if handle.runtime != "mock" and (handle.data_dir / "runtime").exists():
        anyio.run(remove_pods, handle.data_dir)


async def remove_pods(data_dir: Path) -> None:
    """Remove every pod an agent left under ``data_dir``, through the runtime's own code.

    Containers outlive their agent by design, so a failed test would leave
    them running (mounts, network namespaces, port rules) without this.
    """
    images = ImageStore(data_dir / "images")
    network = pod_networking("bridge", data_dir)
    async with OciCliRuntime(images, data_dir / "runtime", network=network) as runtime:
        for pod in await runtime.list():
            await runtime.remove(pod.uid)
