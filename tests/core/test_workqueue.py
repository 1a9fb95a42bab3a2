"""The work queue: one pass per burst of changes, one worker per key, retries that back off."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from shoal.core._clock import ManualClock
from shoal.core._workqueue import QueueClosed, WorkQueue

pytestmark = pytest.mark.anyio


async def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue = WorkQueue(ManualClock())
    for key in ("a", "b", "a", "a", "b", "c"):
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_a_key_added_while_in_progress_waits_for_done_then_comes_back() -> None:
    queue = WorkQueue(ManualClock())
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")  # a change while a worker has it
    queue.add("b")
    assert await queue.get() == "b"  # never "a" twice at once
    assert len(queue) == 0
    queue.done("a")
    assert await queue.get() == "a"  # the change is not lost


async def test_a_worker_waits_for_a_key_and_close_ends_it() -> None:
    queue = WorkQueue(ManualClock())
    got: list[str] = []

    async def worker() -> None:
        try:
            while True:
                key = await queue.get()
                got.append(key)
                queue.done(key)
        except QueueClosed:
            got.append("closed")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()
            queue.add("x")
            await wait_all_tasks_blocked()
            assert got == ["x"]
            queue.close()
    assert got == ["x", "closed"]


async def test_retries_back_off_per_key_and_forget_resets_them() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock, first=1.0, cap=4.0)
    delays = [queue.retry("a") for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert queue.failures("a") == 4
    queue.forget("a")
    assert queue.retry("a") == 1.0
    assert queue.retry("b") == 1.0  # every key has its own backoff


async def test_a_delayed_key_is_handed_out_when_the_clock_reaches_it() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock)
    queue.add_after("later", 10.0)
    got: list[str] = []

    async def worker() -> None:
        got.append(await queue.get())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()
            clock.advance(9.0)
            await wait_all_tasks_blocked()
            assert got == []
            clock.advance(1.0)
    assert got == ["later"]


async def test_the_token_bucket_spaces_out_a_storm_of_retries() -> None:
    clock = ManualClock()
    queue = WorkQueue(clock, first=0.0, rate=10.0, burst=5)
    delays = [queue.retry(f"k{i}") for i in range(8)]
    assert delays[:5] == [0.0] * 5  # the burst
    assert delays[5:] == pytest.approx([0.1, 0.2, 0.3])  # then ten a second


async def test_every_waiting_worker_is_woken_and_close_ends_them_all() -> None:
    queue = WorkQueue(ManualClock())
    got: list[tuple[str, str]] = []
    ended: list[str] = []

    async def worker(name: str) -> None:
        try:
            while True:
                key = await queue.get()
                got.append((name, key))
                await wait_all_tasks_blocked()  # hold the key while the other waits
                queue.done(key)
        except QueueClosed:
            ended.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, "a")
            tg.start_soon(worker, "b")
            await wait_all_tasks_blocked()
            queue.add("k1")
            queue.add("k2")
            await wait_all_tasks_blocked()
            assert sorted(key for _, key in got) == ["k1", "k2"]
            queue.close()
    assert sorted(ended) == ["a", "b"]


async def test_queued_says_whether_a_pass_of_the_key_is_due_not_a_retry_later() -> None:
    queue = WorkQueue(ManualClock())
    queue.add("a")
    assert queue.queued("a") and not queue.queued("b")
    assert await queue.get() == "a"
    assert not queue.queued("a")  # in progress, nothing new
    queue.add("a")  # changed meanwhile: another pass follows the one in progress
    assert queue.queued("a")
    queue.add("b")
    assert await queue.get() == "b"
    queue.retry("b")  # waits for its backoff only
    queue.done("b")
    assert not queue.queued("b")


async def test_a_key_waits_for_its_earliest_wake_up_only_and_is_no_depth_meanwhile() -> None:
    """A crash-looping key asked each pass for a later recheck: one entry, not one per pass."""
    clock = ManualClock()
    queue = WorkQueue(clock)
    for _ in range(1000):
        queue.add_after("looping", 600.0)
        clock.advance(0.01)
    queue.add_after("looping", 5.0)  # an earlier one replaces it
    assert len(queue._delayed) < 100 and queue._deadlines == {"looping": clock.monotonic() + 5}
    assert queue.depth == 0  # a wake-up due later is no work waiting
    queue.add("now")
    assert queue.depth == 1
    assert await queue.get() == "now"
    queue.done("now")
    clock.advance(5.0)
    with anyio.fail_after(5):
        assert await queue.get() == "looping"
    queue.done("looping")
    clock.advance(600.0)  # the superseded wake-ups bring nothing more
    queue._promote_due()
    assert len(queue) == 0 and queue._deadlines == {}
