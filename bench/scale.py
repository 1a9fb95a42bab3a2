"""Benchmark: what one change costs the control loop with 1,000 nodes and N instances placed.

Shoal's numbers: the real :class:`ControlLoop` (``DefaultScheduler``) on the
leader, with 1,000 simulated nodes (node records, no node loops) and N
instances already placed and running (N = 1,000, 10,000 and 100,000 by
default: workloads of 100 replicas, spread round-robin over the nodes). The
loop reads its watch-fed caches and its work queue, as on a running leader:

* *idle*: one settled workload reconciled (a woken key with nothing to do;
  the bench checks that it writes nothing);
* *place*: a new 1-replica workload is applied; what its change put on the
  queue is reconciled as the loop's worker would (it must be that workload
  alone): its instance is created and placed and the workload's status written;
* *resync*: every workload reconciled once (the safety net the loop runs
  every few minutes; it grows with the world by design).

Their floor: the two plain store writes that placing one instance takes at
least (its record, and its workload's status), measured in the same round.
The script prints medians per store and N, ``place / floor``, and the growth
from the smallest N to the largest (aim: flat — at 100,000 within 2x of
1,000; a change should cost what it touches, not the size of the world).

The world is loaded directly: workloads through ``ShoalService.apply``, then
instance records made with the control loop's own ``InstanceFactory``,
marked running on their node, written in transactions of 128; one untimed
pass then writes the workloads' status. SqliteStore (the embedded default,
``synchronous=FULL``) lives in a temporary directory; etcd is a fresh
single member per N on free loopback ports with its data under /dev/shm
(``tests/state/support.py``), so its fsyncs cost nothing. A size whose load
exceeds ``--load-limit`` seconds is skipped, and the output says so.

Part two, the workers (``bench/scale_workers.py``, run after part one
unless ``--node-loops 0``): K real node loops (``NodeLoop.run`` on
``MockRuntime``) attached through the real gRPC channel (each a
``RemoteNodeState``: the typed NodeState calls, on loopback, this process)
to a server over one SqliteStore, each with
``--per-node`` running instances; one instance is placed on the first node,
again and again, and the script counts the instance records delivered to the
*other* workers per change (aim: 0), the records the server decodes and the
process CPU time per change. It does so for two servers in turns, each with
its own K workers: one runs ``Assignments`` (one decode per change), the
other filters a watch of the store per worker (a decode per worker and
change), and prints the CPU ratio of the two.

The defaults take about 8 minutes on 2 cores, most of it N = 100,000
(about a minute to load per store); ``--sizes 1000,10000``
gives a look in one minute. Run with ``make bench`` or ``uv run python
bench/scale.py [--sizes 1000,10000,100000] [--stores sqlite,etcd] [--rounds 3]
[--node-loops 100] [--per-node 5]``.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402
from bench.scale_workers import measure as measure_workers  # noqa: E402

from shoal.core import ControlLoop, DefaultScheduler, ShoalService, SystemClock  # noqa: E402
from shoal.core._applier import TXN_OPS  # noqa: E402  (etcd's default limit, as the loop writes)
from shoal.core._control import BATCH  # noqa: E402
from shoal.core._placement import InstanceFactory  # noqa: E402
from shoal.core._repo import Repository  # noqa: E402
from shoal.interfaces import (  # noqa: E402
    INSTANCES,
    Capacity,
    Instance,
    InstanceState,
    Node,
    PutOp,
    StateStore,
    Workload,
    WorkloadSpec,
    instance_key,
    node_key,
    workload_key,
)
from shoal.state import EtcdStore, SqliteStore  # noqa: E402

AIM = 2.0
"""Aim for the growth of a pass from the smallest N to the largest."""
REPLICAS = 100
"""Replicas per loaded workload."""
STORES = ("sqlite", "etcd")


def workload(name: str, replicas: int) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
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


def node(index: int, pods: int) -> Node:
    """Return a simulated node record with room for ``pods`` instances of :func:`workload`."""
    capacity = Capacity.model_validate({"cpu": "64", "memory": "256Gi", "pods": pods})
    return Node.model_validate(
        {
            "name": f"node-{index:04d}",
            "capacity": capacity,
            "allocatable": capacity,
            "runtime": "mock",
        }
    )


@asynccontextmanager
async def open_store(kind: str, clock: SystemClock) -> AsyncIterator[StateStore]:
    """Yield a fresh, empty store of ``kind``; remove it on exit."""
    if kind == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="shoal-scale-"))
        try:
            async with SqliteStore(directory / "state.db", clock=clock) as store:
                yield store
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    from tests.state.support import EtcdMember, etcd_missing  # needs etcd and the test helpers

    reason = etcd_missing()
    if reason is not None:
        raise Skipped(reason)
    member = EtcdMember("shoal-scale")
    try:
        await anyio.to_thread.run_sync(member.start)
        async with EtcdStore(member.endpoint, timeout=60.0) as store:
            yield store
    finally:
        await anyio.to_thread.run_sync(member.remove)


class Skipped(Exception):
    """A size or store was not measured; the message says why."""


async def put_all(store: StateStore, items: list[tuple[str, bytes]]) -> None:
    for start in range(0, len(items), TXN_OPS):
        chunk = items[start : start + TXN_OPS]
        await store.txn([], [PutOp(key, value) for key, value in chunk])


async def load(
    store: StateStore, clock: SystemClock, nodes: int, size: int, limit: float
) -> ControlLoop:
    """Write ``nodes`` nodes and ``size`` running instances; return a settled control loop.

    Raises:
        Skipped: loading took longer than ``limit`` seconds.

    """
    started = time.perf_counter()
    per_node = -(-size // nodes)
    await put_all(
        store,
        [
            (node_key(n.name), n.model_dump_json().encode())
            for n in map(node, range(nodes), [per_node + 50] * nodes)
        ],
    )
    service = ShoalService(store, clock)
    names = [f"app-{i:05d}" for i in range(-(-size // REPLICAS))]
    for start in range(0, len(names), 50):  # one apply is one transaction: stay within etcd's limit
        await service.apply([workload(name, REPLICAS) for name in names[start : start + 50]])
    repo = Repository(store, clock)
    factory = InstanceFactory(clock.now())
    placed = 0
    batch: list[tuple[str, bytes]] = []
    for stored in await repo.list_workloads():
        for _ in range(min(REPLICAS, size - placed)):
            inst = _running(factory, stored.value, f"node-{placed % nodes:04d}")
            batch.append((instance_key(inst.namespace, inst.name), inst.model_dump_json().encode()))
            placed += 1
        if len(batch) >= 10 * TXN_OPS:
            await put_all(store, batch)
            batch.clear()
            if time.perf_counter() - started > limit:
                raise Skipped(
                    f"loading took over {limit:.0f} s (--load-limit) at {placed} of {size}"
                )
    await put_all(store, batch)
    control = ControlLoop(store, DefaultScheduler(), clock)
    for _ in range(5):  # the first pass writes every workload's status
        before = await store.revision()
        await control.reconcile_once()
        if await store.revision() == before:
            took = time.perf_counter() - started
            print(f"  loaded {nodes} nodes and {placed} instances in {took:.1f} s")
            return control
    raise RuntimeError("the control loop did not settle on the loaded world in 5 passes")


def _running(factory: InstanceFactory, wl: Workload, on: str) -> Instance:
    uid = factory.fresh_uid(wl)
    now = factory.now
    return factory.new(
        wl,
        uid,
        state=InstanceState.RUNNING,
        node=on,
        ready=True,
        reason="Started",
        message="",
        started_at=now,
        container_ids={"main": f"mock-{uid}"},
    )


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


@dataclass
class Figures:
    """Seconds per round of each measurement, for one store and size."""

    idle: list[float] = field(default_factory=list)
    place: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    resync: list[float] = field(default_factory=list)


async def measure(kind: str, nodes: int, size: int, rounds: int, limit: float) -> Figures:
    clock = SystemClock()
    figures = Figures()
    async with open_store(kind, clock) as store:
        control = await load(store, clock, nodes, size, limit)
        service = ShoalService(store, clock)
        async with anyio.create_task_group() as caches:
            # As on a leader: the loop reads its watch-fed caches, and their
            # listeners queue the workloads that changed.
            await caches.start(control.follow)
            await drain(control)  # the first list queued every workload
            await _rounds(store, control, service, figures, rounds)
            caches.cancel_scope.cancel()
    return figures


async def drain(control: ControlLoop) -> list[str]:
    """Reconcile what the loop's queue holds, as its worker would; return the keys taken."""
    taken: list[str] = []
    while len(control.queue):
        keys = await control.queue.get_many(BATCH)
        try:
            await control.reconcile(keys)
        finally:
            for key in keys:
                control.queue.done(key)
        taken.extend(keys)
    return taken


