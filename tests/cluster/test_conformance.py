"""ClusterManager conformance: what every cluster manager promises, against the protocol only.

Each implementation contributes one entry to ``HARNESSES``: an async context
manager factory (given the pytest request, so a real one can use ``tmp_path``
or skip) that yields a started :class:`~shoal.interfaces.ClusterManager` whose
local node is named ``NODE`` and publishes ``INITIAL_TAGS``.

The contract on :meth:`~shoal.interfaces.ClusterManager.events` pinned here:
the subscription starts when ``events()`` is called, so a change made after
the call is delivered even if nobody iterated yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from shoal.cluster import StaticCluster
from shoal.interfaces import ClusterManager, GossipState, MemberEvent, MemberEventKind
from tests.cluster.serf_support import SerfNodes

pytestmark = pytest.mark.anyio

NODE = "node-a"
INITIAL_TAGS = {"role": "both", "id": "abc123"}
WAIT = 10.0


@asynccontextmanager
async def static_cluster(request: pytest.FixtureRequest) -> AsyncIterator[ClusterManager]:
    async with StaticCluster(NODE, tags=INITIAL_TAGS) as cluster:
        yield cluster


@asynccontextmanager
async def serf_cluster(request: pytest.FixtureRequest) -> AsyncIterator[ClusterManager]:
    root: Path = request.getfixturevalue("serf_root")  # skips if serf is not installed
    async with SerfNodes(root).make(NODE, tags=INITIAL_TAGS) as cluster:
        yield cluster


HARNESSES: dict[
    str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[ClusterManager]]
] = {
    "static": static_cluster,
    "serf": serf_cluster,
}


@pytest.fixture(params=sorted(HARNESSES))
async def cluster(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[ClusterManager]:
    async with HARNESSES[request.param](request) as cluster:
        yield cluster


async def next_event(events: AsyncIterator[MemberEvent], kind: MemberEventKind) -> MemberEvent:
    """Return the next event of ``kind`` about this node, skipping others."""
    with anyio.fail_after(WAIT):
        async for event in events:
            if event.kind == kind and NODE in {m.name for m in event.members}:
                return event
    raise AssertionError(f"the event stream ended before a {kind} event")


async def close(events: AsyncIterator[MemberEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def test_implements_the_protocol(cluster: ClusterManager) -> None:
    assert isinstance(cluster, ClusterManager)


async def test_local_node_is_an_alive_member(cluster: ClusterManager) -> None:
    local = await cluster.local_node()
    assert local.name == NODE
    assert local.state == GossipState.ALIVE
    assert local.address
    assert INITIAL_TAGS.items() <= local.tags.items()
    members = {m.name: m for m in await cluster.members()}
    assert members[NODE].state == GossipState.ALIVE


async def test_set_tags_merges_and_notifies_an_earlier_subscriber(
    cluster: ClusterManager,
) -> None:
    events = cluster.events()
    try:
        await cluster.set_tags({"zone": "a", "role": "worker"})
        event = await next_event(events, MemberEventKind.UPDATED)
    finally:
        await close(events)
    expected = {**INITIAL_TAGS, "zone": "a", "role": "worker"}
    assert next(m for m in event.members if m.name == NODE).tags == expected
    assert (await cluster.local_node()).tags == expected
    members = {m.name: m for m in await cluster.members()}
    assert members[NODE].tags == expected


async def test_every_subscriber_sees_every_change(cluster: ClusterManager) -> None:
    first, second = cluster.events(), cluster.events()
    try:
        await cluster.set_tags({"zone": "b"})
        for events in (first, second):
            event = await next_event(events, MemberEventKind.UPDATED)
            assert event.members[0].tags["zone"] == "b"
    finally:
        await close(first)
        await close(second)


async def test_leave_marks_the_node_left_and_notifies(cluster: ClusterManager) -> None:
    events = cluster.events()
    try:
        await cluster.leave()
        event = await next_event(events, MemberEventKind.LEFT)
    finally:
        await close(events)
    assert next(m for m in event.members if m.name == NODE).state == GossipState.LEFT
    assert (await cluster.local_node()).state == GossipState.LEFT
    members = {m.name: m for m in await cluster.members()}
    assert members[NODE].state == GossipState.LEFT
