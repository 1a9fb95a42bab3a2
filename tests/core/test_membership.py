"""MembershipSync: gossip states land in node records, and the loops act on them."""

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from datetime import timedelta

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus

from shoal.cluster import StaticCluster
from shoal.core import LocalNodeState, MembershipSync, NodeLoop
from shoal.interfaces import EventType, GossipState, Instance, InstanceState, Member, Node
from shoal.runtime import MockRuntime
from tests.core.support import Cluster, FakeCluster, eventually, make_node, spec

pytestmark = pytest.mark.anyio


async def instances(cluster: Cluster) -> list[Instance]:
    return [s.value for s in await cluster.control.repo.list_instances()]


async def node_state(cluster: Cluster, name: str) -> GossipState:
    stored = await cluster.control.repo.get_node(name)
    assert stored is not None
    return stored.value.state


def in_state(cluster: Cluster, name: str, state: GossipState) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await node_state(cluster, name) == state

    return check


def running_on(cluster: Cluster, placed: dict[str, int]) -> Callable[[], Awaitable[bool]]:
    """Return a check: exactly ``placed`` running instances per node, and no other instance."""

    async def check() -> bool:
        current = await instances(cluster)
        counts = dict.fromkeys(placed, 0)
        for inst in current:
            if inst.state != InstanceState.RUNNING or inst.node not in counts:
                return False
            counts[inst.node] += 1
        return counts == placed

    return check


async def start_node_loop(tg: TaskGroup, loop: NodeLoop) -> anyio.CancelScope:
    """Run ``loop`` until the returned scope is cancelled (the agent stops)."""
    scope = anyio.CancelScope()

    async def run(*, task_status: TaskStatus[None]) -> None:
        with scope:
            await loop.run(task_status=task_status)

    await tg.start(run)
    return scope


async def test_a_failed_node_is_replaced_cleaned_up_on_return_and_drained_when_it_leaves(
    cluster: Cluster,
) -> None:
    clock, store = cluster.clock, cluster.store
    node_a, node_b = make_node("a", node_id="id-a"), make_node("b", node_id="id-b")
    gossip = FakeCluster(FakeCluster.member(node_a), FakeCluster.member(node_b))
    runtime_a, runtime_b = MockRuntime(clock), MockRuntime(clock)
    sync = MembershipSync(store, gossip, clock)
    async with aclosing(gossip), anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        await tg.start(sync.run)
        await start_node_loop(tg, NodeLoop(node_a, LocalNodeState(store, "a"), runtime_a, clock))
        b_agent = await start_node_loop(
            tg, NodeLoop(node_b, LocalNodeState(store, "b"), runtime_b, clock)
        )
        await cluster.service.apply([spec(replicas=4, placement={"strategy": "spread"})])
        await eventually(running_on(cluster, {"a": 2, "b": 2}))

        # b goes dark: gossip declares it failed; its instances are lost and replaced on a.
        b_agent.cancel()
        gossip.set_state("b", GossipState.FAILED)

        async def replaced() -> bool:
            current = await instances(cluster)
            lost = [i for i in current if i.state == InstanceState.LOST and i.node == "b"]
            on_a = [i for i in current if i.state == InstanceState.RUNNING and i.node == "a"]
            return len(lost) == 2 and len(on_a) == 4

        await eventually(replaced)
        assert await node_state(cluster, "b") == GossipState.FAILED
        assert len(await runtime_b.list()) == 2  # b still runs its stale copies

        # b comes back: its node loop removes the stale pods; exactly 4 instances remain.
        gossip.set_state("b", GossipState.ALIVE)
        b_agent = await start_node_loop(
            tg, NodeLoop(node_b, LocalNodeState(store, "b"), runtime_b, clock)
        )
        await eventually(running_on(cluster, {"a": 4, "b": 0}))
        assert await runtime_b.list() == []
        assert await node_state(cluster, "b") == GossipState.ALIVE

        # b gets work again, then leaves gracefully: its instances go, nothing fails.
        await cluster.service.scale("web", 6)
        await eventually(running_on(cluster, {"a": 4, "b": 2}))
        events_before = len(await cluster.service.list_events(limit=1000))
        b_agent.cancel()
        gossip.set_state("b", GossipState.LEFT)
        await eventually(running_on(cluster, {"a": 6, "b": 0}))
        assert await node_state(cluster, "b") == GossipState.LEFT
        since = (await cluster.service.list_events(limit=1000))[events_before:]
        assert not [e for e in since if e.type == EventType.WARNING]
        assert [e.reason for e in since if e.object.kind == "Node"] == ["NodeLeft"]
        removed = [e for e in since if e.object.kind == "Instance" and e.reason == "NodeLeft"]
        assert len(removed) == 2
        tg.cancel_scope.cancel()

    reasons = [(e.reason, e.type) for e in await cluster.service.list_events(kind="Node", name="b")]
    assert ("NodeFailed", EventType.WARNING) in reasons
    assert ("NodeAlive", EventType.NORMAL) in reasons


