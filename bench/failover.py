"""Benchmark: from SIGKILL of a worker to Serf's failure event, and on to its replicas elsewhere.

Starts a cluster of real processes with the multi-node test harness
(:mod:`tests.multinode.support`): one server and ``--workers`` workers, each a
``shoal agent`` with ``--runtime mock`` on a loopback address of its own,
running its own ``serf agent`` (the ``local`` timing profile, as on any
loopback address). Each round applies a fresh workload of ``--replicas``
replicas with the ``spread`` strategy, waits until all of them run, SIGKILLs
one worker (another one each round; its serf agent dies with it) and reads
two spans off the server's event log:

* detection: from the kill to the server's ``NodeFailed`` event for the
  killed node — memberlist probing the dead member and waiting out its
  suspicion timeout, Serf's agent coalescing the ``member-failed`` event, and
  the leader copying it into the node record. This is the floor: Shoal
  cannot act on a failure before it hears of it, and the span is Serf's
  timing, not Shoal's code;
* rescheduling: from that ``NodeFailed`` event to the ``Started`` event of
  the last replacement — the control loop marking the lost instances and
  placing their replacements, the surviving workers' node loops receiving
  them over gRPC, starting them (mock runtime: no container) and reporting
  them running.

The server (``NodeFailed``) and the workers (``Started``) stamp events with
the system clock of this machine, the one the kill time is read from, so the
spans need no clock sync; how often the bench polls does not enter them.
Each round ends by starting the killed worker again (same data dir and
identity), waiting until it is alive and its stale copies are gone, deleting
the workload and waiting until its instances are gone, so every round starts
from the same steady state.

Output: one line per round (the killed worker, how many replicas it held,
both spans, their ratio), then both medians and their ratio, rescheduling /
detection. The aim: under 0.20, i.e. rescheduling adds less than a fifth to
what detecting the failure already takes. Every agent is killed on exit, also
on an error, Ctrl-C or SIGTERM. Needs ``serf``. Run with ``make bench`` or
``uv run python bench/failover.py [--workers N] [--replicas N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

from shoal.interfaces import Event, GossipState, Instance, InstanceState  # noqa: E402
from tests.multinode.support import (  # noqa: E402
    LocalCluster,
    NodeProcess,
    wait_until,
    workload_yaml,
)

AIM = 0.20
"""Aim for the ratio of rescheduling to detection."""
BLOCK = 200
"""Loopback block 127.N.0.0/16 of the cluster: far from the test suite's (from 20 up),
so a multi-node test run at the same time does not collide with the bench."""
WAIT = 60.0
"""Upper bound, in seconds, on any one wait."""
EVENTS = 5000
"""How many of the latest events to read: the most the API returns, and the most kept."""
MAX_WORKERS = 16
MAX_REPLICAS = 200
MAX_ROUNDS = 100


@dataclass(frozen=True)
class Round:
    """One kill and what followed, in seconds."""

    victim: str
    """The worker killed."""
    moved: int
    """How many replicas it held, each replaced elsewhere."""
    detection: float
    """From the kill to the server's NodeFailed event."""
    rescheduling: float
    """From the NodeFailed event to the last replacement's Started event."""


def running(instances: list[Instance]) -> dict[str, str]:
    """Return instance name → node of the running instances that are not being deleted."""
    return {
        inst.name: inst.node
        for inst in instances
        if inst.state == InstanceState.RUNNING and not inst.deleting and inst.node is not None
    }


class Observer:
    """The operator's view of one cluster, through its server's signed REST API."""

    def __init__(self, cluster: LocalCluster, server: NodeProcess, nodes: int) -> None:
        self.cluster = cluster
        self.server = server
        self.nodes = nodes

    def all_alive(self) -> bool:
        """Whether the server lists every node of the cluster, all alive."""
        nodes = self.cluster.query(self.server, lambda client: client.list_nodes())
        alive = sum(node.state == GossipState.ALIVE for node in nodes)
        return len(nodes) == self.nodes == alive

    def instances(self, workload: str) -> list[Instance]:
        """Return the instances of ``workload``."""
        return self.cluster.query(
            self.server, lambda client: client.list_instances(workload=workload)
        )

    def events(self) -> list[Event]:
        """Return the latest events, oldest first."""
        return self.cluster.query(self.server, lambda client: client.list_events(limit=EVENTS))

    def wait(self, what: str, check: Callable[[], object]) -> None:
        """Return once ``check()`` is truthy; fail with the agents' logs after :data:`WAIT`."""
        wait_until(what, check, WAIT, self.cluster.logs)


