"""Benchmark: what a change on one node costs the other workers and the server, over gRPC.

Shoal's number (issue 11, item 7(b)): K real node loops (``NodeLoop.run`` on
``MockRuntime``, one per simulated worker) attached to one server through
the real gRPC channel, all in this process on loopback: each worker has its
own ``NodeIdentity`` and a ``RemoteNodeState`` signed with it, the server a
``NodeStateGateway`` over one SqliteStore served by ``serve_grpc``. Each worker
starts with ``--per-node`` instances already running (their pods made in
its runtime first, so the loops start by adopting them) and registers its
node record through the server, as a joining worker does.

Two servers are measured side by side, each with its own store and its own
K workers, so a change in one costs the other nothing:

* ``assignments``: the gateway with ``Assignments`` running (what a server
  runs): one watch of the store, each change decoded once and handed to the
  stream of the node it concerns;
* ``filtered``: the gateway without it (its fallback while Assignments lists
  again): every worker's assignment stream is a watch of the store, filtered
  for that worker by decoding every change.

Then, ``--changes`` times per server, taking turns (the order swaps every
round, so noise of the machine hits both), one new instance is placed on
the first node (written as the control loop writes a placement:
``scheduled`` with its node); that worker's loop starts it and reports
``starting`` then ``running`` through the server. For each placement the
script counts, until nothing has moved for half a second:

* the instance changes in the store (a watch of the bench's own; 3 per placement);
* the instance records delivered to the *other* K - 1 workers: what their
  ``RemoteNodeState`` returns to the node loop from ``assignments`` and
  ``watch_assignments``, each wrapped in a counting view; the aim, and the
  floor, is 0 in both modes, since the server filters either way;
* the instance records the server decodes: ``Assignments.decoded`` plus the
  calls of ``shoal.cluster.grpc._worker_scope._assigned_to`` with a value (the
  gateway's per-worker filter and its checks of the first worker's status
  reports; patched with a counter here, in the bench only). The floor is 1
  per change for ``assignments`` plus the few checks of the first worker's
  own writes, which both modes pay; ``filtered`` pays about one per
  connected worker and change, more where the previous value is decoded too;
* the CPU time of the whole process (``time.process_time``: server, the K
  node loops and the gRPC machinery), also less the idle rate measured
  before the placements (gRPC keepalive pings of all 2K channels, each every
  5 s), which both modes pay whether or not anything changes.

It prints those per change for each mode, and the ratio of the CPU time per
change, filtered over assignments. The loops' resync timer, heartbeat and
probe tick are set to an hour, so only changes wake them.

Setting up also prints how long each server took to attach its K workers
and the instance records it decoded meanwhile: each worker's first list of
``/instances/`` is answered from memory by ``assignments`` and by decoding
the whole store by ``filtered`` (K x instances in all).

Default K is 500 per server (1,000 node loops and gRPC channels in all,
about 270 MB): the whole run takes 80 to 90 s on 2 cores, 60 to 70 s of it
attaching the ``filtered`` server's workers. Run with ``uv run python
bench/scale_workers.py [--node-loops 500] [--per-node 5] [--changes 5]``;
``bench/scale.py`` runs it after the control loop (with its own
``--node-loops``, 500 by default).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from unittest import mock

import anyio
from anyio.abc import TaskGroup
from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

import shoal.cluster.grpc._worker_scope as worker_scope  # noqa: E402
from shoal.cluster import (  # noqa: E402
    Assignments,
    CallVerifier,
    NodeIdentity,
    NodeStateGateway,
    RemoteNodeState,
    serve_grpc,
)
from shoal.core import NodeLoop, ShoalService, SystemClock  # noqa: E402
from shoal.core._placement import InstanceFactory  # noqa: E402
from shoal.core._repo import INSTANCES, Repository, instance_key  # noqa: E402
from shoal.interfaces import (  # noqa: E402
    Capacity,
    ConfigMapSpec,
    Event,
    Instance,
    InstanceState,
    ListResult,
    Node,
    PodSpec,
    PutOp,
    SecretSpec,
    StateStore,
    WatchEvent,
    Workload,
    WorkloadSpec,
)
from shoal.runtime import MockRuntime  # noqa: E402
from shoal.state import SqliteStore  # noqa: E402

QUIET = 0.5
"""Seconds without a record delivered or decoded after which a server counts as quiet."""
WAIT = 300.0
"""Upper bound, in seconds, on any one wait (setting up K workers is one)."""
HOUR = 3600.0
TOKEN = "bench-join-token"
STARTING = 32
"""Node loops registering and opening their watch at once while a server is set up."""
IDLE = 2.0
"""Seconds over which the idle CPU rate is measured."""
MODES = ("assignments", "filtered")


class Counter:
    """Instance records delivered or decoded, and when the last one was."""

    def __init__(self) -> None:
        self.count = 0
        self.last = time.monotonic()

    def saw(self, count: int) -> None:
        """Count ``count`` more records now."""
        if count:
            self.count += count
            self.last = time.monotonic()


class _CountingState:
    """One worker's RemoteNodeState, counting the instance records it hands to its node loop.

    Counted are the records the loop must decode: those its assignment list
    returns and those its assignment stream delivers, which is what crossed
    the wire from the server.
    """

    def __init__(self, inner: RemoteNodeState, counter: Counter) -> None:
        self.inner = inner
        self.counter = counter

    async def register(self, node: Node) -> bool:
        return await self.inner.register(node)

    async def heartbeat(self, at: datetime) -> None:
        await self.inner.heartbeat(at)

    async def assignments(self) -> ListResult:
        result = await self.inner.assignments()
        self.counter.saw(len(result.items))
        return result

    def watch_assignments(self, start_revision: int) -> AsyncIterator[WatchEvent]:
        return _CountingWatch(self.inner.watch_assignments(start_revision), self.counter)

    async def report(self, instance: Instance, expected_revision: int) -> int:
        return await self.inner.report(instance, expected_revision)

    async def remove(self, instance: Instance, expected_revision: int) -> int | None:
        return await self.inner.remove(instance, expected_revision)

    async def record(self, event: Event) -> None:
        await self.inner.record(event)

    async def config(
        self, kind: str, namespace: str, name: str
    ) -> ConfigMapSpec | SecretSpec | None:
        return await self.inner.config(kind, namespace, name)


class _CountingWatch:
    def __init__(self, inner: AsyncIterator[WatchEvent], counter: Counter) -> None:
        self.inner = inner
        self.counter = counter

    def __aiter__(self) -> _CountingWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        event = await anext(self.inner)
        self.counter.saw(1)
        return event


@dataclass
class Figures:
    """Per placement, what one mode measured."""

    changes: list[int] = field(default_factory=list)
    others: list[int] = field(default_factory=list)
    own: list[int] = field(default_factory=list)
    decoded: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    net: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


@dataclass
class Server:
    """One server (store, gateway, maybe Assignments) and its K workers."""

    mode: str
    store: StateStore
    assignments: Assignments | None
    address: str = ""
    counters: list[Counter] = field(default_factory=list)
    seen: int = 0
    """Instance changes in the store so far (the bench's own watch)."""
    figures: Figures = field(default_factory=Figures)

    @property
    def decoded(self) -> int:
        """Instance records its Assignments decoded so far (0 without)."""
        return 0 if self.assignments is None else self.assignments.decoded


def workload() -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": "app",
            "replicas": 1,
            "template": {"containers": [{"name": "main", "image": "registry.local/app:1"}]},
        }
    )


