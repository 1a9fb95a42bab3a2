"""The audit trail: one chained entry per mutating call, and verify catches tampering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import pytest

from shoal.core import ShoalService, SystemClock
from shoal.interfaces import (
    AUDIT_ENTRIES,
    AUDIT_HEAD,
    Actor,
    AuditEntry,
    KeyValue,
    NotFound,
    SecretSpec,
    StateStore,
    Via,
    WorkloadSpec,
    audit_key,
)
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

ALICE = Actor(id="alice@laptop", via=Via.CLI)
WEB = WorkloadSpec.model_validate(
    {
        "name": "web",
        "namespace": "shop",
        "replicas": 1,
        "template": {"containers": [{"name": "c", "image": "busybox"}]},
    }
)
DB = SecretSpec.model_validate(
    {"name": "db", "namespace": "shop", "string_data": {"password": "hunter2-in-clear"}}
)


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    async with MemoryStore() as memory:
        yield memory


async def test_every_mutating_call_is_an_entry_naming_who_how_what_and_the_outcome(
    store: StateStore,
) -> None:
    service = ShoalService(store, SystemClock()).with_actor(ALICE)
    await service.apply([WEB, DB], dry_run=True)  # changes nothing: not recorded
    await service.apply([WEB, DB])
    await service.scale("web", 3, "shop")
    with pytest.raises(NotFound):
        await service.scale("nothing", 1, "shop")
    await service.list_workloads()  # a read: not recorded
    entries = await service.audit_entries()
    assert [(e.sequence, e.verb, e.object, e.outcome) for e in entries] == [
        (1, "apply", "Workload shop/web, Secret shop/db", "ok"),
        (2, "scale", "Workload shop/web", "ok"),
        (3, "scale", "Workload shop/nothing", "not_found"),
    ]
    assert {(e.actor, e.door) for e in entries} == {("alice@laptop", Via.CLI)}
    listed = await store.list(AUDIT_ENTRIES)
    assert all(b"hunter2-in-clear" not in kv.value for kv in listed.items)
    report = await service.verify_audit()
    assert report.intact, report.problems
    assert (report.entries, report.head_sequence) == (3, 3)
    assert report.head_hash == entries[-1].hash


async def test_concurrent_calls_make_one_unbroken_chain(store: StateStore) -> None:
    service = ShoalService(store, SystemClock())
    await service.with_actor(ALICE).apply([WEB])
    async with anyio.create_task_group() as tg:
        for replicas in range(20):  # one service per caller, as the front doors make them
            caller = service.with_actor(Actor(id=f"key-{replicas}", via=Via.REST))
            tg.start_soon(caller.scale, "web", replicas, "shop")
    report = await service.verify_audit()
    assert report.intact, report.problems
    assert report.entries == report.head_sequence == 21


async def test_two_servers_appending_in_turn_make_one_chain(store: StateStore) -> None:
    """Each server keeps the head it wrote; the other's append moves it, and that is seen."""
    first = ShoalService(store, SystemClock()).with_actor(ALICE)
    second = ShoalService(store, SystemClock()).with_actor(Actor(id="bob", via=Via.MCP))
    await first.apply([WEB])
    for replicas in range(1, 5):
        await (second if replicas % 2 else first).scale("web", replicas, "shop")
    entries = await first.audit_entries()
    assert [(e.sequence, e.actor) for e in entries] == [
        (1, "alice@laptop"),
        (2, "bob"),
        (3, "alice@laptop"),
        (4, "bob"),
        (5, "alice@laptop"),
    ]
    report = await first.verify_audit()
    assert report.intact, report.problems


async def test_an_append_reads_the_head_only_when_another_writer_moved_it(
    store: StateStore,
) -> None:
    reads: list[str] = []
    get = store.get

    async def counted(key: str) -> KeyValue | None:
        reads.append(key)
        return await get(key)

    store.get = counted  # type: ignore[method-assign]
    service = ShoalService(store, SystemClock()).with_actor(ALICE)
    await service.apply([WEB])
    assert reads.count(AUDIT_HEAD) == 1  # the first append: nothing known yet
    for replicas in (2, 3, 4):
        await service.scale("web", replicas, "shop")
    assert reads.count(AUDIT_HEAD) == 1
    other = ShoalService(store, SystemClock()).with_actor(ALICE)  # another server
    await other.scale("web", 5, "shop")
    await service.scale("web", 6, "shop")  # its kept head is stale: read again, then written
    assert reads.count(AUDIT_HEAD) == 3
    assert [e.sequence for e in await service.audit_entries()] == [1, 2, 3, 4, 5, 6]
    assert (await service.verify_audit()).intact


