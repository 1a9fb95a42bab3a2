"""The commit notifier wakes only the watchers whose prefix a commit changed."""

from shoal.interfaces import EventKind, KeyValue, WatchEvent
from shoal.state._history import CommitNotifier


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
