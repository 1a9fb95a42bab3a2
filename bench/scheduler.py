"""Benchmark: place 10,000 instances on 1,000 simulated nodes through the real control loop.

Shoal's number: the time the real :class:`ControlLoop` (DefaultScheduler)
takes from the moment 100 workloads of 100 replicas are applied until every
instance is placed — reading the world, building the instances, scheduling
and writing them — on a MemoryStore and on a SqliteStore (the embedded
default, in a temporary directory). Its floor: the time the same kind of
store takes to write 10,000 records of the same size plainly (``put`` in a
loop). The two are measured alternately in one run, so machine noise hits
both; the script prints placements per second, both medians and their ratio
(aim: under 3), per store. On SQLite every plain ``put`` is its own durable
commit, while the loop writes in transactions of 128; so the script also
prints a second floor, the same records written in transactions of 128
(``txn``), and the ratio against it.

The garbage collector is set as ``shoal agent`` sets it (``--gc agent``,
:func:`shoal.agent.tune_gc`), for Shoal and its floor alike; ``--gc default``
measures with CPython's defaults. The time the collector took inside the
control loop's passes is printed too: a collection of the middle generation
(every tenth of the youngest, at ``tune_gc``'s settings) may land in a round
and take a few hundred milliseconds, so the medians are taken over 9 rounds.

Nodes are simulated as node records (no container runtime runs: placement
never touches one). Run with ``make bench`` or ``uv run python
bench/scheduler.py [--store memory|sqlite|both]``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from shoal.core import ControlLoop, DefaultScheduler, Repository, ShoalService, SystemClock
from shoal.core._applier import TXN_OPS  # writes per transaction, as the control loop batches them
from shoal.interfaces import (
    Capacity,
    Instance,
    InstanceState,
    Node,
    PutOp,
    StateStore,
    WorkloadSpec,
)
from shoal.state import MemoryStore, SqliteStore

STORES = ("memory", "sqlite")


class CollectorTime:
    """The time the garbage collector spends while :attr:`on` (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """Note when a collection starts; add its duration when it stops, while on."""
        del info
        if phase == "start":
            self._started = time.perf_counter()
        elif self.on:
            self.seconds += time.perf_counter() - self._started


COLLECTOR = CollectorTime()


def workload(index: int, replicas: int) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": f"app-{index}",
            "replicas": replicas,
            "template": {
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.local/app:1",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    }
                ]
            },
        }
    )


@asynccontextmanager
async def open_store(kind: str, clock: SystemClock) -> AsyncIterator[StateStore]:
    """Yield a fresh, empty store of ``kind`` (SQLite in a temporary directory)."""
    if kind == "memory":
        async with MemoryStore(clock=clock) as store:
            yield store
        return
    directory = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    try:
        async with SqliteStore(directory / "state.db", clock=clock) as sqlite:
            yield sqlite
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def place_through_control_loop(
    kind: str, nodes: int, workloads: int, replicas: int
) -> tuple[float, bytes]:
    """Return the seconds the control loop took to place everything, and one instance's JSON."""
    clock = SystemClock()
    async with open_store(kind, clock) as store:
        repo = Repository(store, clock)
        capacity = Capacity.model_validate({"cpu": "16", "memory": "64Gi", "pods": 110})
        for i in range(nodes):
            node = Node(name=f"node-{i:04d}", capacity=capacity, allocatable=capacity)
            await repo.put(f"/nodes/{node.name}", node)
        await ShoalService(store, clock).apply([workload(i, replicas) for i in range(workloads)])
        control = ControlLoop(store, DefaultScheduler(), clock)
        elapsed = 0.0
        while True:
            started = time.perf_counter()
            COLLECTOR.on = True
            await control.reconcile_once()
            COLLECTOR.on = False
            elapsed += time.perf_counter() - started
            listing = await store.list("/instances/")
            placed = [Instance.model_validate_json(kv.value) for kv in listing.items]
            if len(placed) == workloads * replicas and all(
                i.state == InstanceState.SCHEDULED for i in placed
            ):
                break
            if control.passes > 10:
                raise RuntimeError("the control loop did not place everything in 10 passes")
        control.close()  # as a leader's loop at the end of its term: its caches go with it
        return elapsed, listing.items[0].value


async def plain_writes(kind: str, count: int, payload: bytes) -> tuple[float, float]:
    """Return the seconds the same kind of store takes to write ``count`` records of ``payload``.

    First one ``put`` each, then (into another store) transactions of TXN_OPS puts.
    """
    clock = SystemClock()
    async with open_store(kind, clock) as store:
        started = time.perf_counter()
        for i in range(count):
            await store.put(f"/instances/default/plain-{i:05d}", payload)
        single = time.perf_counter() - started
    async with open_store(kind, clock) as store:
        started = time.perf_counter()
        for start in range(0, count, TXN_OPS):
            keys = range(start, min(start + TXN_OPS, count))
            await store.txn([], [PutOp(f"/instances/default/plain-{i:05d}", payload) for i in keys])
        batched = time.perf_counter() - started
    return single, batched


async def main(stores: list[str], rounds: int, nodes: int, workloads: int, replicas: int) -> None:
    total = workloads * replicas
    print(f"placed {total} instances of {workloads} workloads on {nodes} nodes, {rounds} rounds")
    for kind in stores:
        shoal: list[float] = []
        floor: list[float] = []
        batched: list[float] = []
        collected: list[float] = []
        for _ in range(rounds):
            COLLECTOR.seconds = 0.0
            elapsed, payload = await place_through_control_loop(kind, nodes, workloads, replicas)
            shoal.append(elapsed)
            collected.append(COLLECTOR.seconds)
            single, in_txns = await plain_writes(kind, total, payload)
            floor.append(single)
            batched.append(in_txns)
        shoal_median, floor_median = statistics.median(shoal), statistics.median(floor)
        batched_median = statistics.median(batched)
        rate, floor_rate = total / shoal_median, total / floor_median
        print(f"{kind}:")
        print(f"  control loop  median {shoal_median * 1000:8.1f} ms  ({rate:,.0f} placements/s)")
        shown = ", ".join(f"{c * 1000:.0f}" for c in collected)
        print(f"    of which the garbage collector, per round: {shown} ms")
        print(f"  plain writes  median {floor_median * 1000:8.1f} ms  ({floor_rate:,.0f} writes/s)")
        print(
            f"  in txns of {TXN_OPS} median {batched_median * 1000:8.1f} ms"
            f"  ({total / batched_median:,.0f} writes/s)"
        )
        print(
            f"  ratio (control loop / plain writes): {shoal_median / floor_median:.2f}  (aim: < 3);"
            f" / writes in txns: {shoal_median / batched_median:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=[*STORES, "both"], default="both")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument(
        "--gc",
        choices=["agent", "default"],
        default="agent",
        help="the collector as `shoal agent` sets it (the default), or CPython's defaults",
    )
    args = parser.parse_args()
    stores = list(STORES) if args.store == "both" else [args.store]
    if args.gc == "agent":
        from shoal.agent import tune_gc

        tune_gc()
    gc.callbacks.append(COLLECTOR)
    chosen = "as shoal agent sets it (tune_gc)" if args.gc == "agent" else "CPython defaults"
    print(f"garbage collector: {chosen}")
    anyio.run(main, stores, args.rounds, args.nodes, args.workloads, args.replicas)
