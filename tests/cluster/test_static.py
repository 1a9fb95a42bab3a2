"""StaticCluster beyond the protocol: joining, closing and subscriber bookkeeping."""

from __future__ import annotations

import anyio
import pytest

from shoal.cluster import MemberEvents, StaticCluster
from shoal.interfaces import GossipState, MemberEvent, MemberEventKind, Unavailable

pytestmark = pytest.mark.anyio

WAIT = 5.0


async def test_defaults_to_a_loopback_address_and_no_tags() -> None:
    async with StaticCluster("solo") as cluster:
        local = await cluster.local_node()
    assert (local.name, local.address, local.state, local.tags) == (
        "solo",
        "127.0.0.1:0",
        GossipState.ALIVE,
        {},
    )


async def test_members_are_copies_that_callers_cannot_corrupt() -> None:
    async with StaticCluster("solo", tags={"a": "1"}) as cluster:
        (await cluster.local_node()).tags["a"] = "changed"
        assert (await cluster.members())[0].tags == {"a": "1"}


async def test_join_with_no_addresses_answers_zero() -> None:
    async with StaticCluster("solo") as cluster:
        assert await cluster.join([]) == 0


async def test_join_with_addresses_refuses_and_points_to_serf() -> None:
    async with StaticCluster("solo") as cluster:
        with pytest.raises(Unavailable, match=r"cannot join 198\.18\.0\.2:7946.*serf") as caught:
            await cluster.join(["198.18.0.2:7946"])
    assert caught.value.details == {"addresses": ["198.18.0.2:7946"]}


async def test_aclose_ends_every_event_iterator() -> None:
    cluster = StaticCluster("solo")
    received: list[list[MemberEvent]] = [[], []]
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            for index in range(2):
                events = cluster.events()

                async def consume(into: list[MemberEvent], events: MemberEvents = events) -> None:
                    into.extend([event async for event in events])

                group.start_soon(consume, received[index])
            await cluster.set_tags({"zone": "a"})
            await cluster.aclose()
    assert [[e.kind for e in into] for into in received] == [[MemberEventKind.UPDATED]] * 2


async def test_after_aclose_events_end_and_changes_are_refused() -> None:
    cluster = StaticCluster("solo")
    await cluster.aclose()
    await cluster.aclose()
    assert [event async for event in cluster.events()] == []
    with pytest.raises(Unavailable, match="closed"):
        await cluster.set_tags({"a": "b"})
    with pytest.raises(Unavailable, match="closed"):
        await cluster.leave()


async def test_a_closed_subscriber_is_dropped_and_others_still_receive() -> None:
    async with StaticCluster("solo") as cluster:
        gone, kept = cluster.events(), cluster.events()
        await gone.aclose()
        await cluster.set_tags({"a": "1"})
        await cluster.leave()
        await cluster.leave()  # twice: one LEFT event only
        await cluster.aclose()
        kinds = [event.kind async for event in kept]
    assert kinds == [MemberEventKind.UPDATED, MemberEventKind.LEFT]
    assert [event async for event in gone] == []
