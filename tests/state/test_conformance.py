"""The StateStore conformance suite: every implementation, through the protocol only.

Revisions are compared with ``base``, the store's revision when a test starts:
a fresh in-process store is at 0, while etcd's revision is shared by every
test of the session (each test has a key prefix of its own).
"""

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from shoal.interfaces import (
    Compacted,
    Compare,
    CompareTarget,
    DeleteOp,
    EventKind,
    InvalidInput,
    KeyValue,
    ListResult,
    NotFound,
    PutOp,
    RevisionConflict,
    StateStore,
    Unavailable,
    WatchEvent,
)

pytestmark = pytest.mark.anyio

Compact = Callable[[StateStore, int], Awaitable[None]]
"""The ``compact`` fixture: discard a store's history before a revision."""

WAIT = 10  # seconds: the bound on every wait for an outcome


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    """Return the next ``count`` events, failing if they do not come in time."""
    got: list[WatchEvent] = []
    with anyio.fail_after(WAIT):
        while len(got) < count:
            got.append(await anext(events))
    return got


async def next_delete(events: AsyncIterator[WatchEvent], key: str) -> WatchEvent:
    """Return the next DELETE event for ``key``, skipping others."""
    with anyio.fail_after(WAIT):
        async for event in events:
            if event.kind is EventKind.DELETE and event.kv.key == key:
                return event
    raise AssertionError("the watch ended")


# -- keys, revisions, compare-and-swap -------------------------------------------


async def test_store_implements_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)


async def test_a_new_store_holds_no_keys(store: StateStore) -> None:
    base = await store.revision()
    assert await store.get("/missing") is None
    listing = await store.list("/")
    assert listing.items == []
    assert listing.revision == base
    assert (await store.list("")).items == []
    assert await store.revision() == base  # reads do not move the revision


async def test_put_then_get_returns_the_value(store: StateStore) -> None:
    base = await store.revision()
    revision = await store.put("/a", b"one")
    assert revision == base + 1
    assert await store.get("/a") == KeyValue("/a", b"one", base + 1, base + 1, 1)


async def test_revisions_and_versions_follow_every_change(store: StateStore) -> None:
    base = await store.revision()
    assert await store.put("/a", b"1") == base + 1
    assert await store.put("/a", b"2") == base + 2
    assert await store.put("/b", b"x") == base + 3
    assert await store.get("/a") == KeyValue(
        "/a", b"2", create_revision=base + 1, mod_revision=base + 2, version=2
    )
    assert await store.delete("/a") == base + 4
    assert await store.get("/a") is None
    # Re-created: a new life, with a new create revision and version 1.
    assert await store.put("/a", b"3") == base + 5
    assert await store.get("/a") == KeyValue(
        "/a", b"3", create_revision=base + 5, mod_revision=base + 5, version=1
    )
    assert await store.revision() == base + 5


async def test_delete_of_a_missing_key_returns_none_and_keeps_the_revision(
    store: StateStore,
) -> None:
    written = await store.put("/a", b"1")
    assert await store.delete("/missing") is None
    assert await store.revision() == written


async def test_create_if_absent_succeeds_once(store: StateStore) -> None:
    created = await store.put("/lock", b"me", expected_revision=0)
    assert created == await store.revision()
    with pytest.raises(RevisionConflict) as caught:
        await store.put("/lock", b"you", expected_revision=0)
    assert caught.value.details == {"key": "/lock", "expected": 0, "actual": created}
    assert (await store.get("/lock")) == KeyValue("/lock", b"me", created, created, 1)
    assert await store.revision() == created


async def test_compare_and_swap_update_needs_the_current_revision(store: StateStore) -> None:
    first = await store.put("/a", b"1")
    second = await store.put("/a", b"2", expected_revision=first)
    with pytest.raises(RevisionConflict) as caught:
        await store.put("/a", b"stale", expected_revision=first)
    assert caught.value.details == {"key": "/a", "expected": first, "actual": second}
    with pytest.raises(RevisionConflict) as missing:
        await store.put("/nope", b"x", expected_revision=7)
    assert missing.value.details == {"key": "/nope", "expected": 7, "actual": 0}
    kv = await store.get("/a")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"2", second)
    assert await store.revision() == second