def name(index: int) -> str:
    return f"node-{index:04d}"


def node(ident: NodeIdentity) -> Node:
    capacity = Capacity.model_validate({"cpu": "16", "memory": "64Gi", "pods": 110})
    return Node(
        name=ident.name,
        node_id=ident.node_id,
        capacity=capacity,
        allocatable=capacity,
        runtime="mock",
    )


def known(address: str) -> Callable[[], Awaitable[Sequence[str]]]:
    async def servers() -> Sequence[str]:
        return [address]

    return servers


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


async def quiet(counters: Sequence[Counter]) -> None:
    """Return once no counter has moved for QUIET seconds."""
    # Polled: quiet is the absence of events, which no event can announce.
    while time.monotonic() - max(c.last for c in counters) < QUIET:  # noqa: ASYNC110
        await anyio.sleep(QUIET / 5)


async def measure(loops: int, per_node: int, changes: int) -> None:
    """Set up both servers with ``loops`` workers each, place ``changes`` times on each, print."""
    clock = SystemClock()
    directory = Path(tempfile.mkdtemp(prefix="shoal-scale-workers-"))
    decodes = Counter()
    assigned_to = worker_scope._assigned_to

    def counting(value: bytes | None, who: str) -> bool:
        if value is not None:
            decodes.saw(1)
        return assigned_to(value, who)

    try:
        with mock.patch.object(worker_scope, "_assigned_to", counting):
            async with AsyncExitStack() as stack:
                servers: list[Server] = []
                for mode in MODES:
                    path = directory / f"{mode}.db"
                    store = await stack.enter_async_context(SqliteStore(path, clock=clock))
                    assignments = Assignments(store, clock) if mode == "assignments" else None
                    servers.append(Server(mode, store, assignments))
                await run(stack, servers, decodes, clock, loops, per_node, changes)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run(
    stack: AsyncExitStack,
    servers: list[Server],
    decodes: Counter,
    clock: SystemClock,
    loops: int,
    per_node: int,
    changes: int,
) -> None:
    print(
        f"workers: {loops} node loops on MockRuntime per server, {per_node} running instances"
        " each, attached over gRPC on loopback; 2 servers (SqliteStore each): assignments,"
        " filtered"
    )
    async with anyio.create_task_group() as tg:
        factories: dict[str, tuple[Workload, InstanceFactory]] = {}
        for server in servers:
            began, decoded = time.monotonic(), decodes.count
            with anyio.fail_after(WAIT):
                factories[server.mode] = await set_up(stack, tg, server, clock, loops, per_node)
                await quiet([*server.counters, decodes])
            print(
                f"  {server.mode}: {loops} workers attached in {time.monotonic() - began:.0f} s,"
                f" the server decoding {server.decoded + decodes.count - decoded:,} instance"
                " records meanwhile"
            )
        cpu_before, began = time.process_time(), time.monotonic()
        await anyio.sleep(IDLE)
        idle = (time.process_time() - cpu_before) / (time.monotonic() - began)
        for round_ in range(changes):
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                wl, factory = factories[server.mode]
                await place(server, decodes, wl, factory, idle)
        tg.cancel_scope.cancel()
    report(servers, loops, per_node, idle)


