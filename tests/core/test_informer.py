"""The informer: a prefix's cache fed by list-then-watch, on memory, SQLite and a real etcd.

Every wait is bounded; changes are awaited through the cache's own
``caught_up``, never by sleeping.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from shoal.core._clock import SystemClock
from shoal.core._informer import Informer
from shoal.interfaces import KeyValue, PutOp, StateStore, WatchEvent
from shoal.state import EtcdStore, MemoryStore, SqliteStore
from tests.state.conftest import isolated_etcd_store
from tests.state.support import running_etcd

pytestmark = pytest.mark.anyio

PREFIX = "/things/"


@pytest.fixture(scope="module")
def etcd_endpoint() -> Iterator[str]:
    with running_etcd() as member:
        yield member.endpoint


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    elif request.param == "sqlite":
        async with SqliteStore(tmp_path / "state.db", recent_history=8) as sqlite:
            yield sqlite
    else:
        async with isolated_etcd_store(request.getfixturevalue("etcd_endpoint")) as etcd:
            yield etcd


def decode(kv: KeyValue) -> dict[str, str]:
    data = json.loads(kv.value)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


async def put(store: StateStore, name: str, **fields: str) -> int:
    return await store.put(f"{PREFIX}{name}", json.dumps(fields).encode())


async def test_the_cache_lists_then_follows_every_change_in_order(store: StateStore) -> None:
    await put(store, "a", node="n1")
    await put(store, "b", node="n2")
    await store.put("/elsewhere/x", b"{}")
    informer = Informer(store, PREFIX, decode, SystemClock())
    informer.add_index("node", lambda thing: [thing["node"]])
    seen: list[tuple[str, str | None, str | None]] = []
    informer.listen(
        lambda key, old, new: seen.append(
            (key, None if old is None else old["node"], None if new is None else new["node"])
        )
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(informer.run)
            assert sorted(informer) == [f"{PREFIX}a", f"{PREFIX}b"]
            assert [t["node"] for t in informer.by_index("node", "n1")] == ["n1"]

            await put(store, "a", node="n2")
            await put(store, "c", node="n1")
            last = await store.delete(f"{PREFIX}b")
            assert last is not None
            await informer.caught_up(last)
            assert informer.revision >= last
            assert sorted(informer) == [f"{PREFIX}a", f"{PREFIX}c"]
            assert informer.by_index("node", "n2") == [{"node": "n2"}]
            assert informer.by_index("node", "n1") == [{"node": "n1"}]
            tg.cancel_scope.cancel()
    assert seen == [
        (f"{PREFIX}a", None, "n1"),
        (f"{PREFIX}b", None, "n2"),
        (f"{PREFIX}a", "n1", "n2"),
        (f"{PREFIX}c", None, "n1"),
        (f"{PREFIX}b", "n2", None),
    ]


async def test_a_record_that_cannot_be_read_is_absent_not_fatal(store: StateStore) -> None:
    await store.put(f"{PREFIX}bad", b"[1, 2]")
    informer = Informer(store, PREFIX, decode, SystemClock())
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(informer.run)
            assert informer.get(f"{PREFIX}bad") is None
            revision = await put(store, "good", node="n1")
            await informer.caught_up(revision)
            assert list(informer) == [f"{PREFIX}good"]
            tg.cancel_scope.cancel()


async def test_a_watch_that_falls_behind_compacted_history_relists_and_misses_nothing(
    store: StateStore,
) -> None:
    """The cache's watch is cut off; the history it needs is compacted; it relists.

    Listeners then hear, as changes, exactly what happened while it was cut
    off: an update, a delete and a create.
    """
    assert isinstance(store, MemoryStore | SqliteStore | EtcdStore)
    await put(store, "keep", node="n1")
    await put(store, "gone", node="n1")
    await put(store, "moved", node="n1")
    informer = Informer(store, PREFIX, decode, SystemClock())
    seen: list[tuple[str, bool, bool]] = []
    informer.listen(lambda key, old, new: seen.append((key, old is not None, new is not None)))
    cut = anyio.Event()
    real_watch = store.watch

    async def watch_after_a_gap(
        prefix: str, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        if not cut.is_set():  # the first watch: stalls, then finds its history compacted
            await cut.wait()
            await store.compact(await store.revision())
        async for event in real_watch(prefix, start_revision):
            yield event

    store.watch = watch_after_a_gap  # type: ignore[method-assign]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(informer.run)
            seen.clear()
            await put(store, "moved", node="n2")
            await store.delete(f"{PREFIX}gone")
            last = await put(store, "new", node="n3")
            cut.set()
            await informer.caught_up(last)
            assert informer.relists == 1
            assert sorted(informer) == [f"{PREFIX}keep", f"{PREFIX}moved", f"{PREFIX}new"]
            assert informer.get(f"{PREFIX}moved") == {"node": "n2"}
            tg.cancel_scope.cancel()
    assert sorted(seen) == [
        (f"{PREFIX}gone", True, False),
        (f"{PREFIX}moved", True, True),
        (f"{PREFIX}new", False, True),
    ]


async def test_caught_up_means_every_event_of_that_revision_is_in_the_cache(
    store: StateStore,
) -> None:
    """A backlog larger than one history read never wakes a waiter on half a transaction."""
    informer = Informer(store, PREFIX, decode, SystemClock())
    written = anyio.Event()
    real_watch = store.watch

    async def watch_after_the_writes(
        prefix: str, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        await written.wait()  # so the cache has all of them to catch up on at once
        async for event in real_watch(prefix, start_revision):
            yield event

    store.watch = watch_after_the_writes  # type: ignore[method-assign]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(informer.run)
            last = 0
            for start, size in ((0, 400), (400, 128)):  # the second straddles 512 events
                ops = [
                    PutOp(f"{PREFIX}{n:05d}", json.dumps({"n": str(n)}).encode())
                    for n in range(start, start + size)
                ]
                for chunk in range(0, size, 128):  # etcd's default limit a transaction
                    last = (await store.txn([], ops[chunk : chunk + 128])).revision
            written.set()
            await informer.caught_up(last)
            assert len(informer) == 528
            tg.cancel_scope.cancel()


async def test_a_write_this_process_expects_is_not_decoded_again(store: StateStore) -> None:
    informer: Informer[dict[str, str]] = Informer(store, PREFIX, decode, SystemClock())
    mine = {"node": "n1"}
    other = {"node": "n2"}
    payload = json.dumps(mine).encode()
    informer.expect([PutOp(f"{PREFIX}a", payload)], lambda kv: mine)
    informer.expect([PutOp(f"{PREFIX}b", payload)], lambda kv: other)  # b is written otherwise
    async with anyio.create_task_group() as tg:
        await tg.start(informer.run)
        await store.put(f"{PREFIX}a", payload)
        revision = await put(store, "b", node="n3")
        await informer.caught_up(revision)
        tg.cancel_scope.cancel()

    assert informer.get(f"{PREFIX}a") is mine
    assert informer.get(f"{PREFIX}b") == {"node": "n3"}


async def test_a_relist_decodes_only_what_changed_since_the_cache_saw_it(
    store: StateStore,
) -> None:
    decoded: list[str] = []

    def counting(kv: KeyValue) -> dict[str, str]:
        decoded.append(kv.key)
        return decode(kv)

    informer = Informer(store, PREFIX, counting, SystemClock())
    changes: list[tuple[str, object, object]] = []
    informer.listen(lambda key, old, new: changes.append((key, old, new)))
    for name in ("a", "b", "c"):
        await put(store, name, node="n1")
    await informer.refresh()
    assert sorted(decoded) == [f"{PREFIX}a", f"{PREFIX}b", f"{PREFIX}c"]
    kept = informer.get(f"{PREFIX}a")

    decoded.clear()
    changes.clear()
    await put(store, "b", node="n2")  # changed
    await put(store, "c", node="n1")  # rewritten with the same content
    await store.delete(f"{PREFIX}a")
    await put(store, "a", node="n1")  # gone and back: a new revision, decoded again
    await put(store, "d", node="n3")  # new
    await informer.refresh()
    assert sorted(decoded) == [f"{PREFIX}{n}" for n in "abcd"]
    assert informer.get(f"{PREFIX}a") == kept
    assert sorted(key for key, _, _ in changes) == [f"{PREFIX}b", f"{PREFIX}d"]

    decoded.clear()
    changes.clear()
    await informer.refresh()  # nothing changed: nothing decoded, nobody told
    assert decoded == [] and changes == []
    assert informer.get(f"{PREFIX}b") == {"node": "n2"}