async def test_delete_with_expected_revision(store: StateStore) -> None:
    revision = await store.put("/a", b"1")
    with pytest.raises(RevisionConflict):
        await store.delete("/a", expected_revision=revision + 5)
    with pytest.raises(RevisionConflict):
        await store.delete("/a", expected_revision=0)
    assert await store.delete("/a", expected_revision=revision) == revision + 1
    assert await store.delete("/a", expected_revision=0) is None


async def test_list_returns_keys_under_the_prefix_sorted(store: StateStore) -> None:
    base = await store.revision()
    for key in ["/b", "/ab/1", "/a/2", "/a", "/a/1", "/ab", "/a/10"]:
        await store.put(key, key.encode())
    under_a = await store.list("/a/")
    assert [kv.key for kv in under_a.items] == ["/a/1", "/a/10", "/a/2"]
    assert [kv.value for kv in under_a.items] == [b"/a/1", b"/a/10", b"/a/2"]
    assert under_a.revision == base + 7
    assert [kv.key for kv in (await store.list("/ab/")).items] == ["/ab/1"]
    assert [kv.key for kv in (await store.list("/a")).items] == [
        "/a",
        "/a/1",
        "/a/10",
        "/a/2",
        "/ab",
        "/ab/1",
    ]
    assert len((await store.list("")).items) == 7
    assert (await store.list("/c/")).items == []


async def test_list_revision_moves_with_writes(store: StateStore) -> None:
    base = await store.revision()
    await store.put("/x/1", b"1")
    await store.put("/y/1", b"1")
    listing = await store.list("/x/")
    assert listing.revision == await store.revision() == base + 2


# -- transactions ------------------------------------------------------------------


async def test_txn_success_applies_every_op_at_one_revision(store: StateStore) -> None:
    await store.put("/jobs/old", b"o")
    created = await store.put("/guard", b"g")
    events = store.watch("/", created + 1)
    result = await store.txn(
        [Compare("/guard", CompareTarget.MOD_REVISION, created)],
        [PutOp("/jobs/a", b"a"), PutOp("/jobs/b", b"b"), DeleteOp("/jobs/old")],
        [PutOp("/failed", b"!")],
    )
    assert result.succeeded
    assert result.revision == created + 1
    assert result.deleted == 1
    seen = await take(events, 3)
    assert [(e.kind, e.kv.key, e.revision) for e in seen] == [
        (EventKind.PUT, "/jobs/a", result.revision),
        (EventKind.PUT, "/jobs/b", result.revision),
        (EventKind.DELETE, "/jobs/old", result.revision),
    ]
    assert await store.get("/failed") is None
    assert await store.revision() == result.revision


async def test_txn_failure_runs_the_failure_branch(store: StateStore) -> None:
    guard = await store.put("/guard", b"g")
    result = await store.txn(
        [Compare("/guard", CompareTarget.VALUE, b"other")],
        [PutOp("/ok", b"1")],
        [PutOp("/failed", b"1"), PutOp("/also", b"2")],
    )
    assert not result.succeeded
    assert result.revision == guard + 1
    assert await store.get("/ok") is None
    failed, also = await store.get("/failed"), await store.get("/also")
    assert failed is not None and also is not None
    assert failed.mod_revision == also.mod_revision == guard + 1


async def test_txn_compares_on_a_missing_key(store: StateStore) -> None:
    absent = Compare("/k", CompareTarget.CREATE_REVISION, 0)
    first = await store.txn([absent], [PutOp("/k", b"1")])
    second = await store.txn([absent], [PutOp("/k", b"2")])
    assert first.succeeded and not second.succeeded
    assert second.revision == first.revision  # an empty branch writes nothing
    kv = await store.get("/k")
    assert kv is not None and kv.value == b"1"


