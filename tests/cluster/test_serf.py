"""SerfCluster against real serf agents on loopback: joining, tags, failure, leave, bad input."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from shoal.cluster import SerfCluster, SerfRpcClient, new_gossip_key
from shoal.interfaces import Forbidden, GossipState, InvalidInput, MemberEventKind, Unavailable
from tests.cluster.serf_support import (
    FAILURE_WAIT,
    SerfNodes,
    all_alive,
    next_event_about,
    until_all_see_each_other,
    until_members,
)

pytestmark = pytest.mark.anyio

NAMES = ("node-a", "node-b", "node-c")


async def test_three_agents_join_and_see_each_other_with_their_tags(serf_root: Path) -> None:
    nodes = SerfNodes(serf_root)
    tags = {name: {"role": "worker", "id": name.upper()} for name in NAMES}
    async with nodes.cluster(*NAMES, tags=tags) as clusters:
        for cluster in clusters:
            members = await until_members(cluster, cluster.events(), all_alive(NAMES))
            assert {name: m.tags for name, m in members.items()} == tags
            assert {name: m.address for name, m in members.items()} == nodes.binds


async def test_a_tag_change_reaches_every_other_member(serf_root: Path) -> None:
    async with SerfNodes(serf_root).cluster(*NAMES) as (a, b, c):
        await until_all_see_each_other([a, b, c])
        watching = [a.events(), c.events()]
        await b.set_tags({"zone": "b"})
        for cluster, events in zip((a, c), watching, strict=True):
            event = await next_event_about(events, "node-b", MemberEventKind.UPDATED)
            assert next(m for m in event.members if m.name == "node-b").tags == {"zone": "b"}
            assert {m.name: m for m in await cluster.members()}["node-b"].tags == {"zone": "b"}


async def test_a_sigkilled_agent_is_seen_failed_by_the_others(serf_root: Path) -> None:
    # A long restart delay keeps node-c down long enough for the others to notice.
    async with SerfNodes(serf_root).cluster(*NAMES, restart_delay=60.0) as (a, b, c):
        # Until b knows c, only a would suspect c: no confirmation, the slowest detection.
        await until_all_see_each_other([a, b, c])
        watching = [a.events(), b.events()]
        assert c.agent_pid is not None
        os.kill(c.agent_pid, signal.SIGKILL)
        for cluster, events in zip((a, b), watching, strict=True):
            event = await next_event_about(
                events, "node-c", MemberEventKind.FAILED, within=FAILURE_WAIT
            )
            assert [m.state for m in event.members if m.name == "node-c"] == [GossipState.FAILED]
            members = {m.name: m.state for m in await cluster.members()}
            assert members == {
                "node-a": GossipState.ALIVE,
                "node-b": GossipState.ALIVE,
                "node-c": GossipState.FAILED,
            }


async def test_the_supervisor_restarts_a_killed_agent_which_rejoins_as_itself(
    serf_root: Path,
) -> None:
    async with SerfNodes(serf_root).cluster(*NAMES, restart_delay=0.2) as (a, b, c):
        await until_all_see_each_other([a, b, c])
        own, others = c.events(), a.events()
        killed = c.agent_pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await next_event_about(own, "node-c", MemberEventKind.JOINED)
        assert c.restarts == 1
        assert c.agent_pid not in (None, killed)
        # The snapshot brings it back into the same cluster, under the same name.
        await until_members(c, own, all_alive(NAMES))
        await until_members(a, others, all_alive(NAMES))
        assert (await c.local_node()).name == "node-c"


async def test_a_graceful_leave_is_seen_as_left_not_failed(serf_root: Path) -> None:
    async with SerfNodes(serf_root).cluster(*NAMES) as (a, b, c):
        await until_all_see_each_other([a, b, c])
        events = a.events()
        await b.leave()
        kinds = []
        with anyio.fail_after(FAILURE_WAIT):
            async for event in events:
                if "node-b" in {m.name for m in event.members}:
                    kinds.append(event.kind)
                    if event.kind in (MemberEventKind.LEFT, MemberEventKind.FAILED):
                        break
        assert kinds[-1] == MemberEventKind.LEFT
        assert {m.name: m.state for m in await a.members()}["node-b"] == GossipState.LEFT
        # It said goodbye in its tags before leaving, so even a "failed" would
        # read as left. (Serf's tag update returns once it was gossiped out, not
        # once a member has it; in a three-node cluster at rest, one has.)
        views = [{m.name: m.tags for m in await x.members()}["node-b"] for x in (a, c)]
        assert any(tags.get("bye") == "1" for tags in views), views
        assert (await b.local_node()).state == GossipState.LEFT
        with pytest.raises(Unavailable, match="left the cluster"):
            await b.set_tags({"zone": "x"})
        assert b.restarts == 0


async def test_a_gossip_key_mismatch_is_refused_with_no_partial_membership(
    serf_root: Path,
) -> None:
    nodes = SerfNodes(serf_root)
    async with nodes.cluster("node-a") as (a,):
        for name, key in (("other-key", new_gossip_key()), ("no-key", None)):
            async with nodes.make(name, encrypt_key=key) as stranger:
                with pytest.raises(Unavailable, match="gossip key mismatch") as caught:
                    await stranger.join([nodes.binds["node-a"]])
                assert caught.value.details["reason"] == "gossip_key_mismatch"
                assert [m.name for m in await stranger.members()] == [name]
                assert [m.name for m in await a.members()] == ["node-a"]


async def test_joining_at_start_through_a_mismatched_key_fails_entry(serf_root: Path) -> None:
    nodes = SerfNodes(serf_root)
    async with nodes.cluster("node-a"):
        stranger = nodes.make(
            "stranger", encrypt_key=new_gossip_key(), join=[nodes.binds["node-a"]]
        )
        with pytest.raises(Unavailable, match="gossip key mismatch"):
            async with stranger:
                pytest.fail("a node that cannot join its cluster must not start")
        assert stranger.agent_pid is None


async def test_a_wrong_rpc_auth_key_is_refused_clearly(serf_root: Path) -> None:
    nodes = SerfNodes(serf_root)
    async with nodes.cluster("node-a"):
        address = nodes.rpc_addrs["node-a"]
        with pytest.raises(Forbidden, match=r"refused the RPC auth key.*does not match"):
            async with SerfRpcClient.connect(address, auth_key="wrong"):
                pass
        with pytest.raises(Forbidden, match="needs an RPC auth key"):
            async with SerfRpcClient.connect(address) as client:
                await client.members()
        async with SerfRpcClient.connect(address, auth_key=nodes.rpc_auth) as client:
            assert [m.name for m in await client.members()] == ["node-a"]


async def test_an_agent_that_cannot_start_fails_entry_with_its_output(serf_root: Path) -> None:
    nodes = SerfNodes(serf_root)
    async with nodes.cluster("node-a"):
        taken = nodes.make("node-b", bind=nodes.binds["node-a"])
        with pytest.raises(Unavailable, match=r"exited with code 1 while starting.*in use") as e:
            async with taken:
                pytest.fail("an agent whose port is taken must not start")
        assert e.value.message.endswith("or give this node another --bind HOST[:PORT]")


async def test_a_missing_serf_binary_is_unavailable_and_names_the_fix(tmp_path: Path) -> None:
    cluster = SerfCluster("solo", tmp_path, rpc_auth="x", serf_binary="/nonexistent/serf")
    with pytest.raises(Unavailable, match=r"'/nonexistent/serf' was not found.*apt-get install"):
        async with cluster:
            pytest.fail("no agent can run without the serf binary")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"encrypt_key": "c2hvcnQ="}, "encrypt_key"),
        ({"rpc_auth": ""}, "rpc_auth"),
        ({"bind": "127.0.0.1"}, "bind"),
        ({"rpc_addr": "localhost:99999"}, "rpc_addr"),
        ({"tags": {"l.big": "x" * 600}}, "tags"),
        ({"profile": "fast"}, "profile"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    tmp_path: Path, settings: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"rpc_auth": "x", **settings}
    with pytest.raises(InvalidInput, match=field) as caught:
        SerfCluster("solo", tmp_path, **arguments)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field


async def test_closing_early_then_exiting_in_a_cancelled_scope_stops_cleanly(
    serf_root: Path,
) -> None:
    # aclose() before the `async with` ends, in a scope being cancelled (how a
    # node shuts down on SIGTERM): the exit must still stop the agent and its group.
    node = SerfNodes(serf_root).make("node-a")
    with anyio.CancelScope() as scope:
        async with node:
            pid = node.agent_pid
            await node.aclose()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