async def two_nodes(cluster: Cluster) -> tuple[FakeCluster, MembershipSync]:
    for name in ("a", "b"):
        await cluster.add_node(name, node_id=f"id-{name}")
    gossip = FakeCluster(
        *[FakeCluster.member(loop.node) for loop in cluster.nodes.values()],
    )
    return gossip, MembershipSync(cluster.store, gossip, cluster.clock, absent_grace=0)


async def test_a_suspect_node_keeps_its_instances_until_it_is_declared_failed(
    cluster: Cluster,
) -> None:
    gossip, sync = await two_nodes(cluster)
    await cluster.service.apply([spec(replicas=4, placement={"strategy": "spread"})])
    await cluster.settle()
    before = {i.uid: (i.node, i.state) for i in await instances(cluster)}

    gossip.set_state("b", GossipState.SUSPECT)
    await sync.sync_once()
    await cluster.settle()
    assert await node_state(cluster, "b") == GossipState.SUSPECT
    assert {i.uid: (i.node, i.state) for i in await instances(cluster)} == before
    events = await cluster.service.list_events(kind="Node", name="b")
    assert [(e.reason, e.type) for e in events][-1] == ("NodeSuspect", EventType.WARNING)

    gossip.set_state("b", GossipState.FAILED)
    await sync.sync_once()
    await cluster.control.reconcile_once()
    lost = [i for i in await instances(cluster) if i.state == InstanceState.LOST]
    assert len(lost) == 2
    await gossip.aclose()