async def test_txn_delete_prefix_removes_a_range(store: StateStore) -> None:
    base = await store.revision()
    for key in ["/r/1", "/r/2", "/r/3", "/rx", "/s"]:
        await store.put(key, b"v")
    result = await store.txn([], [DeleteOp("/r/", prefix=True)])
    assert result.succeeded and result.deleted == 3
    assert result.revision == base + 6
    assert [kv.key for kv in (await store.list("")).items] == ["/rx", "/s"]


async def test_txn_rejects_a_key_touched_twice(store: StateStore) -> None:
    base = await store.revision()
    with pytest.raises(InvalidInput):
        await store.txn([], [PutOp("/a", b"1"), PutOp("/a", b"2")])
    with pytest.raises(InvalidInput):
        await store.txn([], [PutOp("/d/a", b"1"), DeleteOp("/d/", prefix=True)])
    assert await store.revision() == base


# -- watch -------------------------------------------------------------------------


async def test_watch_from_now_sees_only_later_changes(store: StateStore) -> None:
    await store.put("/w/before", b"0")
    events = store.watch("/w/")
    revision = await store.put("/w/after", b"1")
    (event,) = await take(events, 1)
    assert event.kind is EventKind.PUT
    assert event.kv == KeyValue("/w/after", b"1", revision, revision, 1)
    assert event.revision == revision
    assert event.prev_value is None


async def test_watch_from_a_past_revision_replays_then_follows(store: StateStore) -> None:
    await store.put("/w/1", b"1")
    second = await store.put("/w/2", b"2")
    await store.put("/other", b"x")
    await store.put("/w/1", b"1b")
    events = store.watch("/w/", second)
    replayed = await take(events, 2)
    assert [(e.kv.key, e.kv.value, e.prev_value) for e in replayed] == [
        ("/w/2", b"2", None),
        ("/w/1", b"1b", b"1"),
    ]
    later = await store.put("/w/3", b"3")
    (followed,) = await take(events, 1)
    assert (followed.kv.key, followed.revision) == ("/w/3", later)


async def test_watch_reports_deletes_with_the_previous_value(store: StateStore) -> None:
    events = store.watch("/w/")
    await store.put("/w/gone", b"last words")
    deleted_at = await store.delete("/w/gone")
    put, delete = await take(events, 2)
    assert put.kind is EventKind.PUT
    assert delete.kind is EventKind.DELETE
    assert delete.kv.key == "/w/gone"
    assert delete.kv.value == b""
    assert delete.revision == deleted_at
    assert delete.prev_value == b"last words"


async def test_watch_does_not_leak_across_prefixes(store: StateStore) -> None:
    events = store.watch("/a/")
    await store.put("/ab/1", b"x")
    await store.put("/a", b"x")
    revision = await store.put("/a/1", b"x")
    (event,) = await take(events, 1)
    assert (event.kv.key, event.revision) == ("/a/1", revision)


async def test_slow_watcher_gets_every_event_in_order(store: StateStore) -> None:
    count = 1500
    events = store.watch("/slow/")
    for i in range(count):
        await store.put(f"/slow/{i % 7}", str(i).encode())
        if i % 10 == 0:
            await store.put("/noise", str(i).encode())
    last = await store.put("/slow/end", b"end")
    seen = await take(events, count + 1)
    assert [e.kv.value for e in seen[:count]] == [str(i).encode() for i in range(count)]
    revisions = [e.revision for e in seen]
    assert revisions == sorted(set(revisions))  # increasing: no repeats, no reordering
    assert seen[-1].revision == last
    # Nothing more is pending: the next event is the next write.
    following = await store.put("/slow/after", b"after")
    (event,) = await take(events, 1)
    assert event.revision == following


