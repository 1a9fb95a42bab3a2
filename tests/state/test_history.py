"""Watch wake-ups: only for a commit under the watcher's prefix, no empty re-reads, no lag.

The commit notifier wakes only the watchers whose prefix a commit changed; a
watcher that has read to the head reads again only once woken, and then from
the revision that woke it, so a quiet prefix's watcher never falls behind the
history the store keeps.
"""

import asyncio
import gc
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import EventKind, KeyValue, WatchEvent
from shoal.state import MemoryStore, SqliteStore
from shoal.state._history import Batch, CommitNotifier, Position, Watcher

WAIT = 10


def put(key: str, revision: int = 1) -> WatchEvent:
    return WatchEvent(EventKind.PUT, KeyValue(key, b"v", revision, revision, 1))


def test_a_commit_wakes_the_prefixes_it_changed_and_no_other() -> None:
    notifier = CommitNotifier()
    instances, workloads, everything = (
        notifier.changed("/instances/"),
        notifier.changed("/workloads/"),
        notifier.changed(""),
    )
    notifier.notify(7, [put("/audit/entries/1", 7), put("/instances/default/web-1", 7)])
    assert instances.event.is_set() and instances.revision == 7
    assert everything.event.is_set() and everything.revision == 7
    assert not workloads.event.is_set()
    assert notifier.changed("/workloads/") is workloads  # still waiting, still the same


def test_a_woken_prefix_waits_on_a_new_wake_up() -> None:
    notifier = CommitNotifier()
    first = notifier.changed("/instances/")
    assert notifier.changed("/instances/") is first  # waiters on one prefix share it
    notifier.notify(3, [put("/instances/default/web-1", 3)])
    second = notifier.changed("/instances/")
    assert first.event.is_set()
    assert not second.event.is_set()


def test_a_commit_nobody_waits_for_wakes_nothing() -> None:
    notifier = CommitNotifier()
    notifier.notify(1, [put("/events/workload/default/web/1")])
    assert not notifier.changed("/events/workload/").event.is_set()  # only later commits count


def test_a_prefix_nobody_waits_on_any_more_is_forgotten() -> None:
    notifier = CommitNotifier()
    waiting = notifier.changed("/_elections/control-loop/1")
    assert list(notifier._wakes) == ["/_elections/control-loop/1"]
    del waiting  # its watcher was cancelled
    gc.collect()
    assert not notifier._wakes


def test_closing_wakes_every_waiter_now_and_later() -> None:
    notifier = CommitNotifier()
    waiting = notifier.changed("/nodes/")
    notifier.close()
    assert waiting.event.is_set()
    assert notifier.changed("/workloads/").event.is_set()


@pytest.mark.anyio
async def test_a_watcher_at_the_head_reads_again_only_after_a_commit_under_its_prefix() -> None:
    notifier = CommitNotifier()
    history = [put("/instances/a", 1)]
    reads: list[Position] = []

    async def read(prefix: str, position: Position) -> Batch:
        reads.append(position)
        found = [e for e in history[position.revision - 1 :] if e.kv.key.startswith(prefix)]
        return Batch(found, Position(len(history) + 1, 0), False)

    watcher = Watcher(read, notifier, "/instances/", 1)
    first = await watcher.__anext__()
    assert first.kv.key == "/instances/a"
    assert len(reads) == 1
    received: list[WatchEvent] = []

    async def next_event() -> None:
        received.append(await watcher.__anext__())

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(next_event)
            await anyio.wait_all_tasks_blocked()
            assert len(reads) == 1  # caught up: waiting, not reading an empty history again
            for revision in (2, 3):
                history.append(put(f"/audit/{revision}", revision))
                notifier.notify(revision, history[-1:])
            await anyio.wait_all_tasks_blocked()
            assert len(reads) == 1  # another prefix's commits do not wake it
            history.append(put("/instances/b", 4))
            notifier.notify(4, history[-1:])
    assert [e.kv.key for e in received] == ["/instances/b"]
    assert reads == [Position(1, 0), Position(4, 0)]  # on from the commit that woke it


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_quiet_watcher_outlives_the_history_kept(kind: str, tmp_path: Path) -> None:
    """A hundred commits elsewhere, ten revisions kept: it still sees its prefix's next change."""
    store = (
        MemoryStore(history_size=10)
        if kind == "memory"
        else SqliteStore(tmp_path / "state.db", history_size=10)
    )
    async with store:
        watcher = store.watch("/quiet/")
        seen: list[str] = []

        async def first_change() -> None:
            async for event in watcher:
                seen.append(event.kv.key)
                return

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as group:
                group.start_soon(first_change)
                await anyio.wait_all_tasks_blocked()
                for i in range(100):
                    await store.put(f"/noise/{i}", b"x")
                await store.put("/quiet/x", b"y")
        assert seen == ["/quiet/x"]


@pytest.mark.anyio
async def test_a_waiting_watcher_is_not_collected_with_a_task_nobody_holds() -> None:
    """The wake-up it waits on is held by the store while it waits (the notifier's are weak)."""
    async with MemoryStore() as store:
        delivered = anyio.Event()
        seen: list[str] = []

        async def first_change() -> None:
            async for event in store.watch("/p/"):
                seen.append(event.kv.key)
                delivered.set()
                return

        task = asyncio.get_running_loop().create_task(first_change())
        await anyio.wait_all_tasks_blocked()
        del task  # a bare asyncio task: only what it waits on refers to it
        gc.collect()
        await store.put("/p/x", b"1")
        with anyio.fail_after(WAIT):
            await delivered.wait()
        assert seen == ["/p/x"]
