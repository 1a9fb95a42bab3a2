"""Benchmark: time for a tag change to reach every member of an N-node Serf cluster on loopback.

Starts N real ``serf agent`` processes, each supervised by a
:class:`~shoal.cluster.SerfCluster` on free ports of 127.0.0.1, so with Serf's
``local`` timing profile: gossip every 100 ms to 3 members, each update sent
``RetransmitMult`` (2) x ceil(log10(N+1)) times by every member that has it,
and a full push/pull state sync with one random member every 15 s (memberlist
scales that up above 32 members: 30 s to 64, 45 s to 128). The agents share
one gossip key and RPC auth key, with data dirs in a temporary directory.
Each joins every earlier one; the bench waits (bounded) until every member
lists all N alive. Then, per round, one member (a different one each round)
calls ``set_tags`` with a new value, and the clock runs from just before that
call until:

* own agent: the member's own ``local_node()`` shows the new value. This is
  the floor, one local round trip, but no lower bound on the rest: Serf's
  tags RPC returns only once memberlist has sent the update as often as it
  will, a gossip tick or two, so half the others often have it first;
* half the others: the median other member's ``members()`` shows it (each
  polls its agent every ``--poll`` ms from the start of the round);
* every other: the last other member's ``members()`` shows it: gossip's
  propagation time. Those few sends can all miss a member, which then learns
  the change only at a push/pull sync, seconds later; the bench counts the
  rounds where that happened (the last member took over 1 s);
* every other events(): every other member's ``events()`` delivered an
  ``updated`` event carrying it, which is what a subscriber such as the
  leader's MembershipSync waits for. Serf's agent holds member events until
  none came for 1 s; the bench prints how much later than ``members()``
  they came.

Each line prints the p50 and max over the rounds, and its p50's ratio to the
floor's p50; one warm-up round is not counted. The aim: half the others see a
change within twice the floor (gossip reaches most of 32 members in about
log3(32), some 3, ticks). Every agent is stopped on exit, also on Ctrl-C,
SIGTERM or an error.

The default, 32 members, is the largest N whose push/pull interval stays
15 s, so a run takes about a minute: in about a third of the rounds a
straggler keeps the round going some seconds longer (up to about one
push/pull interval, now and then more). On 2 cores, 64 members start in about 5 s and
128 in about 25 s, but then nearly every round waits for a straggler, at
push/pull syncs 30 and 45 s apart, and 128 agents load the machine enough to
make the floor four times slower.

Run with ``make bench`` or ``uv run python bench/gossip.py [--nodes N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import bounded  # noqa: E402

from shoal.cluster import MemberEvents, SerfCluster, new_gossip_key, new_join_token  # noqa: E402
from shoal.interfaces import GossipState, Member, MemberEventKind, ShoalError  # noqa: E402
from tests.ports import free_tcp_udp_port  # noqa: E402

TAG = "bench"
"""The tag each round changes."""
SETTLE_WAIT = 60.0
"""Upper bound, in seconds, on every member seeing every other alive once all started."""
STRAGGLER = 1.0
"""A member later than this, in seconds, missed the gossip and waited for a push/pull sync."""
AIM = 2.0
"""Aim for the ratio of "half the others" to the floor."""
MAX_NODES = 128
MAX_ROUNDS = 100


class GossipStalled(Exception):
    """A round's tag change did not reach every member in time."""


def push_pull_interval(nodes: int) -> float:
    """Return memberlist's push/pull interval for ``nodes`` members in the local profile."""
    return 15.0 * (1 + max(0, math.ceil(math.log2(nodes) - 5)))  # 32 = 2**5


def round_wait(nodes: int) -> float:
    """Upper bound, in seconds, on one round: two push/pull intervals, then Serf's 3 s hold."""
    return 2 * push_pull_interval(nodes) + 5.0


@asynccontextmanager
async def serf_cluster(root: Path, nodes: int) -> AsyncIterator[list[SerfCluster]]:
    """Start ``nodes`` agents under ``root``, each joining every earlier one; stop them after.

    Joining every earlier member makes each pair exchange state over TCP, so
    forming the cluster does not wait on UDP gossip that a busy machine drops.
    Each agent's start is bounded by SerfCluster's ``startup_timeout``.
    """
    gossip_key, rpc_auth = new_gossip_key(), new_join_token()
    async with AsyncExitStack() as stack:
        started: list[SerfCluster] = []
        binds: list[str] = []
        for index in range(nodes):
            bind = f"127.0.0.1:{free_tcp_udp_port()}"
            cluster = SerfCluster(
                f"node-{index:03d}",
                root / f"node-{index:03d}",
                bind=bind,
                rpc_addr=f"127.0.0.1:{free_tcp_udp_port()}",
                rpc_auth=rpc_auth,
                encrypt_key=gossip_key,
                tags={TAG: "start"},
                join=list(binds),
                log_level="warn",
                restart_delay=60.0,  # an agent dying mid-run fails the run instead
            )
            started.append(await stack.enter_async_context(cluster))
            binds.append(bind)
        try:
            yield started
        finally:
            # Agents being stopped log errors about the sockets they lose: not news here.
            logging.getLogger("shoal.cluster.serf").setLevel(logging.CRITICAL)


