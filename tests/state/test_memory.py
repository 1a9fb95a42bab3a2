"""MemoryStore specifics, and the lifecycle and input checks both stores share."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import (
    Compacted,
    EventKind,
    InvalidInput,
    Unavailable,
    WatchEvent,
)
from shoal.state import MemoryStore, SqliteStore

pytestmark = pytest.mark.anyio

WAIT = 10


class ManualClock:
    """A clock that moves only when told to (no real time passes in these tests)."""

    def __init__(self) -> None:
        self._elapsed = 0.0
        self._moved: anyio.Event | None = None

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        deadline = self._elapsed + seconds
        while self._elapsed < deadline:
            if self._moved is None:
                self._moved = anyio.Event()
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self._elapsed += seconds
        if self._moved is not None:
            self._moved.set()
            self._moved = None


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    got: list[WatchEvent] = []
    with anyio.fail_after(WAIT):
        while len(got) < count:
            got.append(await anext(events))
    return got


async def test_leases_follow_the_injected_clock_without_async_with() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)  # not entered: no sweeper, lazy expiry only
    lease = await store.grant_lease(10)
    await store.put("/k", b"v", lease=lease)
    clock.advance(9.9)
    assert await store.get("/k") is not None
    await store.keepalive(lease)
    clock.advance(9.9)
    assert await store.get("/k") is not None
    clock.advance(0.1)
    assert await store.get("/k") is None
    assert await store.revision() == 2
    await store.aclose()


async def test_the_sweeper_expires_leases_when_nobody_writes() -> None:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        lease = await store.grant_lease(30)
        await store.put("/k", b"v", lease=lease)
        events = store.watch("/k")
        await anyio.wait_all_tasks_blocked()
        clock.advance(30)
        (event,) = await take(events, 1)
        assert (event.kind, event.kv.key, event.revision) == (EventKind.DELETE, "/k", 2)


async def test_history_is_bounded_by_history_size() -> None:
    async with MemoryStore(history_size=100) as store:
        for i in range(1000):
            await store.put(f"/k/{i % 3}", b"v")
        with pytest.raises(Compacted) as caught:
            await anext(store.watch("/k/", 1))
        assert caught.value.details["requested"] == 1
        assert 900 - 100 // 8 - 1 <= caught.value.details["compacted"] <= 900
        events = await take(store.watch("/k/", 901), 100)
        assert [e.revision for e in events] == list(range(901, 1001))


StoreFactory = Callable[[], MemoryStore | SqliteStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Return a factory of unopened stores (for lifecycle tests)."""
    if request.param == "memory":
        return MemoryStore
    return lambda: SqliteStore(tmp_path / "state.db")


async def test_errors_in_the_body_propagate_unwrapped(make_store: StoreFactory) -> None:
    with pytest.raises(KeyError):
        async with make_store() as store:
            await store.put("/a", b"1")
            raise KeyError("boom")


async def test_cancelling_the_body_closes_the_store(make_store: StoreFactory) -> None:
    with anyio.CancelScope() as scope:
        async with make_store() as store:
            await store.grant_lease(60)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(Unavailable, match="closed"):
        await store.revision()


async def test_bad_input_is_refused_with_a_message(make_store: StoreFactory) -> None:
    async with make_store() as store:
        with pytest.raises(InvalidInput, match="ttl"):
            await store.grant_lease(0)
        with pytest.raises(InvalidInput, match="key"):
            await store.put("", b"v")
        with pytest.raises(InvalidInput, match="election"):
            await store.leader("")
        with pytest.raises(InvalidInput, match="cannot compact to revision 5"):
            await store.compact(5)
    with pytest.raises(InvalidInput, match="history_size"):
        MemoryStore(history_size=0)


async def test_a_new_store_starts_at_revision_zero(make_store: StoreFactory) -> None:
    async with make_store() as store:
        assert await store.revision() == 0
        assert (await store.list("")).revision == 0
        assert await store.put("/a", b"1") == 1


async def test_a_lease_ends_with_one_revision_per_key(make_store: StoreFactory) -> None:
    # In process, each key of an ended lease is deleted at its own revision
    # (etcd deletes them all at one revision; the conformance suite allows both).
    async with make_store() as store:
        lease = await store.grant_lease(60)
        await store.put("/l/a", b"a", lease=lease)
        await store.put("/l/b", b"b", lease=lease)
        events = store.watch("/l/")
        await store.revoke(lease)
        deletes = await take(events, 2)
        assert [(e.kv.key, e.revision) for e in deletes] == [("/l/a", 3), ("/l/b", 4)]
        assert await store.revision() == 4