async def _rounds(
    store: StateStore, control: ControlLoop, service: ShoalService, figures: Figures, rounds: int
) -> None:
    """Measure ``rounds`` idle and place batches, and the plain writes beside them."""
    settled = sorted(control.workloads.values(), key=lambda s: s.key)
    for round_ in range(rounds):
        before = await store.revision()
        key = settled[round_ * 7919 % len(settled)].value.key
        figures.idle.append(await timed(functools.partial(control.reconcile, [key])))
        if await store.revision() != before:
            raise RuntimeError("the idle batch wrote something: the world was not settled")

        name = f"probe-{round_}"
        await service.apply([workload(name, 1)])
        applied = await store.get(workload_key("default", name))
        assert applied is not None
        await control.workloads.caught_up(applied.mod_revision)  # the loop's cache has it
        started = time.perf_counter()
        woken = await drain(control)
        figures.place.append(time.perf_counter() - started)
        if woken[:1] != [f"default/{name}"]:
            raise RuntimeError(f"the apply of {name} woke {woken[:5]}, not its own key")
        listing = await store.list(f"{INSTANCES}default/{name}-")
        states = [Instance.model_validate_json(kv.value).state for kv in listing.items]
        if states != [InstanceState.SCHEDULED]:
            raise RuntimeError(f"the place batch left {name}'s instances as {states}")

        # The floor: the two plain writes placing one instance takes at least
        # (its record, its workload's status), with no decision around them.
        (kv,) = listing.items
        started = time.perf_counter()
        await store.put(f"/bench/floor/{round_}/instance", kv.value)
        await store.put(f"/bench/floor/{round_}/workload", applied.value)
        figures.floor.append(time.perf_counter() - started)
        await drain(control)  # the probe's status, written above, settles
    # The safety net's cost, once: every workload reconciled (it grows with the world).
    figures.resync.append(await timed(control.reconcile_once))


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


