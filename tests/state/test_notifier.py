"""Watch wake-ups: only for a commit under the watcher's prefix, and no empty re-reads.

The commit notifier wakes only the watchers whose prefix a commit changed, and a
watcher that has read to the head reads again only once woken.
"""

import anyio
import pytest

from shoal.interfaces import EventKind, KeyValue, WatchEvent
from shoal.state._history import Batch, CommitNotifier, Position, Watcher


def put(key: str) -> WatchEvent:
    return WatchEvent(EventKind.PUT, KeyValue(key, b"v", 1, 1, 1))


def test_a_commit_wakes_the_prefixes_it_changed_and_no_other() -> None:
    notifier = CommitNotifier()
    instances, workloads, everything = (
        notifier.changed("/instances/"),
        notifier.changed("/workloads/"),
        notifier.changed(""),
    )
    notifier.notify([put("/audit/entries/1"), put("/instances/default/web-1")])
    assert instances.is_set()
    assert everything.is_set()
    assert not workloads.is_set()
    assert notifier.changed("/workloads/") is workloads  # still waiting, still the same event


def test_a_woken_prefix_waits_on_a_new_event() -> None:
    notifier = CommitNotifier()
    first = notifier.changed("/instances/")
    assert notifier.changed("/instances/") is first  # waiters on one prefix share it
    notifier.notify([put("/instances/default/web-1")])
    second = notifier.changed("/instances/")
    assert first.is_set()
    assert not second.is_set()


def test_a_commit_nobody_waits_for_wakes_nothing() -> None:
    notifier = CommitNotifier()
    notifier.notify([put("/events/workload/default/web/1")])
    assert not notifier.changed("/events/workload/").is_set()  # only commits after it count


def test_closing_wakes_every_waiter_now_and_later() -> None:
    notifier = CommitNotifier()
    waiting = notifier.changed("/nodes/")
    notifier.close()
    assert waiting.is_set()
    assert notifier.changed("/workloads/").is_set()


@pytest.mark.anyio
async def test_a_watcher_at_the_head_reads_again_only_after_a_commit_under_its_prefix() -> None:
    notifier = CommitNotifier()
    history = [put("/instances/a")]
    reads: list[Position] = []

    async def read(prefix: str, position: Position) -> Batch:
        reads.append(position)
        found = [e for e in history[position.revision - 1 :] if e.kv.key.startswith(prefix)]
        return Batch(found, Position(len(history) + 1, 0), False)

    watcher = Watcher(read, notifier, "/instances/", 1)
    first = await watcher.__anext__()
    assert first.kv.key == "/instances/a"
    assert len(reads) == 1
    async with anyio.create_task_group() as group:
        received: list[WatchEvent] = []

        async def next_event() -> None:
            received.append(await watcher.__anext__())

        group.start_soon(next_event)
        await anyio.wait_all_tasks_blocked()
        assert len(reads) == 1  # caught up: waiting, not reading an empty history again
        history.append(put("/audit/1"))
        notifier.notify(history[-1:])
        await anyio.wait_all_tasks_blocked()
        assert len(reads) == 1  # another prefix's commit does not wake it
        history.append(put("/instances/b"))
        notifier.notify(history[-1:])
    assert [e.kv.key for e in received] == ["/instances/b"]
    assert reads == [Position(1, 0), Position(2, 0)]
