"""Benchmark: the watched manifests directory, from a file's write to its objects applied.

Shoal's numbers, through the real :class:`~shoal.kube.ManifestWatcher`
(inotify through watchfiles, the default 1 s debounce) over a real
:class:`~shoal.core.ShoalService` on a SqliteStore (the agent's default
store, in a temporary directory) or a MemoryStore (``--store``):

- **latency**: a watched file is rewritten (a new replica count) ``--writes``
  times; each time the clock runs from the write until the watcher reports the
  new content applied. p50 and p99 (aim: p50 under 1.5 s, the debounce
  included). Its floor: the debounce plus the time the service takes to apply
  the same spec directly, measured after each write; the ratio says what the
  watch, the read, the parse and the ownership bookkeeping add.
- **a directory of 200 manifests** (``--files``), each a Workload and a
  ConfigMap: the watcher's first pass (an agent starting on the directory),
  and a burst (the 200 files written into a watched directory at once, until
  the last is applied; the debounce included). Their floor: the same specs
  applied directly through ``service.apply``, one call per file (each file
  is all or nothing), on a fresh store of the same kind; one call for all of
  them is printed beside it.

Shoal and the floor are measured alternately in one run (``--rounds``), so
machine noise hits both; the script prints medians and ratios. Run with
``make bench`` or ``uv run python bench/manifests.py [--store sqlite|memory]``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

from shoal.core import ShoalService, SystemClock  # noqa: E402
from shoal.interfaces import ObjectSpec, StateStore, load_yaml_documents  # noqa: E402
from shoal.kube import ManifestWatcher, parse_documents  # noqa: E402
from shoal.state import MemoryStore, SqliteStore  # noqa: E402

DEBOUNCE = 1.0
"""The watcher's default debounce: part of what an operator waits."""
POLL = 0.002
"""Seconds between two looks at the watcher's statuses while timing."""


def manifest(name: str, replicas: int = 1) -> str:
    """A Kubernetes Deployment and its ConfigMap, as an operator would keep them."""
    return f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
data:
  greeting: hello from {name}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: web
          image: busybox:1.36
          command: ["httpd", "-f", "-p", "8080"]
          envFrom:
            - configMapRef: {{name: {name}-config}}