async def control_plane(
    stores: list[str], sizes: list[int], nodes: int, rounds: int, limit: float
) -> None:
    print(f"control loop: {nodes} nodes, workloads of {REPLICAS} replicas, {rounds} rounds")
    results: dict[tuple[str, int], Figures] = {}
    skipped: list[str] = []
    for kind in stores:
        for size in sizes:
            print(f"{kind} N={size:,}:", flush=True)
            try:
                results[kind, size] = await measure(kind, nodes, size, rounds, limit)
            except Skipped as why:
                skipped.append(f"{kind} N={size:,}: {why}")
                print(f"  skipped: {why}")
                break  # larger sizes would take longer still
    print()
    print(
        f"{'store':6} {'N':>8} {'idle ms':>9} {'place ms':>9} {'floor ms':>9} {'place/floor':>11}"
        f" {'resync ms':>10}"
    )
    for (kind, size), f in results.items():
        idle, place, floor, resync = ms(f.idle), ms(f.place), ms(f.floor), ms(f.resync)
        print(
            f"{kind:6} {size:>8,} {idle:9.2f} {place:9.2f} {floor:9.2f} {place / floor:11.1f}"
            f" {resync:10.1f}"
        )
    for kind in stores:
        done = [size for size in sizes if (kind, size) in results]
        if len(done) < 2:
            continue
        low, high = results[kind, done[0]], results[kind, done[-1]]
        idle, place = ms(high.idle) / ms(low.idle), ms(high.place) / ms(low.place)
        print(
            f"{kind}: growth N={done[-1]:,} vs N={done[0]:,}: idle {idle:.1f}x, place {place:.1f}x"
            f"  (aim: < {AIM:g}x)"
        )
    for line in skipped:
        print(f"skipped {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="instance counts N")
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite, etcd or both")
    parser.add_argument("--nodes", type=bounded("--nodes", 1, 100_000), default=1000)
    parser.add_argument("--rounds", type=bounded("--rounds", 1, 100), default=3)
    parser.add_argument(
        "--load-limit", type=float, default=180.0, help="skip a size whose load takes longer (s)"
    )
    parser.add_argument(
        "--node-loops", type=bounded("--node-loops", 0, 2000), default=500, help="0: skip part two"
    )
    parser.add_argument("--per-node", type=bounded("--per-node", 0, 1000), default=5)
    parser.add_argument("--changes", type=bounded("--changes", 1, 100), default=5)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    stores = [s for s in args.stores.split(",") if s]
    if not sizes or any(s < 1 for s in sizes):
        parser.error("--sizes takes positive instance counts, e.g. 1000,10000")
    if not stores or any(s not in STORES for s in stores):
        parser.error(f"--stores takes {' and/or '.join(STORES)}, comma-separated")
    anyio.run(control_plane, stores, sizes, args.nodes, args.rounds, args.load_limit)
    if args.node_loops:
        print()
        anyio.run(measure_workers, args.node_loops, args.per_node, args.changes)


if __name__ == "__main__":
    main()
