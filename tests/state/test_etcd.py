"""EtcdStore specifics: namespacing, fencing a deposed leader, and an etcd that is not there."""

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import anyio.to_thread
import pytest
from aetcd import Client

import shoal.state._etcd
from shoal.interfaces import (
    Compare,
    CompareTarget,
    InvalidInput,
    NotFound,
    PutOp,
    StateStore,
    Unavailable,
    WatchEvent,
)
from shoal.state import EtcdStore
from tests.ports import free_port
from tests.state.support import EtcdMember, running_etcd

pytestmark = pytest.mark.anyio

WAIT = 10


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    got: list[WatchEvent] = []
    with anyio.fail_after(WAIT):
        while len(got) < count:
            got.append(await anext(events))
    return got


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
async def one_event_loop(anyio_backend: str) -> AsyncIterator[None]:
    """Run this module's tests on one event loop.

    gRPC finishes cancelled calls a moment after they end (here: watches on
    an etcd that was killed, and stores closed as a test returns) and hands
    the completion to the loop that made the call. Had that loop closed, the
    next test using gRPC would fail on it; a loop that stays open takes it.
    """
    yield


@pytest.fixture
def own_etcd() -> Iterator[EtcdMember]:
    """A private etcd member, for tests that stop it."""
    with running_etcd("shoal-own") as member:
        yield member


# -- an etcd that is not there ------------------------------------------------


async def test_an_unreachable_endpoint_is_unavailable_at_once() -> None:
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught, anyio.fail_after(WAIT):
        async with EtcdStore(endpoint, timeout=2):
            pass
    assert time.monotonic() - started < 2
    message = caught.value.message
    assert endpoint in message
    assert "check that etcd is running" in message
    assert caught.value.details["endpoints"] == [endpoint]


async def test_a_silent_endpoint_is_unavailable_within_the_timeout() -> None:
    # Accepts connections (the kernel does) but never speaks: a hung etcd.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        store = EtcdStore(endpoint, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught, anyio.fail_after(WAIT):
            await store.put("/k", b"v")  # a store never entered connects on first use
        assert endpoint in caught.value.message
        assert time.monotonic() - started < 0.5 + 1.5
        await store.aclose()


