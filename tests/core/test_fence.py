"""FencedStore: a leader's writes land during its term only; CAS conflicts stay conflicts."""

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    Deposed,
    FencedStore,
    ManualClock,
    ShoalService,
)
from shoal.interfaces import (
    Actor,
    Compare,
    CompareTarget,
    DeleteOp,
    InvalidInput,
    Leadership,
    PutOp,
    RevisionConflict,
    ShoalError,
    StateStore,
    Unavailable,
)
from shoal.state import MemoryStore, SqliteStore
from tests.core.support import spec

pytestmark = pytest.mark.anyio

ELECTION = "control-loop"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    clock = ManualClock()
    inner: MemoryStore | SqliteStore
    if request.param == "memory":
        inner = MemoryStore(clock=clock)
    else:
        inner = SqliteStore(tmp_path / "state.db", clock=clock)
    async with inner:
        yield inner


async def lead(store: StateStore, candidate: str) -> Leadership:
    return await store.campaign(ELECTION, candidate, await store.grant_lease(30))


async def depose(store: StateStore, leadership: Leadership) -> Leadership:
    """End ``leadership``'s term and let another candidate win the next one."""
    await store.resign(leadership)
    return await lead(store, "usurper")


async def test_a_current_leaders_writes_land_with_the_stores_return_values(
    store: StateStore,
) -> None:
    fenced = FencedStore(store, await lead(store, "first"))

    revision = await fenced.put("/k", b"1")
    assert revision == await store.revision()
    kv = await store.get("/k")
    assert kv is not None and kv.value == b"1"
    assert await fenced.put("/k", b"2", expected_revision=kv.mod_revision) == revision + 1
    assert await fenced.put("/new", b"x", expected_revision=0) == revision + 2

    assert await fenced.delete("/k", expected_revision=revision + 1) == revision + 3
    assert await fenced.delete("/k") is None  # nothing to delete: as the store answers
    assert await fenced.delete("/missing", expected_revision=0) is None
    assert await store.get("/k") is None

    outcome = await fenced.txn(
        [Compare("/new", CompareTarget.VALUE, b"x")], [PutOp("/a", b"a"), DeleteOp("/new")]
    )
    assert outcome.succeeded and outcome.deleted == 1 and outcome.revision == revision + 4
    missed = await fenced.txn([Compare("/new", CompareTarget.VALUE, b"x")], [PutOp("/b", b"b")])
    assert not missed.succeeded
    assert await store.get("/b") is None


async def test_a_deposed_leaders_writes_raise_deposed_and_write_nothing(store: StateStore) -> None:
    first = await lead(store, "first")
    fenced = FencedStore(store, first)
    await fenced.put("/k", b"1")
    kv = await store.get("/k")
    assert kv is not None
    await depose(store, first)
    before = await store.revision()

    with pytest.raises(Deposed, match="first is no longer the leader of 'control-loop'") as caught:
        await fenced.put("/k", b"2")
    assert "'usurper' holds it" in caught.value.message
    assert "it stops writing" in caught.value.message
    assert isinstance(caught.value, Unavailable)
    with pytest.raises(Deposed):
        await fenced.put("/k", b"2", expected_revision=kv.mod_revision)
    with pytest.raises(Deposed):
        await fenced.delete("/k")
    with pytest.raises(Deposed):
        await fenced.delete("/k", expected_revision=999)  # deposed wins over a conflict
    with pytest.raises(Deposed):
        await fenced.txn([], [PutOp("/other", b"x")])

    assert await store.revision() == before
    assert await store.get("/k") == kv
    assert await store.get("/other") is None


async def test_a_leader_whose_lease_ran_out_is_deposed_even_with_nobody_leading(
    store: StateStore,
) -> None:
    first = await lead(store, "first")
    fenced = FencedStore(store, first)
    await store.revoke(first.lease)  # as when the lease expires
    with pytest.raises(Deposed, match="nobody holds it now"):
        await fenced.put("/k", b"1")
    assert await store.get("/k") is None


async def test_a_lost_compare_and_swap_raises_what_the_store_itself_raises(
    store: StateStore,
) -> None:
    fenced = FencedStore(store, await lead(store, "first"))
    revision = await store.put("/k", b"1")

    async def both(write: str, expected: int) -> tuple[ShoalError, ShoalError]:
        errors: list[ShoalError] = []
        for target in (store, fenced):
            with pytest.raises(RevisionConflict) as caught:
                if write == "put":
                    await target.put("/k", b"2", expected_revision=expected)
                else:
                    await target.delete("/k", expected_revision=expected)
            errors.append(caught.value)
        return errors[0], errors[1]

    for write, expected in [("put", revision + 5), ("put", 0), ("delete", revision + 5)]:
        plain, fenced_error = await both(write, expected)
        assert fenced_error.message == plain.message
        assert fenced_error.details == plain.details
        assert not isinstance(fenced_error, Deposed)

    with pytest.raises(RevisionConflict, match="does not exist but was expected at revision 3"):
        await fenced.put("/absent", b"x", expected_revision=3)
    kv = await store.get("/k")
    assert kv is not None and kv.value == b"1"


async def test_a_fenced_transaction_refuses_a_failure_branch(store: StateStore) -> None:
    fenced = FencedStore(store, await lead(store, "first"))
    with pytest.raises(InvalidInput, match="cannot have a failure branch"):
        await fenced.txn([], [PutOp("/a", b"a")], [PutOp("/b", b"b")])


async def test_reads_watches_and_elections_pass_through(store: StateStore) -> None:
    first = await lead(store, "first")
    fenced = FencedStore(store, first)
    await store.put("/k", b"1")
    assert await fenced.get("/k") == await store.get("/k")
    assert (await fenced.list("/")).items == (await store.list("/")).items
    assert await fenced.revision() == await store.revision()
    assert await fenced.leader(ELECTION) == "first"
    start = await store.revision()
    await store.put("/k", b"2")
    with anyio.fail_after(5):
        async for event in fenced.watch("/k", start + 1):
            assert event.kv.value == b"2"
            break
    await fenced.resign(first)
    assert await store.leader(ELECTION) is None


async def test_a_control_loop_whose_leadership_was_taken_over_stops_writing(
    store: StateStore,
) -> None:
    clock = ManualClock()
    service = ShoalService(store, clock, Actor(id="tester", via="rest"))
    first = await lead(store, "first")
    control = ControlLoop(FencedStore(store, first), DefaultScheduler(), clock)
    await service.apply([spec(replicas=2)])
    await control.reconcile_once()
    assert len((await store.list("/instances/")).items) == 2  # its writes landed

    await depose(store, first)
    await service.scale("web", 5)
    before = await store.revision()
    with pytest.raises(Deposed, match="first is no longer the leader"):
        await control.reconcile_once()
    with pytest.RaisesGroup(Deposed, flatten_subgroups=True):
        await control.run()  # the loop ends instead of retrying
    assert await store.revision() == before
    assert len((await store.list("/instances/")).items) == 2
