"""Benchmark: wall time of `shoal --help` and `shoal get workloads`, as a user runs them.

Each is a whole process started through the installed ``shoal`` script, as
from a shell: interpreter start, imports, argument parsing and, for ``get``,
loading the key, one signed request to a live agent and the table. The agent
runs for the whole benchmark (mock runtime, temporary data dir and
SHOAL_HOME, a free loopback port) with two workloads applied, and is stopped
at the end.

Its floor: ``python -c pass`` with the same interpreter, what any Python
command costs before it imports anything.

Not measured: ``uv run``, which checks the environment before each command
(about 0.05 s more); the script is what an activated environment runs.
What keeps the figures down is held by tests, not timed there:
``tests/cli/test_imports.py`` and ``tests/cli/test_get.py`` (one command's
module, no server module, no pydantic or rich on `get workloads`).

The three alternate, one of each per round after one warm-up round, so
machine noise hits all alike. Prints each median, its ratio to the floor,
and whether it meets its aim (``--help`` 0.2 s, ``get workloads`` 0.3 s).
Bytecode matters (a cold compile of every module doubles the time): the
numbers are meant for a compiled install, as `make bootstrap` leaves it,
and the benchmark says which it measured. Run with ``make bench`` or
``uv run python bench/cli_latency.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"
"""The console script a user's install puts on PATH."""
WAIT = 60.0
"""Upper bound, in seconds, on the agent's start and on any one command."""
AIMS = {"shoal --help": 0.2, "shoal get workloads": 0.3}
"""Seconds of wall time, median."""


def free_port() -> int:
    """Return a loopback TCP port nothing listens on (never 7070 or 8080: a user's node)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def timed(command: Sequence[str], env: dict[str, str]) -> float:
    """Run ``command`` to completion; return its wall time in seconds."""
    began = time.perf_counter()
    subprocess.run(
        command,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=WAIT,
    )
    return time.perf_counter() - began


@contextlib.contextmanager
def running_agent(work: Path) -> Iterator[dict[str, str]]:
    """Run `shoal agent` (mock runtime) until the block ends; yield the env a client needs."""
    port = free_port()
    env = dict(os.environ, SHOAL_HOME=str(work / "home"), SHOAL_SERVER=f"http://127.0.0.1:{port}")
    command = [str(SHOAL), "agent", "--runtime", "mock", "--data-dir", str(work / "data")]
    with (work / "agent.log").open("wb") as log:
        agent = subprocess.Popen(
            [*command, "--api-addr", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + WAIT
        while subprocess.run([SHOAL, "get", "nodes"], env=env, capture_output=True).returncode:
            with contextlib.suppress(subprocess.TimeoutExpired):  # still starting: ask again
                agent.wait(0.2)  # the pause between tries, which also sees an early exit
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start:\n{(work / 'agent.log').read_text()}")
        for example in ("hello.yaml", "httpd.yaml"):
            subprocess.run(
                [SHOAL, "apply", "-f", str(ROOT / "examples" / example)],
                env=env,
                check=True,
                capture_output=True,
            )
        yield env
    finally:
        agent.terminate()
        try:
            agent.wait(WAIT)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def stale_bytecode() -> list[Path]:
    """Return the workspace's sources whose bytecode is missing or older than they are.

    A user's install has none; a working tree someone edits may (with
    PYTHONDONTWRITEBYTECODE set nothing rewrites it), and each such module is
    compiled afresh by every command.
    """
    stale = []
    for source in sorted(ROOT.glob("packages/*/src/shoal/**/*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            header = cached.read_bytes()[:16]
        except FileNotFoundError:
            stale.append(source)
            continue
        info = source.stat()
        recorded = (int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little"))
        if header[:4] != importlib.util.MAGIC_NUMBER or recorded != (
            int(info.st_mtime) & 0xFFFFFFFF,
            info.st_size & 0xFFFFFFFF,
        ):
            stale.append(source)
    return stale


def main(rounds: int) -> None:
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "shoal --help": [str(SHOAL), "--help"],
        "shoal get workloads": [str(SHOAL), "get", "workloads"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with (
        tempfile.TemporaryDirectory(prefix="shoal-bench-cli-") as tmp,
        running_agent(Path(tmp)) as env,
    ):
        for number in range(rounds + 1):  # round 0 warms the page cache and is not counted
            for name, command in commands.items():
                elapsed = timed(command, env)
                if number:
                    times[name].append(elapsed)
    floor = statistics.median(times["python -c pass"])
    stale = stale_bytecode()
    bytecode = (
        f"NOT compiled for {len(stale)} modules (run `make bootstrap`)" if stale else "compiled"
    )
    print(f"whole processes, {rounds} rounds, bytecode {bytecode}, {os.cpu_count()} CPUs")
    for name, samples in times.items():
        median = statistics.median(samples)
        line = f"{name:<20} median {median * 1000:6.0f} ms  ratio {median / floor:5.1f}"
        if name in AIMS:
            verdict = "meets" if median <= AIMS[name] else "misses"
            line += f"  {verdict} its aim of {AIMS[name]:g} s"
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=bounded("rounds", 1, 100), default=15)
    args = parser.parse_args()
    if not SHOAL.exists():
        sys.exit(f"no shoal script at {SHOAL}: run `make bootstrap`")
    main(args.rounds)