async def until_members(
    cluster: SerfCluster, events: MemberEvents, check: Callable[[Sequence[Member]], bool]
) -> None:
    """Return once ``check`` holds for ``cluster``'s members, re-checking after each event."""
    while not check(await cluster.members()):
        await anext(events)


async def until_all_see_everyone(clusters: Sequence[SerfCluster]) -> None:
    """Return once every member lists every member alive."""

    def all_alive(members: Sequence[Member]) -> bool:
        alive = sum(member.state == GossipState.ALIVE for member in members)
        return alive == len(clusters)

    streams = [cluster.events() for cluster in clusters]  # subscribed before the first look
    try:
        async with anyio.create_task_group() as group:
            for cluster, events in zip(clusters, streams, strict=True):
                group.start_soon(until_members, cluster, events, all_alive)
    finally:
        for events in streams:
            await events.aclose()


@dataclass
class Round:
    """One round's times, in seconds from just before ``set_tags``."""

    own: float = math.nan
    """Until the origin's own ``local_node()`` showed the new value."""
    members: dict[str, float] = field(default_factory=dict)
    """Per other member, until its ``members()`` showed the new value."""
    events: dict[str, float] = field(default_factory=dict)
    """Per other member, until its ``events()`` delivered the ``updated`` event."""


def carries(member: Member, origin: str, value: str) -> bool:
    return member.name == origin and member.tags.get(TAG) == value


async def watch_members(
    cluster: SerfCluster, origin: str, value: str, began: float, poll: float, into: Round
) -> None:
    """Poll ``cluster``'s members until ``origin`` carries ``value``; note when."""
    # Polling on purpose: members() changes the moment gossip lands, while the
    # event saying so comes only after Serf's 1 s hold.
    while True:
        if any(carries(member, origin, value) for member in await cluster.members()):
            break
        await anyio.sleep(poll)
    into.members[cluster.name] = time.perf_counter() - began


async def watch_events(
    cluster: SerfCluster, events: MemberEvents, origin: str, value: str, began: float, into: Round
) -> None:
    """Read ``events`` until an ``updated`` event shows ``origin`` carrying ``value``; note when."""
    async for event in events:
        if event.kind == MemberEventKind.UPDATED and any(
            carries(member, origin, value) for member in event.members
        ):
            into.events[cluster.name] = time.perf_counter() - began
            return


async def change_tag(
    clusters: Sequence[SerfCluster], origin: SerfCluster, value: str, poll: float
) -> Round:
    """Set ``TAG`` to ``value`` on ``origin``; time it reaching itself and every other member.

    Raises:
        GossipStalled: some member did not see the change in time.

    """
    others = [cluster for cluster in clusters if cluster is not origin]
    streams = [cluster.events() for cluster in others]  # subscribed before the change
    result = Round()
    wait = round_wait(len(clusters))
    try:
        with anyio.move_on_after(wait) as bound:
            async with anyio.create_task_group() as group:
                began = time.perf_counter()
                for cluster, events in zip(others, streams, strict=True):
                    group.start_soon(
                        watch_members, cluster, origin.name, value, began, poll, result
                    )
                    group.start_soon(
                        watch_events, cluster, events, origin.name, value, began, result
                    )
                await origin.set_tags({TAG: value})
                if not carries(await origin.local_node(), origin.name, value):
                    raise GossipStalled(f"{origin.name}'s own agent does not show {TAG}={value}")
                result.own = time.perf_counter() - began
    finally:
        for events in streams:
            await events.aclose()
    if bound.cancelled_caught or len(result.events) < len(others):
        unseen = sorted({c.name for c in others} - result.members.keys())
        unheard = sorted({c.name for c in others} - result.events.keys())
        raise GossipStalled(
            f"{origin.name} set {TAG}={value}, and after {wait:g} s these members did not "
            f"show it in members(): {unseen or 'none'}; got no updated event: {unheard or 'none'}"
        )
    return result


