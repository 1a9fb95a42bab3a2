"""Benchmark: what the node loops of other nodes decode when one node's instance changes.

Shoal's number: K real node loops (``NodeLoop.run`` on ``MockRuntime``, one
per simulated node) share one SqliteStore in this process, each with
``--per-node`` instances already running (their pods made in its runtime
first, so the loops start by adopting them). Then, again and again, one new
instance is placed on the first node (written as the control loop writes a
placement: ``scheduled`` with its node); that node's loop starts it and
reports ``starting`` then ``running``. For each placement the script counts
the instance changes in the store (a watch), the instance records delivered
to every *other* node loop meanwhile — what it lists, gets or receives on
its watches under ``/instances/``, each wrapped in a counting view of the
store — and the CPU time the process spent, until no loop has read an
instance for half a second. It prints those per placement and per change.
The aim is 0 for the other loops: a node loop's work should follow its own
instances, not the cluster's (issue 11). Today every node loop lists every
instance of the cluster on every instance change anywhere, so the figure is
about ``(K - 1) x instances`` per change, less what wake-ups coalesce.

The loops' resync timer and heartbeat are set to an hour, so only changes
wake them. The real path of a worker goes through gRPC (``RemoteStore``);
this in-process run leaves the channel out, so it counts decoding, not
transport. Run with ``uv run python bench/scale_workers.py [--node-loops 100]
[--per-node 5] [--changes 5]``; ``bench/scale.py`` runs it after the control loop.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

from shoal.core import NodeLoop, ShoalService, SystemClock  # noqa: E402
from shoal.core._placement import InstanceFactory  # noqa: E402
from shoal.core._repo import INSTANCES, Repository, instance_key  # noqa: E402
from shoal.interfaces import (  # noqa: E402
    Capacity,
    Compare,
    DeleteOp,
    Instance,
    InstanceState,
    KeyValue,
    Leadership,
    ListResult,
    Node,
    PodSpec,
    PutOp,
    StateStore,
    TxnResult,
    WatchEvent,
    Workload,
    WorkloadSpec,
)
from shoal.runtime import MockRuntime  # noqa: E402
from shoal.state import SqliteStore  # noqa: E402

QUIET = 0.5
"""Seconds without a node loop reading an instance after which the store counts as quiet."""
WAIT = 120.0
"""Upper bound, in seconds, on any one wait."""
HOUR = 3600.0


class Counter:
    """Instance records delivered to one node loop, and when it last got one."""

    def __init__(self) -> None:
        self.delivered = 0
        self.last = time.monotonic()

    def saw(self, count: int) -> None:
        """Count ``count`` more records read now."""
        self.delivered += count
        self.last = time.monotonic()


class _CountingStore:
    """One node loop's view of the shared store, counting the instance records it reads.

    Counted are the records a loop must decode: those ``list`` and ``get``
    return under ``/instances/`` and the instance changes its watches deliver.
    Over gRPC these are what crosses the wire to the worker, whatever the
    node loop does with them.
    """

    def __init__(self, inner: StateStore, counter: Counter) -> None:
        self.inner = inner
        self.counter = counter

    async def get(self, key: str) -> KeyValue | None:
        kv = await self.inner.get(key)
        if kv is not None and kv.key.startswith(INSTANCES):
            self.counter.saw(1)
        return kv

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        return await self.inner.put(key, value, expected_revision=expected_revision, lease=lease)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        return await self.inner.delete(key, expected_revision=expected_revision)

    async def list(self, prefix: str) -> ListResult:
        result = await self.inner.list(prefix)
        self.counter.saw(sum(1 for kv in result.items if kv.key.startswith(INSTANCES)))
        return result

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        # Opened now, not on the first read, as the store's own watch is.
        return _CountingWatch(self.inner.watch(prefix, start_revision), self.counter)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        return await self.inner.txn(compares, success, failure)

    async def grant_lease(self, ttl: float) -> int:
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease: int) -> None:
        await self.inner.keepalive(lease)

    async def revoke(self, lease: int) -> None:
        await self.inner.revoke(lease)

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        return await self.inner.campaign(election, candidate, lease)

    async def resign(self, leadership: Leadership) -> None:
        await self.inner.resign(leadership)

    async def leader(self, election: str) -> str | None:
        return await self.inner.leader(election)

    async def aclose(self) -> None:
        """Leave the shared store open: the bench owns it."""


class _CountingWatch:
    def __init__(self, inner: AsyncIterator[WatchEvent], counter: Counter) -> None:
        self.inner = inner
        self.counter = counter

    def __aiter__(self) -> _CountingWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        event = await anext(self.inner)
        if event.kv.key.startswith(INSTANCES):
            self.counter.saw(1)
        return event


def workload() -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": "app",
            "replicas": 1,
            "template": {"containers": [{"name": "main", "image": "registry.local/app:1"}]},
        }
    )


def node(index: int) -> Node:
    capacity = Capacity.model_validate({"cpu": "16", "memory": "64Gi", "pods": 110})
    return Node(name=f"node-{index:04d}", capacity=capacity, allocatable=capacity, runtime="mock")


async def running_instance(
    factory: InstanceFactory, wl: Workload, on: str, runtime: MockRuntime
) -> Instance:
    """Return an instance running on ``on``, its pod made and started in ``runtime``."""
    inst = factory.new(wl, factory.fresh_uid(wl), state=InstanceState.RUNNING, node=on)
    pod = PodSpec(
        uid=inst.uid,
        name=inst.name,
        namespace=inst.namespace,
        workload=inst.workload,
        containers=list(inst.template.containers),
    )
    await runtime.ensure_image(inst.template.containers[0].image)
    await runtime.create(pod)
    status = await runtime.start(inst.uid)
    return inst.model_copy(
        update={
            "container_ids": {c.name: c.id for c in status.containers},
            "started_at": factory.now,
            "ready": True,
            "reason": "Started",
        }
    )


async def quiet(counters: list[Counter]) -> None:
    """Return once no node loop has read an instance record for QUIET seconds."""
    # Polled: quiet is the absence of events, which no event can announce.
    while time.monotonic() - max(c.last for c in counters) < QUIET:  # noqa: ASYNC110
        await anyio.sleep(QUIET / 5)


async def measure(loops: int, per_node: int, changes: int) -> None:
    clock = SystemClock()
    directory = Path(tempfile.mkdtemp(prefix="shoal-scale-workers-"))
    try:
        async with SqliteStore(directory / "state.db", clock=clock) as store:
            await run(store, clock, loops, per_node, changes)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run(
    store: StateStore, clock: SystemClock, loops: int, per_node: int, changes: int
) -> None:
    print(f"node loops: {loops} on MockRuntime, {per_node} running instances each, SqliteStore")
    await ShoalService(store, clock).apply([workload()])
    stored = await Repository(store, clock).get_workload("default", "app")
    assert stored is not None
    wl, factory = stored.value, InstanceFactory(clock.now())
    runtimes = [MockRuntime(clock) for _ in range(loops)]
    records = [
        await running_instance(factory, wl, node(index).name, runtime)
        for index, runtime in enumerate(runtimes)
        for _ in range(per_node)
    ]
    for start in range(0, len(records), 128):
        chunk = records[start : start + 128]
        await store.txn(
            [],
            [PutOp(instance_key(i.namespace, i.name), i.model_dump_json().encode()) for i in chunk],
        )
    counters = [Counter() for _ in range(loops)]
    seen = [0]

    async def count_changes() -> None:
        async for _ in store.watch(INSTANCES, await store.revision() + 1):
            seen[0] += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(count_changes)
        for index, (runtime, counter) in enumerate(zip(runtimes, counters, strict=True)):
            view = _CountingStore(store, counter)
            loop = NodeLoop(node(index), view, runtime, clock, resync=HOUR, heartbeat=HOUR)
            await tg.start(loop.run)
        with anyio.fail_after(WAIT):
            await quiet(counters)
        others: list[float] = []
        own: list[float] = []
        cpu: list[float] = []
        seen_per: list[int] = []
        for _ in range(changes):
            before = [c.delivered for c in counters]
            changes_before, cpu_before = seen[0], time.process_time()
            inst = factory.new(wl, factory.fresh_uid(wl), state=InstanceState.SCHEDULED)
            inst = inst.model_copy(update={"node": node(0).name, "reason": "Scheduled"})
            await store.put(
                instance_key(inst.namespace, inst.name), inst.model_dump_json().encode()
            )
            with anyio.fail_after(WAIT):
                await until_running(store, inst)
                await quiet(counters)
            count = seen[0] - changes_before
            after = [c.delivered for c in counters]
            others.append(sum(after[1:]) - sum(before[1:]))
            own.append(after[0] - before[0])
            cpu.append(time.process_time() - cpu_before)
            seen_per.append(count)
        tg.cancel_scope.cancel()
    per_change = statistics.median(seen_per)
    print(
        f"  per placement on node-0000: {per_change:g} instance changes (scheduled, starting,"
        " running)"
    )
    print(
        f"  delivered to the {loops - 1} other node loops: median {statistics.median(others):,.0f}"
        f" per placement, {statistics.median(others) / per_change:,.0f} per change  (aim: 0;"
        f" the cluster holds {loops * per_node:,}+ instances)"
    )
    print(
        f"  delivered to node-0000's own loop: median {statistics.median(own):,.0f} per placement"
    )
    print(
        f"  CPU time of all loops and the store: median {statistics.median(cpu) * 1000:,.0f} ms"
        f" per placement"
    )


async def until_running(store: StateStore, inst: Instance) -> None:
    key = instance_key(inst.namespace, inst.name)
    while True:
        kv = await store.get(key)
        if kv is not None and Instance.model_validate_json(kv.value).state == InstanceState.RUNNING:
            return
        await anyio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-loops", type=bounded("--node-loops", 2, 2000), default=100)
    parser.add_argument("--per-node", type=bounded("--per-node", 0, 1000), default=5)
    parser.add_argument("--changes", type=bounded("--changes", 1, 100), default=5)
    args = parser.parse_args()
    anyio.run(measure, args.node_loops, args.per_node, args.changes)


if __name__ == "__main__":
    main()