async def set_up(
    stack: AsyncExitStack,
    tg: TaskGroup,
    server: Server,
    clock: SystemClock,
    loops: int,
    per_node: int,
) -> tuple[Workload, InstanceFactory]:
    """Fill the store, start the server and attach ``loops`` workers to it."""
    store = server.store
    await ShoalService(store, clock).apply([workload()])
    stored = await Repository(store, clock).get_workload("default", "app")
    assert stored is not None
    wl, factory = stored.value, InstanceFactory(clock.now())
    runtimes = [MockRuntime(clock) for _ in range(loops)]
    records = [
        await running_instance(factory, wl, name(index), runtime)
        for index, runtime in enumerate(runtimes)
        for _ in range(per_node)
    ]
    for start in range(0, len(records), 128):
        chunk = records[start : start + 128]
        await store.txn(
            [],
            [PutOp(instance_key(i.namespace, i.name), i.model_dump_json().encode()) for i in chunk],
        )

    async def count_changes(from_revision: int) -> None:
        async for _ in store.watch(INSTANCES, from_revision):
            server.seen += 1

    tg.start_soon(count_changes, await store.revision() + 1)
    if server.assignments is not None:
        await tg.start(server.assignments.run)
    gateway = NodeStateGateway(store, CallVerifier(TOKEN), assignments=server.assignments)
    # grace 0: cancelling ends the workers' open watches at once.
    port = await tg.start(
        functools.partial(serve_grpc, grace=0), "127.0.0.1:0", [gateway.handler()]
    )
    server.address = f"127.0.0.1:{port}"
    limiter = anyio.CapacityLimiter(STARTING)

    async def attach(index: int, runtime: MockRuntime) -> None:
        ident = NodeIdentity(name(index), SigningKey.generate())
        remote = await stack.enter_async_context(
            RemoteNodeState(ident, TOKEN, known(server.address))
        )
        counter = Counter()
        server.counters.append(counter)
        view = _CountingState(remote, counter)
        loop = NodeLoop(
            node(ident), view, runtime, clock, resync=HOUR, heartbeat=HOUR, probe_tick=HOUR
        )
        async with limiter:
            await tg.start(loop.run)

    # The first worker first, so that server.counters[0] is the one placements go to.
    await attach(0, runtimes[0])
    async with anyio.create_task_group() as attaching:
        for index, runtime in enumerate(runtimes[1:], start=1):
            attaching.start_soon(attach, index, runtime)
    return wl, factory


