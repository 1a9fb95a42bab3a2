"""Benchmark: a rolling update of 100 replicas against its ideal, batches x the readiness delay.

Shoal's number: the real control loop and ``--nodes`` real node loops
(``NodeLoop.run`` on ``MockRuntime``, 10 nodes by default) over one
MemoryStore in this process, with real time. Every instance has a readiness
probe with an initial delay of R seconds (``--delay``): it runs at once and
becomes ready R later, when its first check (due then) passes; later checks
come every ``--probe-period`` seconds (1 by default; the period does not
enter the ideal, it only sets how much probing the rollout does beside).
A workload of ``--replicas`` replicas (100) runs one image; then its image
changes, and the clock runs from that apply until the workload's status says
``RolloutComplete`` with every replica updated and available.

Its floor, the ideal: a rollout that waits for nothing but readiness takes
``ceil(replicas / (max_surge + max_unavailable)) x R`` (each batch of new
instances starts at once and is ready R later; the defaults, 25% and 25%,
give 2 batches of 50). The ideal is computed, not measured; the script runs
``--rounds`` rollouts back and forth between two images and prints their
median, the ideal and the ratio (aim: under 1.2).

Run with ``uv run python bench/rollout.py [--replicas 100] [--delay 0.5]
[--nodes 10] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

from shoal.core import ControlLoop, DefaultScheduler, LocalNodeState, NodeLoop, ShoalService  # noqa: E402
from shoal.interfaces import (  # noqa: E402
    Capacity,
    Node,
    SystemClock,
    Workload,
    WorkloadSpec,
)
from shoal.runtime import MockRuntime  # noqa: E402
from shoal.state import MemoryStore  # noqa: E402

IMAGES = ("registry.local/app:1", "registry.local/app:2")
WAIT = 300.0
"""Upper bound, in seconds, on one rollout."""


def spec(replicas: int, image: str, delay: float = 0.0, period: float = 1.0) -> WorkloadSpec:
    probe = {
        "exec": {"command": ["true"]},
        "initial_delay_seconds": delay,
        "period_seconds": period,
    }
    container = {"name": "main", "image": image, "readiness_probe": probe}
    return WorkloadSpec.model_validate(
        {"name": "app", "replicas": replicas, "template": {"containers": [container]}}
    )


def complete(workload: Workload, image: str) -> bool:
    """Return whether ``workload`` has rolled out ``image`` to every replica."""
    status = workload.status
    want = workload.spec.replicas
    progressing = next((c for c in status.conditions if c.type == "Progressing"), None)
    return (
        workload.spec.template.containers[0].image == image
        and status.revision == workload.revision
        and status.updated_replicas == want
        and status.available_replicas == want
        and status.replicas == want
        and progressing is not None
        and progressing.reason == "RolloutComplete"
    )


async def until_complete(service: ShoalService, image: str) -> None:
    """Wait (bounded) until the workload has rolled out ``image``."""
    with anyio.fail_after(WAIT):
        # A bench, not a test: polling every 10 ms is its clock's resolution.
        while not complete(await service.get_workload("app"), image):  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def measure(
    replicas: int, delay: float, nodes: int, rounds: int, period: float
) -> list[float]:
    """Return the seconds of each rollout."""
    clock = SystemClock()
    took: list[float] = []
    capacity = Capacity.model_validate({"cpu": "64", "memory": "256Gi", "pods": 1000})
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        for index in range(nodes):
            runtime = MockRuntime(clock)
            node = Node(
                name=f"node-{index:02d}", capacity=capacity, allocatable=capacity, runtime="mock"
            )
            loop = NodeLoop(
                node,
                LocalNodeState(store, node.name),
                runtime,
                clock,
                resync=3600,
                heartbeat=3600,
                probe_tick=0.05,
            )
            await tg.start(loop.run)
        await tg.start(ControlLoop(store, DefaultScheduler(), clock).run)
        await service.apply([spec(replicas, "registry.local/app:0", delay, period)])
        await until_complete(service, "registry.local/app:0")
        for round_ in range(rounds):
            image = IMAGES[round_ % 2]
            started = time.perf_counter()
            await service.apply([spec(replicas, image, delay, period)])
            await until_complete(service, image)
            took.append(time.perf_counter() - started)
            print(f"  rollout {round_ + 1}: {took[-1]:.2f} s", flush=True)
        tg.cancel_scope.cancel()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=bounded("--replicas", 1, 1000), default=100)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds from a start to ready")
    parser.add_argument("--nodes", type=bounded("--nodes", 1, 100), default=10)
    parser.add_argument("--rounds", type=bounded("--rounds", 1, 20), default=3)
    parser.add_argument(
        "--probe-period", type=float, default=1.0, help="seconds between checks once ready"
    )
    args = parser.parse_args()
    if not 0.05 <= args.delay <= 10:
        parser.error("--delay must be 0.05 to 10 seconds")
    if not 0.05 <= args.probe_period <= 10:
        parser.error("--probe-period must be 0.05 to 10 seconds")
    probe = spec(args.replicas, IMAGES[0]).update
    surge, unavailable = probe.surge(args.replicas), probe.unavailable(args.replicas)
    batches = math.ceil(args.replicas / (surge + unavailable))
    ideal = batches * args.delay
    print(
        f"rolling update of {args.replicas} replicas on {args.nodes} mock nodes, each ready "
        f"{args.delay:g} s after it starts (then probed every {args.probe_period:g} s), "
        f"max_surge {surge}, max_unavailable {unavailable}"
    )
    took = anyio.run(measure, args.replicas, args.delay, args.nodes, args.rounds, args.probe_period)
    median = statistics.median(took)
    print(f"rollout median  {median:6.2f} s")
    print(f"ideal           {ideal:6.2f} s  ({batches} batches x {args.delay:g} s)")
    print(f"ratio (rollout / ideal): {median / ideal:.2f}  (aim: < 1.2)")


if __name__ == "__main__":
    main()