async def test_concurrent_writers_and_watchers_agree(store: StateStore) -> None:
    base = await store.revision()
    watchers = [store.watch("/c/") for _ in range(3)]

    async def write(worker: int) -> None:
        for i in range(50):
            await store.put(f"/c/{worker}/{i}", b"v")

    async with anyio.create_task_group() as group:
        for worker in range(4):
            group.start_soon(write, worker)
    streams = [await take(watcher, 200) for watcher in watchers]
    revisions = [[e.revision for e in stream] for stream in streams]
    assert revisions[0] == list(range(base + 1, base + 201))
    assert revisions[0] == revisions[1] == revisions[2]


async def test_watch_from_a_compacted_revision_raises(store: StateStore, compact: Compact) -> None:
    base = await store.revision()
    for i in range(10):
        await store.put("/h/k", str(i).encode())
    await compact(store, base + 6)
    with pytest.raises(Compacted), anyio.fail_after(WAIT):
        await anext(store.watch("/h/", base + 3))
    (event,) = await take(store.watch("/h/", base + 6), 1)
    assert (event.revision, event.kv.value) == (base + 6, b"5")


# -- leases --------------------------------------------------------------------------


async def test_lease_expiry_deletes_its_keys(store: StateStore) -> None:
    lease = await store.grant_lease(0.3)
    await store.put("/lease/a", b"a", lease=lease)
    await store.put("/lease/b", b"b", lease=lease)
    kept = await store.put("/lease/kept", b"k")
    events = store.watch("/lease/")
    first, second = await take(events, 2)
    assert {first.kv.key, second.kv.key} == {"/lease/a", "/lease/b"}
    assert first.kind is second.kind is EventKind.DELETE
    # New revisions after the puts: one per key in process, one for all on etcd.
    assert kept < first.revision <= second.revision <= first.revision + 1
    assert [kv.key for kv in (await store.list("/lease/")).items] == ["/lease/kept"]
    with pytest.raises(NotFound):
        await store.keepalive(lease)
    with pytest.raises(NotFound):
        await store.put("/lease/again", b"x", lease=lease)


async def test_put_with_an_unknown_lease_is_refused(store: StateStore) -> None:
    base = await store.revision()
    with pytest.raises(NotFound):
        await store.put("/k", b"v", lease=987654)
    with pytest.raises(NotFound):
        await store.txn([], [PutOp("/k", b"v", lease=987654)])
    assert await store.revision() == base


async def test_keepalive_keeps_a_lease_alive(store: StateStore) -> None:
    kept = await store.grant_lease(0.5)
    control = await store.grant_lease(1.5)
    await store.put("/ka/kept", b"k", lease=kept)
    await store.put("/ka/control", b"c", lease=control)
    events = store.watch("/ka/")

    async def renew() -> None:
        while True:
            await store.keepalive(kept)
            await anyio.sleep(0.1)  # pacing the renewals, not waiting for an outcome

    async with anyio.create_task_group() as group:
        group.start_soon(renew)
        # The control lease dies after three of the kept lease's ttls...
        await next_delete(events, "/ka/control")
        # ...and the kept one, renewed all along, is still there.
        kv = await store.get("/ka/kept")
        group.cancel_scope.cancel()
    assert kv is not None and kv.lease == kept


async def test_revoke_deletes_keys_now(store: StateStore) -> None:
    lease = await store.grant_lease(60)
    await store.put("/rv/a", b"a", lease=lease)
    written = await store.put("/rv/b", b"b", lease=lease)
    events = store.watch("/rv/")
    await store.revoke(lease)
    deletes = await take(events, 2)
    assert [(e.kind, e.kv.key) for e in deletes] == [
        (EventKind.DELETE, "/rv/a"),
        (EventKind.DELETE, "/rv/b"),
    ]
    revoked = await store.revision()
    assert written < deletes[0].revision <= deletes[1].revision == revoked
    assert await store.list("/rv/") == ListResult([], revoked)
    with pytest.raises(NotFound):
        await store.keepalive(lease)
    await store.revoke(lease)  # a no-op now
    await store.revoke(424242)
    assert await store.revision() == revoked