async def place(
    server: Server, decodes: Counter, wl: Workload, factory: InstanceFactory, idle: float
) -> None:
    """Place one instance on the first worker, wait until it runs and all is quiet; count."""
    counters, store, figures = server.counters, server.store, server.figures
    before = [c.count for c in counters]
    seen, decoded, filtered = server.seen, server.decoded, decodes.count
    cpu, began = time.process_time(), time.monotonic()
    inst = factory.new(wl, factory.fresh_uid(wl), state=InstanceState.SCHEDULED)
    inst = inst.model_copy(update={"node": name(0), "reason": "Scheduled"})
    await store.put(instance_key(inst.namespace, inst.name), inst.model_dump_json().encode())
    with anyio.fail_after(WAIT):
        await until_running(store, inst)
        figures.latency.append(time.monotonic() - began)
        await quiet([*counters, decodes])
    spent, elapsed = time.process_time() - cpu, time.monotonic() - began
    after = [c.count for c in counters]
    figures.changes.append(server.seen - seen)
    figures.others.append(sum(after[1:]) - sum(before[1:]))
    figures.own.append(after[0] - before[0])
    figures.decoded.append(server.decoded - decoded + decodes.count - filtered)
    figures.cpu.append(spent)
    figures.net.append(spent - idle * elapsed)


async def until_running(store: StateStore, inst: Instance) -> None:
    key = instance_key(inst.namespace, inst.name)
    while True:
        kv = await store.get(key)
        if kv is not None and Instance.model_validate_json(kv.value).state == InstanceState.RUNNING:
            return
        await anyio.sleep(0.05)


def per_change(values: Sequence[float], changes: Sequence[int]) -> float:
    """The median over placements of ``value / changes`` of that placement."""
    return statistics.median(v / max(c, 1) for v, c in zip(values, changes, strict=True))


def report(servers: Sequence[Server], loops: int, per_node: int, idle: float) -> None:
    print(
        f"  idle CPU rate (keepalives of {2 * loops:,} channels, nothing changing):"
        f" {idle * 1000:,.1f} ms per s"
    )
    cpu: dict[str, tuple[float, float]] = {}
    for server in servers:
        f = server.figures
        changes = f.changes
        cpu[server.mode] = (per_change(f.cpu, changes), per_change(f.net, changes))
        print(
            f"  {server.mode}: {len(changes)} placements on {name(0)}, median"
            f" {statistics.median(changes):g} instance changes each (scheduled, starting,"
            f" running), {statistics.median(f.latency) * 1000:,.0f} ms to running"
        )
        print(
            f"    delivered to the {loops - 1} other workers: {per_change(f.others, changes):,.2f}"
            f" per change (aim: 0; max over placements {max(f.others)}; the cluster holds"
            f" {loops * per_node:,}+ instances)"
        )
        own = per_change(f.own, changes)
        print(f"    delivered to {name(0)}'s own loop: {own:,.2f} per change")
        print(
            f"    decoded by the server: {per_change(f.decoded, changes):,.1f} instance records"
            " per change"
        )
        print(
            f"    process CPU: {cpu[server.mode][0] * 1000:,.1f} ms per change"
            f" ({cpu[server.mode][1] * 1000:,.1f} ms less the idle rate)"
        )
    (raw_a, net_a), (raw_f, net_f) = cpu["assignments"], cpu["filtered"]
    net_ratio = f"{net_f / net_a:,.1f}x" if net_a > 0 else "n/a (no CPU above idle)"
    print(
        f"  CPU per change, filtered / assignments: {raw_f / raw_a:,.1f}x"
        f" ({net_ratio} less the idle rate)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-loops", type=bounded("--node-loops", 2, 2000), default=500)
    parser.add_argument("--per-node", type=bounded("--per-node", 0, 1000), default=5)
    parser.add_argument("--changes", type=bounded("--changes", 1, 100), default=5)
    args = parser.parse_args()
    anyio.run(measure, args.node_loops, args.per_node, args.changes)


if __name__ == "__main__":
    main()