async def test_a_member_with_the_name_but_another_node_id_is_another_node(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    gossip, sync = await two_nodes(cluster)
    impostor = Member(
        name="b", address="198.18.0.9:7946", state=GossipState.ALIVE, tags={"id": "id-x"}
    )
    gossip.set(impostor, kind=FakeCluster.kind(GossipState.ALIVE))
    await sync.sync_once()
    assert await node_state(cluster, "a") == GossipState.ALIVE
    assert await node_state(cluster, "b") == GossipState.FAILED
    assert "has node id 'id-x', not 'id-b'" in caplog.text
    (event,) = [e for e in await cluster.service.list_events() if e.reason == "NodeFailed"]
    assert event.object.name == "b" and event.type == EventType.WARNING
    assert "another machine uses the name" in event.message
    await gossip.aclose()


async def test_records_follow_the_member_list_and_only_changes_are_written(
    cluster: Cluster,
) -> None:
    gossip, sync = await two_nodes(cluster)
    await sync.sync_once()
    revision = await cluster.store.revision()
    await sync.sync_once()
    assert await cluster.store.revision() == revision  # nothing changed, nothing written

    gossip.set(
        Member(name="c", address="198.18.0.3:7946", state=GossipState.ALIVE),
        kind=FakeCluster.kind(GossipState.ALIVE),
    )
    gossip.set_state("a", GossipState.LEFT)
    gossip.forget("b")
    await sync.sync_once()
    assert await cluster.control.repo.get_node("c") is None  # a node registers itself
    assert await node_state(cluster, "a") == GossipState.LEFT
    assert await node_state(cluster, "b") == GossipState.FAILED
    (event,) = [e for e in await cluster.service.list_events() if e.reason == "NodeFailed"]
    assert event.message == "alive → failed: node b is not a member of the cluster"

    gossip.forget("a")  # a left and was forgotten: it stays left, not failed
    revision = await cluster.store.revision()
    await sync.sync_once()
    assert await node_state(cluster, "a") == GossipState.LEFT
    assert await cluster.store.revision() == revision
    await gossip.aclose()


async def test_the_static_one_node_cluster_keeps_its_node_alive_until_it_leaves(
    cluster: Cluster,
) -> None:
    node: Node = make_node("solo", node_id="id-solo", state="failed")  # a stale record
    await cluster.control.repo.put("/nodes/solo", node)
    static = StaticCluster("solo", tags={"id": "id-solo"})
    sync = MembershipSync(cluster.store, static, cluster.clock)
    async with static, anyio.create_task_group() as tg:
        await tg.start(sync.run)
        await eventually(in_state(cluster, "solo", GossipState.ALIVE))
        await static.leave()
        await eventually(in_state(cluster, "solo", GossipState.LEFT))
        tg.cancel_scope.cancel()


async def test_a_new_leader_does_not_fail_nodes_missing_from_its_first_view(
    cluster: Cluster,
) -> None:
    for name in ("a", "b"):
        await cluster.add_node(name, node_id=f"id-{name}")
    # The new leader's gossip has only heard of a so far.
    gossip = FakeCluster(FakeCluster.member(cluster.nodes["a"].node))
    sync = MembershipSync(cluster.store, gossip, cluster.clock, absent_grace=30)
    await sync.sync_once()
    assert await node_state(cluster, "b") == GossipState.ALIVE
    cluster.clock.advance(31)  # settled: still absent, so nobody answers for b
    await sync.sync_once()
    assert await node_state(cluster, "b") == GossipState.FAILED
    await gossip.aclose()


async def test_a_node_alive_in_gossip_but_silent_is_suspect_until_it_reports_again(
    cluster: Cluster,
) -> None:
    """Its node loop cannot reach the cluster state: no new instances, but it keeps its own."""
    clock = cluster.clock
    for name in ("a", "b"):
        await cluster.add_node(name, node_id=f"id-{name}")
    gossip = FakeCluster(*(FakeCluster.member(loop.node) for loop in cluster.nodes.values()))
    # Passes are run by hand here, far apart: a resync that long keeps them "regular".
    sync = MembershipSync(cluster.store, gossip, clock, resync=60, silent_after=40)
    await cluster.service.apply([spec(replicas=2, placement={"strategy": "spread"})])
    await cluster.settle()
    placed_on_b = {i.uid for i in await instances(cluster) if i.node == "b"}
    assert len(placed_on_b) == 1
    await sync.sync_once()

    async def beat(name: str) -> None:
        await cluster.control.repo.update(
            f"/nodes/{name}", Node, lambda n: n.model_copy(update={"heartbeat_at": clock.now()})
        )

    clock.advance(30)
    await beat("a")
    await sync.sync_once()
    assert await node_state(cluster, "b") == GossipState.ALIVE  # 30 s: not yet
    clock.advance(15)
    await sync.sync_once()
    assert await node_state(cluster, "a") == GossipState.ALIVE  # it beat 15 s ago
    assert await node_state(cluster, "b") == GossipState.SUSPECT
    event = (await cluster.service.list_events(kind="Node", name="b"))[-1]
    assert (event.reason, event.type) == ("NodeSuspect", EventType.WARNING)
    assert "alive in gossip but has not reported for 45 s" in event.message

    # New replicas go elsewhere; what b runs stays where it is.
    await cluster.service.scale("web", 4)
    await cluster.settle()
    now = await instances(cluster)
    assert {i.uid for i in now if i.node == "b"} == placed_on_b
    assert sorted(i.node or "-" for i in now) == ["a", "a", "a", "b"]

    await beat("b")
    await sync.sync_once()
    assert await node_state(cluster, "b") == GossipState.ALIVE
    await gossip.aclose()


async def test_silence_is_timed_by_the_leader_and_server_only_nodes_never_beat(
    cluster: Cluster,
) -> None:
    long_ago = cluster.clock.now() - timedelta(hours=1)  # e.g. another machine's clock
    await cluster.control.repo.put(
        "/nodes/w", make_node("w", node_id="id-w", heartbeat_at=long_ago)
    )
    await cluster.control.repo.put(
        "/nodes/s", make_node("s", node_id="id-s", role="server", heartbeat_at=long_ago)
    )
    gossip = FakeCluster(*(FakeCluster.member(make_node(n, node_id=f"id-{n}")) for n in ("w", "s")))
    sync = MembershipSync(cluster.store, gossip, cluster.clock, resync=60, silent_after=40)
    await sync.sync_once()  # a new leader: it starts counting now
    assert await node_state(cluster, "w") == GossipState.ALIVE
    cluster.clock.advance(41)
    await sync.sync_once()
    assert await node_state(cluster, "w") == GossipState.SUSPECT
    assert await node_state(cluster, "s") == GossipState.ALIVE
    await gossip.aclose()


async def test_a_new_leader_keeps_a_silent_node_suspect_until_it_beats(cluster: Cluster) -> None:
    await cluster.add_node("w", node_id="id-w")
    gossip = FakeCluster(FakeCluster.member(cluster.nodes["w"].node))
    first = MembershipSync(cluster.store, gossip, cluster.clock, resync=60, silent_after=40)
    await first.sync_once()
    cluster.clock.advance(41)
    await first.sync_once()
    assert await node_state(cluster, "w") == GossipState.SUSPECT

    # The next term's sync starts counting afresh, but w is not alive to it yet.
    second = MembershipSync(cluster.store, gossip, cluster.clock, resync=60, silent_after=40)
    await second.sync_once()
    assert await node_state(cluster, "w") == GossipState.SUSPECT
    await cluster.nodes["w"].register()  # it reports again (a re-registration beats too)
    await second.sync_once()
    assert await node_state(cluster, "w") == GossipState.ALIVE
    await gossip.aclose()


async def test_a_pause_in_the_passes_is_not_taken_for_silence(cluster: Cluster) -> None:
    await cluster.add_node("w", node_id="id-w")
    gossip = FakeCluster(FakeCluster.member(cluster.nodes["w"].node))
    sync = MembershipSync(cluster.store, gossip, cluster.clock, resync=5, silent_after=40)
    await sync.sync_once()
    cluster.clock.advance(41)  # the sync could not run meanwhile (its store was down, say)
    await sync.sync_once()
    assert await node_state(cluster, "w") == GossipState.ALIVE
    for _ in range(8):  # 40 s of regular passes, and w never beat
        cluster.clock.advance(5)
        await sync.sync_once()
    assert await node_state(cluster, "w") == GossipState.SUSPECT
    await gossip.aclose()


async def test_what_a_silent_node_never_started_moves_and_what_it_runs_stays(
    cluster: Cluster,
) -> None:
    for name in ("a", "b"):
        await cluster.add_node(name, node_id=f"id-{name}")
    await cluster.service.apply([spec(name="runs", replicas=2, placement={"strategy": "spread"})])
    await cluster.settle()
    # b's node loop stops reaching the store: what is placed on it now is never started.
    b = cluster.nodes.pop("b")
    await cluster.service.apply([spec(name="new", replicas=2, placement={"strategy": "spread"})])
    await cluster.settle()
    on_b = {i.workload: i.state for i in await instances(cluster) if i.node == "b"}
    assert on_b == {"runs": InstanceState.RUNNING, "new": InstanceState.SCHEDULED}

    gossip = FakeCluster(FakeCluster.member(cluster.nodes["a"].node), FakeCluster.member(b.node))
    sync = MembershipSync(cluster.store, gossip, cluster.clock, resync=60, silent_after=40)
    await sync.sync_once()
    cluster.clock.advance(41)
    await cluster.nodes["a"].register()  # a beats; b does not
    await sync.sync_once()
    assert await node_state(cluster, "b") == GossipState.SUSPECT
    await cluster.settle()

    now = await instances(cluster)
    running = sorted((i.workload, i.node or "-") for i in now if i.state == InstanceState.RUNNING)
    assert running == [("new", "a"), ("new", "a"), ("runs", "a"), ("runs", "b")]
    (lost,) = [i for i in now if i.state == InstanceState.LOST]
    assert (lost.workload, lost.node) == ("new", "b")
    assert lost.message == "node b is suspect and has not started it"
    await gossip.aclose()


async def test_real_node_loops_that_beat_are_never_silent(cluster: Cluster) -> None:
    """Minutes of manual time at uneven steps: heartbeats keep both nodes alive."""
    loops = [
        NodeLoop(
            make_node(n, node_id=f"id-{n}"),
            LocalNodeState(cluster.store, n),
            MockRuntime(cluster.clock),
            cluster.clock,
        )
        for n in ("a", "b")
    ]
    gossip = FakeCluster(*(FakeCluster.member(loop.node) for loop in loops))
    sync = MembershipSync(cluster.store, gossip, cluster.clock, silent_after=40)
    async with aclosing(gossip), anyio.create_task_group() as tg:
        for loop in loops:
            await start_node_loop(tg, loop)
        await tg.start(sync.run)
        for step in [1, 7, 13, 3] * 8:
            cluster.clock.advance(step)
            await anyio.wait_all_tasks_blocked()
        assert sync.passes > 15  # 192 s of manual time: far beyond silent_after
        assert [await node_state(cluster, n) for n in ("a", "b")] == [GossipState.ALIVE] * 2
        tg.cancel_scope.cancel()