"""


def specs_of(text: str, source: str) -> list[ObjectSpec]:
    return parse_documents(load_yaml_documents(text, source), source).objects


@asynccontextmanager
async def open_service(kind: str) -> AsyncIterator[ShoalService]:
    """Yield a service over a fresh, empty store of ``kind`` (SQLite in a temporary directory)."""
    clock = SystemClock()
    store: StateStore
    if kind == "memory":
        async with MemoryStore(clock=clock) as store:
            yield ShoalService(store, clock)
        return
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    try:
        async with SqliteStore(directory / "state.db", clock=clock) as store:
            yield ShoalService(store, clock)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def applied(watcher: ManifestWatcher, digests: dict[str, str]) -> None:
    """Return once every path of ``digests`` is applied with that content."""
    # The sources, not statuses(): building 200 statuses every POLL would slow the watcher.
    sources = watcher.owners.sources
    while True:
        if all(
            path in sources and sources[path].applied_hash == digest
            for path, digest in digests.items()
        ):
            return
        await anyio.sleep(POLL)


def empty(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def latency(kind: str, writes: int) -> tuple[list[float], list[float]]:
    """Return the seconds from each write to its content applied, and the floor of each."""
    shoal: list[float] = []
    floor: list[float] = []
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-dir-"))
    try:
        path = directory / "web.yaml"
        path.write_text(manifest("web"))
        async with open_service(kind) as service, open_service(kind) as direct:
            watcher = ManifestWatcher(service, [directory], "bench", debounce=DEBOUNCE)
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.run)
                for i in range(writes):
                    text = manifest("web", replicas=2 + i % 5)
                    started = time.perf_counter()
                    path.write_text(text)
                    with anyio.fail_after(30):
                        await applied(watcher, {str(path): digest(text)})
                    shoal.append(time.perf_counter() - started)
                    specs = specs_of(text, str(path))
                    started = time.perf_counter()
                    await direct.apply(specs)
                    floor.append(DEBOUNCE + time.perf_counter() - started)
                tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return shoal, floor


async def directory_of(kind: str, files: int) -> tuple[float, float, float, float]:
    """Return seconds for: the first pass, a burst, one apply per file, one apply for all."""
    texts = {f"app-{i:03d}.yaml": manifest(f"app-{i:03d}") for i in range(files)}
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-dir-"))
    try:
        for name, text in texts.items():
            (directory / name).write_text(text)
        async with open_service(kind) as service:
            watcher = ManifestWatcher(service, [directory], "bench", debounce=DEBOUNCE)
            async with anyio.create_task_group() as tg:
                started = time.perf_counter()
                await tg.start(watcher.run)  # ready once the first pass applied every file
                first_pass = time.perf_counter() - started
                objects = sum(len(s.objects) for s in watcher.statuses())
                assert objects == 2 * files, f"{objects} objects applied, not {2 * files}"
                tg.cancel_scope.cancel()
        empty(directory)
        async with open_service(kind) as service:
            watcher = ManifestWatcher(service, [directory], "bench", debounce=DEBOUNCE)
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.run)
                started = time.perf_counter()
                for name, text in texts.items():
                    (directory / name).write_text(text)
                with anyio.fail_after(120):
                    await applied(
                        watcher, {str(directory / n): digest(t) for n, t in texts.items()}
                    )
                burst = time.perf_counter() - started
                tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    per_file = [specs_of(text, name) for name, text in texts.items()]
    async with open_service(kind) as service:
        started = time.perf_counter()
        for specs in per_file:
            await service.apply(specs)
        one_per_file = time.perf_counter() - started
    async with open_service(kind) as service:
        started = time.perf_counter()
        await service.apply([spec for specs in per_file for spec in specs])
        all_at_once = time.perf_counter() - started
    return first_pass, burst, one_per_file, all_at_once


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main(kind: str, rounds: int, writes: int, files: int) -> None:
    print(f"manifests directory on a {kind} store, debounce {DEBOUNCE:g} s, {rounds} rounds")
    shoal: list[float] = []
    floor: list[float] = []
    passes: list[float] = []
    bursts: list[float] = []
    per_file: list[float] = []
    at_once: list[float] = []
    for _ in range(rounds):
        measured, ideal = await latency(kind, writes)
        shoal += measured
        floor += ideal
        first_pass, burst, one_per_file, all_at_once = await directory_of(kind, files)
        passes.append(first_pass)
        bursts.append(burst)
        per_file.append(one_per_file)
        at_once.append(all_at_once)
    p50, p99 = percentile(shoal, 0.5), percentile(shoal, 0.99)
    floor50 = percentile(floor, 0.5)
    print(f"write -> applied, {len(shoal)} writes (a Deployment and its ConfigMap):")
    print(f"  watcher   p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  (aim: p50 < 1500 ms)")
    print(f"  floor     p50 {floor50 * 1000:7.1f} ms  (the debounce + a direct apply)")
    print(f"  ratio (watcher / floor, p50): {p50 / floor50:.3f}")
    pass_median, burst_median = statistics.median(passes), statistics.median(bursts)
    per_file_median, at_once_median = statistics.median(per_file), statistics.median(at_once)
    print(f"a directory of {files} manifests ({2 * files} objects):")
    print(f"  first pass (agent start)      median {pass_median * 1000:8.1f} ms")
    print(
        f"  burst (all written at once)   median {burst_median * 1000:8.1f} ms  (debounce included)"
    )
    print(f"  floor: one apply per file     median {per_file_median * 1000:8.1f} ms")
    print(f"         one apply for all      median {at_once_median * 1000:8.1f} ms")
    print(
        f"  ratio (first pass / one apply per file): {pass_median / per_file_median:.2f};"
        f" (burst - debounce) / one apply per file: "
        f"{(burst_median - DEBOUNCE) / per_file_median:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--rounds", type=bounded("rounds", 1, 20), default=3)
    parser.add_argument("--writes", type=bounded("writes", 1, 1000), default=20)
    parser.add_argument("--files", type=bounded("files", 1, 5000), default=200)
    args = parser.parse_args()
    anyio.run(main, args.store, args.rounds, args.writes, args.files)