async def test_the_first_endpoint_that_answers_is_used(etcd_endpoint: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with EtcdStore(f"{dead},{etcd_endpoint}", prefix="/test/failover") as store:
        revision = await store.put("/k", b"v")
        kv = await store.get("/k")
        assert kv is not None and kv.mod_revision == revision


async def test_losing_etcd_fails_fast_and_loses_nothing(own_etcd: EtcdMember) -> None:
    async with EtcdStore(own_etcd.endpoint, timeout=2) as store:
        kept = await store.put("/k/kept", b"1")
        events = store.watch("/k/", kept + 1)
        lost: list[Unavailable] = []

        async def follow() -> None:
            try:
                await anext(events)
            except Unavailable as exc:
                lost.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            own_etcd.stop()  # SIGKILL

        # The watch ended (the task group waited for it) with where to resume.
        assert lost[0].details["resume_revision"] == kept + 1
        started = time.monotonic()
        with pytest.raises(Unavailable, match=own_etcd.endpoint), anyio.fail_after(WAIT):
            await store.txn([], [PutOp("/k/a", b"x"), PutOp("/k/b", b"x")])
        assert time.monotonic() - started < 2 + 1

        await anyio.to_thread.run_sync(own_etcd.start)
        # The same store reconnects; nothing acknowledged was lost, nothing of
        # the refused transaction was written.
        with anyio.fail_after(WAIT):
            while True:
                try:
                    listing = await store.list("/k/")
                    break
                except Unavailable:
                    await anyio.sleep(0.1)  # pacing reconnection attempts
        assert [(kv.key, kv.value) for kv in listing.items] == [("/k/kept", b"1")]
        resumed = store.watch("/k/", lost[0].details["resume_revision"])
        written = await store.put("/k/after", b"2")
        (event,) = await take(resumed, 1)
        assert (event.kv.key, event.revision) == ("/k/after", written)


# -- etcd's own model -----------------------------------------------------------


async def test_keys_live_under_the_prefix_with_etcd_revisions(
    etcd_store: EtcdStore, etcd_endpoint: str
) -> None:
    revision = await etcd_store.put("/workloads/web", b"{}")
    host, _, port = etcd_endpoint.rpartition(":")
    async with Client(host, int(port)) as raw:
        stored = await raw.get(f"{etcd_store.prefix}/workloads/web".encode())
    assert stored is not None
    assert (stored.value, stored.mod_revision) == (b"{}", revision)
    async with EtcdStore(etcd_endpoint, prefix=etcd_store.prefix + "-other") as other:
        assert await other.get("/workloads/web") is None
        assert (await other.list("")).items == []
        assert await other.revision() == revision  # one etcd, one revision


async def test_a_long_listing_is_read_in_pages_at_one_revision(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shoal.state._etcd, "_LIST_PAGE", 3)
    for i in range(10):
        await etcd_store.put(f"/p/{i:02}", str(i).encode())
    last = await etcd_store.put("/q", b"outside")
    read_page = etcd_store._range
    pages: list[object] = []

    async def read_page_then_write(request: object) -> object:
        pages.append(await read_page(request))
        if len(pages) == 1:  # a write lands between the first and the second page
            await etcd_store.put("/p/05-late", b"late")
        return pages[-1]

    monkeypatch.setattr(etcd_store, "_range", read_page_then_write)
    listing = await etcd_store.list("/p/")
    assert len(pages) == 4
    assert [kv.key for kv in listing.items] == [f"/p/{i:02}" for i in range(10)]
    assert listing.revision == last


async def test_lease_ttls_are_whole_seconds(etcd_store: EtcdStore, etcd_endpoint: str) -> None:
    short = await etcd_store.grant_lease(0.2)
    longer = await etcd_store.grant_lease(2.5)
    await etcd_store.put("/l", b"v", lease=short)
    kv = await etcd_store.get("/l")
    assert kv is not None and kv.lease == short
    host, _, port = etcd_endpoint.rpartition(":")
    async with Client(host, int(port)) as raw:
        granted = [(await raw.get_lease_info(lease)).grantedTTL for lease in (short, longer)]
    assert granted == [1, 3]


async def test_bad_input_is_refused_with_a_message(etcd_store: EtcdStore) -> None:
    with pytest.raises(InvalidInput, match="only plain http://"):
        EtcdStore("https://127.0.0.1:2379")
    with pytest.raises(InvalidInput, match="not host:port"):
        EtcdStore("127.0.0.1:port")
    with pytest.raises(InvalidInput, match="no etcd endpoint"):
        EtcdStore([])
    with pytest.raises(InvalidInput, match="timeout"):
        EtcdStore(timeout=0)
    revision = await etcd_store.revision()
    with pytest.raises(InvalidInput, match=f"cannot compact to revision {revision + 5}"):
        await etcd_store.compact(revision + 5)
    with pytest.raises(InvalidInput, match="key"):
        await etcd_store.put("", b"v")
    with pytest.raises(NotFound, match="lease 0"):
        await etcd_store.put("/k", b"v", lease=0)


# -- leadership -----------------------------------------------------------------


async def test_a_deposed_leader_cannot_write_after_its_successor_is_elected(
    etcd_endpoint: str,
) -> None:
    # Two servers, each with its own connection, sharing one prefix.
    prefix = "/test/fencing-" + str(free_port())
    async with (
        EtcdStore(etcd_endpoint, prefix=prefix) as server_a,
        EtcdStore(etcd_endpoint, prefix=prefix) as server_b,
    ):
        lease_a = await server_a.grant_lease(1)  # server a stops renewing: it hangs
        lease_b = await server_b.grant_lease(60)
        term_a = await server_a.campaign("control", "a", lease_a)
        fence_a = Compare(term_a.key, CompareTarget.CREATE_REVISION, term_a.revision)
        assert (await server_a.txn([fence_a], [PutOp("/placements/web", b"a")])).succeeded

        with anyio.fail_after(WAIT):
            term_b = await server_b.campaign("control", "b", lease_b)
        assert await server_a.leader("control") == "b"
        assert term_b.revision > term_a.revision

        # Server a wakes up and acts on what it believed: every write is refused.
        late = await server_a.txn([fence_a], [PutOp("/placements/web", b"stale")])
        assert not late.succeeded
        with pytest.raises(NotFound):
            await server_a.keepalive(lease_a)
        fence_b = Compare(term_b.key, CompareTarget.CREATE_REVISION, term_b.revision)
        assert (await server_b.txn([fence_b], [PutOp("/placements/web", b"b")])).succeeded
        placement = await server_b.get("/placements/web")
        assert placement is not None and placement.value == b"b"
        await server_b.revoke(lease_b)


async def test_a_timeout_around_a_request_cancels_only_that_request(
    etcd_store: EtcdStore,
) -> None:
    # gRPC turns a cancellation into a CancelledError of its own; were it to
    # reach anyio, the scopes below would let it through and fail this test.
    lease = await etcd_store.grant_lease(60)
    requests: dict[str, Callable[[], Awaitable[object]]] = {
        "put": lambda: etcd_store.put("/c", b"1"),
        "txn": lambda: etcd_store.txn([], [PutOp("/c", b"2")]),
        "keepalive": lambda: etcd_store.keepalive(lease),
        "list": lambda: etcd_store.list("/"),
    }
    for name, request in requests.items():
        for delay in (0.0, 0.0002, 0.0005, 0.001, 0.003):
            with anyio.move_on_after(delay) as scope:
                while True:
                    await request()
            assert scope.cancelled_caught, name
    other = await etcd_store.grant_lease(60)
    await etcd_store.campaign("c", "a", lease)
    with anyio.move_on_after(0.05) as scope:
        await etcd_store.campaign("c", "b", other)  # waits on a watch
    assert scope.cancelled_caught
    assert await etcd_store.leader("c") == "a"


async def test_the_store_satisfies_the_protocol(etcd_store: EtcdStore) -> None:
    assert isinstance(etcd_store, StateStore)
