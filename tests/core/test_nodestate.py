"""LocalNodeState: a node's view of a store it keeps itself, as a worker's server gives it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from shoal.core import LocalNodeState
from shoal.interfaces import (
    EventKind,
    Forbidden,
    NodeState,
    RevisionConflict,
    StateStore,
    WatchEvent,
)
from shoal.state import MemoryStore
from tests.cluster.test_grpc_state import (
    WAIT,
    dump,
    ikey,
    instance,
    place,
    serving,
    worker,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    async with MemoryStore() as memory:
        yield memory


@asynccontextmanager
async def node_state(implementation: str, store: StateStore, name: str) -> AsyncIterator[NodeState]:
    """The NodeState of node ``name``: over ``store`` itself, or through a server over gRPC."""
    if implementation == "local":
        yield LocalNodeState(store, name)
    else:
        async with serving(store) as address, worker(name, address) as remote:
            yield remote


async def take(state: LocalNodeState, start: int, count: int) -> list[WatchEvent]:
    seen: list[WatchEvent] = []
    with anyio.fail_after(WAIT):
        async for event in state.watch_assignments(start):
            seen.append(event)
            if len(seen) == count:
                break
    return seen


async def test_a_node_lists_and_follows_only_its_own_instances(store: StateStore) -> None:
    await place(store, instance("old", "w1"))
    await place(store, instance("far", "w2"))
    state = LocalNodeState(store, "w1")
    listed = await state.assignments()
    assert [kv.key for kv in listed.items] == [ikey("old")]
    await place(store, instance("theirs", "w2"))
    await place(store, instance("mine", "w1"))
    await store.put(ikey("old"), dump(instance("old", "w2")))  # moved away: gone for w1
    gone = await store.delete(ikey("mine"))
    await store.delete(ikey("theirs"))
    await place(store, instance("last", "w1"))
    seen = await take(state, listed.revision + 1, 4)
    assert [(e.kind, e.kv.key) for e in seen] == [
        (EventKind.PUT, ikey("mine")),
        (EventKind.DELETE, ikey("old")),
        (EventKind.DELETE, ikey("mine")),
        (EventKind.PUT, ikey("last")),
    ]
    assert (seen[2].kv.value, seen[2].revision) == (b"", gone)


async def test_a_node_reports_only_its_own_instances(store: StateStore) -> None:
    revision = await place(store, instance("theirs", "w2"))
    state = LocalNodeState(store, "w1")
    with pytest.raises(Forbidden, match="placed on 'w2', not on node 'w1'"):
        await state.report(instance("theirs", "w2"), revision)
    with pytest.raises(Forbidden, match="placed on 'w2', not on node 'w1'"):
        await state.remove(instance("theirs", "w2"), revision)
    assert await store.get(ikey("theirs")) is not None


@pytest.mark.parametrize("implementation", ["local", "remote"])
async def test_removing_a_record_that_is_gone_deletes_nothing(
    store: StateStore, implementation: str
) -> None:
    """As the protocol says, alike on a server's own store and through a server."""
    mine = instance("mine", "w1")
    revision = await place(store, mine)
    async with node_state(implementation, store, "w1") as state:
        deleted = await state.remove(mine, revision)
        assert deleted is not None
        assert await store.get(ikey("mine")) is None
        assert await state.remove(mine, 0) is None  # nothing to delete, none expected
        with pytest.raises(RevisionConflict):
            await state.remove(mine, revision)  # expected at a revision: it changed since