async def run_rounds(nodes: int, rounds: int, poll: float) -> tuple[float, list[Round]]:
    """Start the cluster and run the rounds; return how long forming it took and each round.

    Raises:
        GossipStalled: the cluster did not form, or a round's change did not spread, in time.

    """
    with tempfile.TemporaryDirectory(prefix="shoal-bench-gossip-") as tmp:
        began = time.perf_counter()
        async with serf_cluster(Path(tmp), nodes) as clusters:
            with anyio.move_on_after(SETTLE_WAIT) as bound:
                await until_all_see_everyone(clusters)
            if bound.cancelled_caught:
                raise GossipStalled(
                    f"after {SETTLE_WAIT:g} s, not every member saw all {nodes} alive"
                )
            formed = time.perf_counter() - began
            results = []
            for number in range(rounds + 1):  # round 0 warms up and is not counted
                result = await change_tag(clusters, clusters[number % nodes], f"r{number}", poll)
                if number:
                    results.append(result)
    return formed, results


def line(label: str, samples: list[float], floor: float) -> str:
    p50, worst = statistics.median(samples), max(samples)
    return (
        f"{label:<26} p50 {p50 * 1000:7.1f} ms  max {worst * 1000:7.1f} ms"
        f"  ratio p50 {p50 / floor:5.2f}"
    )


def report(nodes: int, formed: float, results: list[Round]) -> None:
    own = [result.own for result in results]
    half = [statistics.median(result.members.values()) for result in results]
    every = [max(result.members.values()) for result in results]
    notified = [max(result.events.values()) for result in results]
    floor = statistics.median(own)
    print(
        f"tag change on {nodes} serf agents on loopback (local profile), {len(results)} rounds; "
        f"all up and seeing each other in {formed:.2f} s"
    )
    print(line("own agent (the floor)", own, floor))
    print(line("half the others members()", half, floor))
    print(line("every other members()", every, floor))
    print(line("every other events()", notified, floor))
    held = [r.events[name] - seen for r in results for name, seen in r.members.items()]
    print(
        f"events() came p50 {statistics.median(held) * 1000:.0f} ms after members() showed "
        "the change (Serf's agent holds member events 1 s)"
    )
    late = sum(time > STRAGGLER for time in every)
    print(
        f"{late} of {len(results)} rounds had a member that missed the gossip and got the "
        f"change over {STRAGGLER:g} s late, at a push/pull sync (every "
        f"{push_pull_interval(nodes):g} s here)"
    )
    ratio = statistics.median(half) / floor
    print(f"ratio (half the others / own agent): {ratio:.2f}  (aim: < {AIM:g})")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def stop_on_signals(
    signals: AsyncIterator[int], work: anyio.CancelScope, stopped_by: list[int]
) -> None:
    """Cancel ``work`` on the first signal; ignore the rest, so teardown runs to its end.

    (``uv run`` passes a terminal's Ctrl-C on to Python, which gets it twice.)
    """
    async for signum in signals:
        if not stopped_by:
            print(f"{signal.Signals(signum).name}: stopping every serf agent", file=sys.stderr)
            stopped_by.append(signum)
            work.cancel()


async def measure(nodes: int, rounds: int, poll: float) -> int | None:
    """Run the bench and print its report; return the signal that stopped it first, if one did."""
    outcome: tuple[float, list[Round]] | None = None
    stopped_by: list[int] = []
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as work:
                group.start_soon(stop_on_signals, signals, work, stopped_by)
                try:
                    outcome = await run_rounds(nodes, rounds, poll)
                except* ShoalError:
                    # A terminal's Ctrl-C reaches the agents too, which may exit first.
                    if not stopped_by:
                        raise
            group.cancel_scope.cancel()
    if stopped_by:
        return stopped_by[0]
    assert outcome is not None
    report(nodes, *outcome)
    return None


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=bounded("nodes", 2, MAX_NODES), default=32)
    parser.add_argument("--rounds", type=bounded("rounds", 1, MAX_ROUNDS), default=10)
    parser.add_argument(
        "--poll", type=bounded("poll", 1, 1000), default=20, help="ms between members() polls"
    )
    args = parser.parse_args()
    try:
        stopped_by = anyio.run(measure, args.nodes, args.rounds, args.poll / 1000)
    except* (ShoalError, GossipStalled) as failed:
        sys.exit("gossip bench failed: " + "; ".join(map(str, leaves(failed))))
    if stopped_by is not None:
        print("every serf agent stopped", file=sys.stderr)
        raise SystemExit(128 + stopped_by)


if __name__ == "__main__":
    main()
