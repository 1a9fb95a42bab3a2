"""Reading Serf's members and events as Shoal's, and what a reconnect reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cluster import MemberEventRecord, SerfCluster, SerfMember
from shoal.cluster.serf._serf_membership import event_kind, membership_changes, to_member
from shoal.interfaces import GossipState, Member, MemberEventKind

ALIVE, FAILED, LEFT = GossipState.ALIVE, GossipState.FAILED, GossipState.LEFT


def member(name: str, state: GossipState = ALIVE, **tags: str) -> Member:
    return Member(name=name, address=f"127.0.0.1:{len(name)}", state=state, tags=tags)


def test_serf_statuses_map_to_gossip_states() -> None:
    states = {
        status: to_member(SerfMember("n", "::1", 7946, status)).state
        for status in ("alive", "leaving", "left", "failed", "none")
    }
    assert states == {
        "alive": ALIVE,
        "leaving": LEFT,
        "left": LEFT,
        "failed": FAILED,
        "none": GossipState.SUSPECT,
    }
    assert to_member(SerfMember("n", "::1", 7946, "alive")).address == "[::1]:7946"


def test_reaping_raises_no_event() -> None:
    assert event_kind("member-failed", member("n", FAILED)) == MemberEventKind.FAILED
    assert event_kind("member-reap", member("n", FAILED)) is None


def test_a_failed_member_that_said_goodbye_has_left() -> None:
    # Its tags said "bye" before Serf's leave intent, which memberlist overtook.
    bye = to_member(SerfMember("n", "::1", 7946, "failed", {"id": "x", "bye": "1"}))
    assert bye.state == LEFT
    assert event_kind("member-failed", bye) == MemberEventKind.LEFT
    crashed = to_member(SerfMember("n", "::1", 7946, "failed", {"id": "x"}))
    assert crashed.state == FAILED
    assert event_kind("member-failed", crashed) == MemberEventKind.FAILED
    # A member still alive that began leaving is alive until Serf says otherwise.
    assert to_member(SerfMember("n", "::1", 7946, "alive", {"bye": "1"})).state == ALIVE


def test_a_reconnect_reports_only_what_changed() -> None:
    known = {m.name: m for m in (member("same"), member("tagged"), member("back", FAILED))}
    current = [
        member("same"),
        member("tagged", zone="b"),
        member("back"),
        member("new"),
        member("gone", LEFT),
    ]
    assert membership_changes(known, current) == {
        MemberEventKind.UPDATED: [member("tagged", zone="b")],
        MemberEventKind.JOINED: [member("back"), member("new")],
        MemberEventKind.LEFT: [member("gone", LEFT)],
    }


def test_members_a_restarted_agent_has_not_met_yet_raise_nothing() -> None:
    known = {m.name: m for m in (member("self"), member("peer"))}
    assert membership_changes(known, [member("self")]) == {}


def test_the_restarted_node_itself_rejoins() -> None:
    known = {"self": member("self")}
    changes = membership_changes(known, [member("self")], rejoined="self")
    assert changes == {MemberEventKind.JOINED: [member("self")]}


@pytest.mark.anyio
async def test_one_failed_batch_splits_into_left_and_failed_and_skips_this_leaving_node(
    tmp_path: Path,
) -> None:
    cluster = SerfCluster("me", tmp_path, rpc_auth="secret")
    async with cluster.events() as events:
        cluster._leaving = True  # as leave() sets it: this node announces its own LEFT
        batch = (
            SerfMember("bye", "127.0.0.2", 7946, "failed", {"bye": "1"}),
            SerfMember("crashed", "127.0.0.3", 7946, "failed", {}),
            SerfMember("me", "127.0.0.1", 7946, "left", {"bye": "1"}),
        )
        cluster._on_member_event(MemberEventRecord("member-failed", batch))
        cluster._on_member_event(MemberEventRecord("member-leave", batch[2:]))
        await cluster.aclose()  # ends the iteration
        seen = [(e.kind, [m.name for m in e.members]) async for e in events]
    assert seen == [(MemberEventKind.LEFT, ["bye"]), (MemberEventKind.FAILED, ["crashed"])]
