"""Per-node assignment streams from one watch of the store: a change is decoded once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from shoal.cluster import Assignments
from shoal.core import ManualClock
from shoal.interfaces import Compacted, EventKind, Instance, PodTemplate, StateStore, WatchEvent
from tests.cluster.test_grpc_state import WAIT, dump, ikey, instance, place

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def following(store: StateStore, **limits: int) -> AsyncIterator[Assignments]:
    assignments = Assignments(store, ManualClock(), **limits)
    async with anyio.create_task_group() as tg:
        await tg.start(assignments.run)
        yield assignments
        tg.cancel_scope.cancel()


async def take(
    assignments: Assignments, node: str, start: int | None, count: int
) -> list[WatchEvent]:
    seen: list[WatchEvent] = []
    with anyio.fail_after(WAIT):
        async for event in assignments.watch(node, start):
            seen.append(event)
            if len(seen) == count:
                break
    return seen


def shown(events: list[WatchEvent]) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.kv.key.rsplit("/", 1)[1]) for e in events]


async def test_a_node_gets_its_own_changes_only_each_decoded_once(store: StateStore) -> None:
    await place(store, instance("old", "w1"))
    await place(store, instance("far", "w2"))
    async with following(store) as assignments:
        listed = assignments.list("w1")
        assert [kv.key for kv in listed.items] == [ikey("old")]
        decoded = assignments.decoded
        start = listed.revision + 1
        await place(store, instance("theirs", "w2"))
        await place(store, instance("mine", "w1"))
        moved = instance("old", "w2")
        await store.put(ikey("old"), dump(moved))  # moved away: gone for w1
        await store.delete(ikey("mine"))
        await store.delete(ikey("theirs"))
        assert shown(await take(assignments, "w2", start, 3)) == [
            (EventKind.PUT, "theirs"),
            (EventKind.PUT, "old"),
            (EventKind.DELETE, "theirs"),  # the last change: the cache has them all
        ]
        assert assignments.decoded - decoded == 3  # one per PUT; deletes need none
        assert shown(await take(assignments, "w1", start, 3)) == [
            (EventKind.PUT, "mine"),
            (EventKind.DELETE, "old"),
            (EventKind.DELETE, "mine"),
        ]
        assert [kv.key for kv in assignments.list("w2").items] == [ikey("far"), ikey("old")]
        assert assignments.list("w3").items == []


async def test_a_reconnecting_worker_resumes_without_missing_or_repeating(
    store: StateStore,
) -> None:
    async with following(store) as assignments:
        start = assignments.list("w1").revision + 1
        await place(store, instance("a", "w1"))
        await place(store, instance("b", "w1"))
        first = await take(assignments, "w1", start, 1)  # then the worker goes away
        assert shown(first) == [(EventKind.PUT, "a")]
        await place(store, instance("c", "w1"))
        await store.delete(ikey("a"))
        rest = await take(assignments, "w1", first[-1].revision + 1, 3)
        assert shown(rest) == [(EventKind.PUT, "b"), (EventKind.PUT, "c"), (EventKind.DELETE, "a")]
        live: list[WatchEvent] = []

        async def follow() -> None:
            live.extend(await take(assignments, "w1", rest[-1].revision + 1, 1))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            await place(store, instance("d", "w1"))
        assert shown(live) == [(EventKind.PUT, "d")]


async def test_changes_older_than_what_is_kept_need_a_new_list(store: StateStore) -> None:
    before = await place(store, instance("early", "w1"))
    async with following(store, history=2) as assignments:
        with pytest.raises(Compacted, match="list again"):
            await take(assignments, "w1", before, 1)  # before the cache's own list
        start = assignments.revision + 1
        for name in ("a", "b", "c"):
            await place(store, instance(name, "w1"))
        assert shown(await take(assignments, "w1", start + 1, 2)) == [
            (EventKind.PUT, "b"),
            (EventKind.PUT, "c"),
        ]
        with pytest.raises(Compacted, match="after revision"):
            await take(assignments, "w1", start, 1)  # "a" fell out of the history of 2


async def test_a_reader_that_falls_too_far_behind_is_told_to_list_again(store: StateStore) -> None:
    async with following(store, backlog=2) as assignments:
        stream = assignments.watch("w1", assignments.revision + 1)
        await place(store, instance("a", "w1"))
        with anyio.fail_after(WAIT):
            first = await anext(stream)  # the stream is open and has been read
        assert shown([first]) == [(EventKind.PUT, "a")]
        for name in ("b", "c", "d"):  # unread: "d" overflows the backlog of 2
            await place(store, instance(name, "w1"))
        # An eager reader of the same node has all three once the cache has applied them.
        assert len(await take(assignments, "w1", first.revision + 1, 3)) == 3
        seen = []
        with anyio.fail_after(WAIT), pytest.raises(Compacted, match="more than 2 changes behind"):
            async for event in stream:
                seen.append(event)  # noqa: PERF401 (the loop must end by raising)
        assert shown(seen) == [(EventKind.PUT, "b"), (EventKind.PUT, "c")]


def uses_config(name: str, node: str, secret: str) -> Instance:
    template = PodTemplate.model_validate(
        {"containers": [{"name": "main", "image": "busybox", "env_from": [{"secret": secret}]}]}
    )
    return instance(name, node).model_copy(update={"template": template})


async def test_which_configuration_a_node_uses_is_known_without_decoding(
    store: StateStore,
) -> None:
    await place(store, uses_config("a", "w1", "creds"))
    async with following(store) as assignments:
        assert assignments.uses("w1", "Secret", "default", "creds")
        assert not assignments.uses("w2", "Secret", "default", "creds")
        assert not assignments.uses("w1", "ConfigMap", "default", "creds")
        start = assignments.revision + 1
        await place(store, uses_config("b", "w1", "creds"))
        await place(store, uses_config("c", "w2", "creds"))
        await store.put(ikey("a"), dump(uses_config("a", "w2", "creds")))  # moved away
        await store.delete(ikey("c"))
        # Once w2's stream has the last change, the cache has applied them all.
        assert shown(await take(assignments, "w2", start, 3)) == [
            (EventKind.PUT, "c"),
            (EventKind.PUT, "a"),
            (EventKind.DELETE, "c"),
        ]
        decoded = assignments.decoded
        assert assignments.uses("w1", "Secret", "default", "creds")  # still b
        assert assignments.uses("w2", "Secret", "default", "creds")  # a, now there
        start = assignments.revision + 1
        await store.delete(ikey("b"))
        await store.delete(ikey("a"))
        assert shown(await take(assignments, "w2", start, 1)) == [(EventKind.DELETE, "a")]
        assert not assignments.uses("w1", "Secret", "default", "creds")
        assert not assignments.uses("w2", "Secret", "default", "creds")
        assert assignments.decoded == decoded  # answering decoded nothing; deletes neither