async def chain_of_four(store: StateStore) -> ShoalService:
    service = ShoalService(store, SystemClock()).with_actor(ALICE)
    await service.apply([WEB])
    for replicas in (2, 3, 4):
        await service.scale("web", replicas, "shop")
    assert (await service.verify_audit()).intact
    return service


async def test_verify_names_an_edited_entry(store: StateStore) -> None:
    service = await chain_of_four(store)
    kv = await store.get(audit_key(2))
    assert kv is not None
    forged = AuditEntry.model_validate_json(kv.value).model_copy(update={"actor": "mallory"})
    await store.put(audit_key(2), forged.model_dump_json().encode())
    report = await service.verify_audit()
    assert not report.intact
    assert report.problems == [
        "entry 2 (scale Workload shop/web by mallory) was edited: its content no longer "
        "matches its hash"
    ]


async def test_verify_names_a_deleted_entry_and_deleted_last_entries(store: StateStore) -> None:
    service = await chain_of_four(store)
    await store.delete(audit_key(2))
    report = await service.verify_audit()
    assert report.problems == ["entry 2 is missing (deleted) before 3"]
    await store.delete(audit_key(4))
    report = await service.verify_audit()
    assert report.problems == [
        "entry 2 is missing (deleted) before 3",
        "the head says entry 4 is the last but the trail ends at 3: the last entries were deleted",
    ]


async def test_a_rewritten_head_is_caught_too(store: StateStore) -> None:
    service = await chain_of_four(store)
    head = await store.get(AUDIT_HEAD)
    assert head is not None
    await store.put(AUDIT_HEAD, json.dumps({"sequence": 4, "hash": "f" * 64}).encode())
    report = await service.verify_audit()
    assert report.problems == ["the head's hash does not match entry 4: it was edited"]


async def test_a_head_that_is_not_valid_is_reported_then_repaired_on_the_record(
    store: StateStore,
) -> None:
    """Every change went through but reported an internal error, and none was audited."""
    await chain_of_four(store)
    await store.put(AUDIT_HEAD, b"garbage")
    service = ShoalService(store, SystemClock()).with_actor(ALICE)  # a restarted agent
    report = await service.verify_audit()
    assert report.problems == [
        f"the head ({AUDIT_HEAD}) is not valid (b'garbage' is not a head): it was edited"
    ]
    scaled = await service.scale("web", 5, "shop")  # no error: the change and its entry stand
    assert scaled.spec.replicas == 5
    *_, repair, entry = await service.audit_entries(10)
    assert (repair.sequence, repair.verb, repair.actor) == (5, "repair_audit_head", "shoal")
    assert repair.outcome.startswith("the head was not valid (b'garbage' is not a head)")
    assert repair.outcome.endswith("went on after entry 4")
    assert (entry.sequence, entry.verb, entry.outcome) == (6, "scale", "ok")
    assert (await service.verify_audit()).intact  # whole again, the repair on the record


async def test_an_entry_that_cannot_be_read_is_listed_in_its_place(store: StateStore) -> None:
    service = await chain_of_four(store)
    await store.put(audit_key(3), b"{not an entry")
    listed = await service.audit_entries(10)
    assert [e.sequence for e in listed] == [1, 2, 3, 4]
    assert (listed[2].verb, listed[2].object) == ("unreadable", audit_key(3))
    assert "run `shoal audit verify`" in listed[2].outcome
    assert (await service.verify_audit()).problems[0] == (
        f"{audit_key(3)} is not an audit entry (it was overwritten)"
    )
    await service.scale("web", 1, "shop")  # the trail goes on after it
    assert [e.sequence for e in await service.audit_entries(2)] == [4, 5]