def spans(
    observer: Observer,
    victim: str,
    workload: str,
    before: dict[str, str],
    killed_at: datetime,
) -> tuple[float, float] | None:
    """Return (detection, rescheduling) once every replica runs off ``victim``, else None.

    Raises:
        RuntimeError: the replicas that moved are not the ones ``victim`` held.

    """
    placed = running(observer.instances(workload))
    if len(placed) != len(before) or victim in placed.values():
        return None
    replacements = placed.keys() - before.keys()
    lost = {name for name, node in before.items() if node == victim}
    if len(replacements) != len(lost) or not lost.isdisjoint(placed):
        raise RuntimeError(
            f"{victim} held {sorted(lost)}, but {sorted(replacements)} replaced instances"
        )
    failed_at: datetime | None = None
    started: dict[str, datetime] = {}
    for event in observer.events():  # oldest first
        if event.reason == "NodeFailed" and event.object.name == victim:
            if failed_at is None and event.time >= killed_at:
                failed_at = event.time
        elif event.reason == "Started" and event.object.name in replacements:
            started.setdefault(event.object.name, event.time)
    if failed_at is None or len(started) < len(replacements):
        return None  # a status is written just before its event
    return (
        (failed_at - killed_at).total_seconds(),
        (max(started.values()) - failed_at).total_seconds(),
    )


def failover_round(
    cluster: LocalCluster, observer: Observer, victim: NodeProcess, number: int, replicas: int
) -> Round:
    """Run a workload, kill ``victim``, time its replicas' move; restore the steady state."""
    workload = f"failover-{number}"
    document = json.loads(workload_yaml(workload, replicas))
    cluster.query(observer.server, lambda client: client.apply_documents([document]))
    before: dict[str, str] = {}

    def spread() -> bool:
        before.clear()
        before.update(running(observer.instances(workload)))
        return len(before) == replicas and victim.name in before.values()

    observer.wait(f"{replicas} replicas of {workload} running, some on {victim.name}", spread)

    killed_at = datetime.now(UTC)
    victim.signal(signal.SIGKILL)
    measured: list[tuple[float, float]] = []

    def moved() -> bool:
        found = spans(observer, victim.name, workload, before, killed_at)
        if found is not None:
            measured.append(found)
        return found is not None

    observer.wait(f"{victim.name} failed and its replicas of {workload} running elsewhere", moved)

    cluster.start(victim, timeout=WAIT)
    observer.wait(
        f"{victim.name} alive again, its stale copies gone",
        lambda: (
            observer.all_alive()
            and all(i.state != InstanceState.LOST for i in observer.instances(workload))
        ),
    )
    cluster.query(observer.server, lambda client: client.delete_workload(workload))
    observer.wait(f"the instances of {workload} gone", lambda: not observer.instances(workload))
    detection, rescheduling = measured[0]
    held = sum(node == victim.name for node in before.values())
    return Round(victim.name, held, detection, rescheduling)


def run_rounds(workers: int, replicas: int, rounds: int) -> list[Round]:
    """Start the cluster, run the rounds, kill every agent; return each round."""
    with (
        tempfile.TemporaryDirectory(prefix="shoal-bench-failover-") as tmp,
        closing(LocalCluster(Path(tmp), block=BLOCK)) as cluster,
    ):
        server = cluster.add("srv", "server")
        cluster.start(server, timeout=WAIT)
        members = [cluster.add(f"w{i}", "worker", join=[server]) for i in range(1, workers + 1)]
        cluster.start(*members, timeout=WAIT)
        observer = Observer(cluster, server, workers + 1)
        observer.wait(f"{workers + 1} nodes alive", observer.all_alive)
        return [
            failover_round(cluster, observer, members[number % workers], number, replicas)
            for number in range(rounds)
        ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms"


def report(workers: int, replicas: int, results: list[Round]) -> None:
    print(
        f"SIGKILL of a worker: 1 server + {workers} workers (shoal agents, mock runtime, "
        f"serf local profile), {replicas} replicas spread, {len(results)} rounds"
    )
    for number, result in enumerate(results, 1):
        print(
            f"round {number}  killed {result.victim} ({result.moved} replicas)"
            f"  detection {ms(result.detection)}  rescheduling {ms(result.rescheduling)}"
            f"  ratio {result.rescheduling / result.detection:5.2f}"
        )
    detection = statistics.median(r.detection for r in results)
    rescheduling = statistics.median(r.rescheduling for r in results)
    print(f"detection    (kill → NodeFailed, the floor)        median {ms(detection)}")
    print(f"rescheduling (NodeFailed → last replacement runs)  median {ms(rescheduling)}")
    print(f"ratio (rescheduling / detection): {rescheduling / detection:.2f}  (aim: < {AIM:.2f})")


def exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so the agents are killed on the way out."""
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=bounded("workers", 2, MAX_WORKERS), default=2)
    parser.add_argument("--replicas", type=bounded("replicas", 1, MAX_REPLICAS), default=6)
    parser.add_argument("--rounds", type=bounded("rounds", 1, MAX_ROUNDS), default=3)
    args = parser.parse_args()
    if args.replicas < args.workers:
        parser.error("replicas must be at least workers: every worker is killed holding some")
    if shutil.which("serf") is None:
        sys.exit("failover needs serf (apt-get install serf, or `make run` once)")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    try:
        results = run_rounds(args.workers, args.replicas, args.rounds)
    except KeyboardInterrupt:
        print("interrupted; every agent is killed", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except (AssertionError, RuntimeError) as failed:  # the harness's waits fail with AssertionError
        sys.exit(f"failover bench failed: {failed}")
    report(args.workers, args.replicas, results)


if __name__ == "__main__":
    main()