async def test_put_without_lease_detaches_the_key(store: StateStore) -> None:
    lease = await store.grant_lease(60)
    await store.put("/d/a", b"leased", lease=lease)
    await store.put("/d/a", b"free")
    await store.revoke(lease)
    kv = await store.get("/d/a")
    assert kv is not None and kv.value == b"free" and kv.lease is None


# -- leader election --------------------------------------------------------------


async def test_second_candidate_takes_over_after_resign(store: StateStore) -> None:
    lease_a = await store.grant_lease(60)
    lease_b = await store.grant_lease(60)
    assert await store.leader("ctl") is None
    first = await store.campaign("ctl", "a", lease_a)
    assert await store.leader("ctl") == "a"
    election = store.watch(first.key, first.revision)
    (elected,) = await take(election, 1)
    assert (elected.kind, elected.kv.value) == (EventKind.PUT, b"a")

    async with anyio.create_task_group() as group:
        won = anyio.Event()

        async def campaign_b() -> None:
            await store.campaign("ctl", "b", lease_b)
            won.set()

        group.start_soon(campaign_b)
        assert await store.leader("ctl") == "a"
        await store.resign(first)
        with anyio.fail_after(WAIT):
            await won.wait()
    assert await store.leader("ctl") == "b"
    handover = await take(election, 2)
    assert [(e.kind, e.kv.value) for e in handover] == [
        (EventKind.DELETE, b""),
        (EventKind.PUT, b"b"),
    ]
    # Resigning a term that is over changes nothing.
    await store.resign(first)
    assert await store.leader("ctl") == "b"


async def test_second_candidate_takes_over_when_the_leader_lease_expires(
    store: StateStore,
) -> None:
    lease_a = await store.grant_lease(0.3)  # never renewed
    lease_b = await store.grant_lease(60)
    first = await store.campaign("ctl", "a", lease_a)
    with anyio.fail_after(WAIT):
        second = await store.campaign("ctl", "b", lease_b)
    assert await store.leader("ctl") == "b"
    assert second.revision > first.revision
    history = await take(store.watch(first.key, first.revision), 3)
    assert [(e.kind, e.kv.value) for e in history] == [
        (EventKind.PUT, b"a"),
        (EventKind.DELETE, b""),
        (EventKind.PUT, b"b"),
    ]


async def test_leadership_fences_writes_of_a_deposed_leader(store: StateStore) -> None:
    lease_a = await store.grant_lease(60)
    lease_b = await store.grant_lease(60)
    first = await store.campaign("ctl", "a", lease_a)
    fence_a = Compare(first.key, CompareTarget.CREATE_REVISION, first.revision)
    assert (await store.txn([fence_a], [PutOp("/state", b"a")])).succeeded
    await store.revoke(lease_a)
    second = await store.campaign("ctl", "b", lease_b)
    assert not (await store.txn([fence_a], [PutOp("/state", b"stale")])).succeeded
    fence_b = Compare(second.key, CompareTarget.CREATE_REVISION, second.revision)
    assert (await store.txn([fence_b], [PutOp("/state", b"b")])).succeeded


async def test_campaign_with_a_dead_lease_is_refused(store: StateStore) -> None:
    lease = await store.grant_lease(60)
    await store.revoke(lease)
    with pytest.raises(NotFound):
        await store.campaign("ctl", "a", lease)


# -- closing -----------------------------------------------------------------------


async def test_a_closed_store_refuses_work_and_ends_watches(store: StateStore) -> None:
    events = store.watch("/")
    async with anyio.create_task_group() as group:
        outcome: list[BaseException] = []

        async def watch() -> None:
            try:
                await anext(events)
            except Unavailable as exc:
                outcome.append(exc)

        group.start_soon(watch)
        await anyio.wait_all_tasks_blocked()
        await store.aclose()
    assert len(outcome) == 1
    with pytest.raises(Unavailable):
        await store.get("/a")
    with pytest.raises(Unavailable):
        await store.put("/a", b"1")
