"""What only a durable store can promise: restarts, crashes, and a bad data dir."""

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from shoal.interfaces import (
    Compacted,
    DeleteOp,
    EventKind,
    PutOp,
    Unavailable,
    WatchEvent,
)
from shoal.state import SqliteStore

pytestmark = pytest.mark.anyio

WAIT = 10


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    got: list[WatchEvent] = []
    with anyio.fail_after(WAIT):
        while len(got) < count:
            got.append(await anext(events))
    return got


async def test_reopen_keeps_keys_revisions_and_history(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.put("/a", b"1")
        await store.put("/a", b"2")
        await store.put("/b", b"1")
        await store.txn([], [PutOp("/c", b"1"), DeleteOp("/b")])
        await store.delete("/a")
        await store.put("/a", b"3")
        before = await store.list("")
        history = await take(store.watch("", 1), 7)
    assert [e.revision for e in history] == [1, 2, 3, 4, 4, 5, 6]

    async with SqliteStore(path) as store:
        assert await store.revision() == 6
        assert await store.list("") == before
        # The whole history, and a watch resumed after the 4th event.
        assert await take(store.watch("", 1), 7) == history
        resumed = store.watch("", history[4].revision + 1)
        assert await take(resumed, 2) == history[5:]
        assert await store.put("/d", b"1") == 7
        (event,) = await take(resumed, 1)
        assert (event.kv.key, event.revision) == ("/d", 7)


async def test_a_watcher_far_behind_reads_history_from_disk(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.db", recent_history=8) as store:
        events = store.watch("/k/")
        for i in range(300):
            await store.put(f"/k/{i}", str(i).encode())
        seen = await take(events, 300)
    assert [e.kv.value for e in seen] == [str(i).encode() for i in range(300)]


async def test_leases_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        long = await store.grant_lease(60)
        short = await store.grant_lease(0.5)
        revoked = await store.grant_lease(60)
        await store.revoke(revoked)
        await store.put("/l/long", b"l", lease=long)
        await store.put("/l/short", b"s", lease=short)
        closed_at = await store.revision()

    async with SqliteStore(path) as store:
        await store.keepalive(long)
        events = store.watch("/l/", closed_at + 1)
        (expired,) = await take(events, 1)
        assert (expired.kind, expired.kv.key) == (EventKind.DELETE, "/l/short")
        kept = await store.get("/l/long")
        assert kept is not None and kept.lease == long
        new = await store.grant_lease(60)
        assert new not in {long, short, revoked}  # lease ids are never reused


async def test_compaction_is_bounded_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path, history_size=10) as store:
        for i in range(40):
            await store.put("/k", str(i).encode())
        with pytest.raises(Compacted) as caught:
            await anext(store.watch("/k", 1))
        floor = caught.value.details["compacted"]
        assert 40 - 10 - 10 // 8 - 1 <= floor <= 30
    async with SqliteStore(path, history_size=10) as store:
        with pytest.raises(Compacted):
            await anext(store.watch("/k", floor))
        (event,) = await take(store.watch("/k", 31), 1)
        assert (event.revision, event.kv.value) == (31, b"30")


_WRITER = """
import sys

import anyio

from shoal.state import SqliteStore


async def main(path: str) -> None:
    async with SqliteStore(path) as store:
        i = 0
        while True:
            key = f"/crash/{i:06d}"
            await store.put(key, f"value-{i}".encode())
            print(key, flush=True)
            i += 1


anyio.run(main, sys.argv[1])
"""


@pytest.mark.slow
async def test_sigkill_mid_write_loses_no_acknowledged_key(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    acknowledged: list[str] = []
    process = await anyio.open_process(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with process:
        assert process.stdout is not None and process.stderr is not None
        lines = BufferedByteReceiveStream(process.stdout)
        try:
            with anyio.fail_after(60):
                while len(acknowledged) < 300:
                    acknowledged.append((await lines.receive_until(b"\n", 100)).decode())
        except (anyio.EndOfStream, anyio.IncompleteRead):
            errors = await process.stderr.receive()
            pytest.fail(f"the writer died early: {errors.decode()}")
        process.send_signal(signal.SIGKILL)
        # Keys acknowledged between our last read and the kill count too.
        with anyio.fail_after(WAIT):
            try:
                while True:
                    acknowledged.append((await lines.receive_until(b"\n", 100)).decode())
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass
            assert await process.wait() == -signal.SIGKILL

    async with SqliteStore(path) as store:
        found = {kv.key: kv.value for kv in (await store.list("/crash/")).items}
        revision = await store.revision()
    for key in acknowledged:
        assert found.get(key) == f"value-{int(key.rsplit('/', 1)[1])}".encode()
    # Writes are sequential: at most the one in flight at the kill made it unacknowledged.
    assert len(found) - len(acknowledged) in (0, 1)
    assert revision == len(found)


async def test_unwritable_data_dir_is_unavailable_with_a_clear_message(tmp_path: Path) -> None:
    # Root can write anywhere, but nobody can create a directory inside a file.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    path = blocker / "data" / "state.db"
    with pytest.raises(Unavailable) as caught:
        async with SqliteStore(path):
            pass
    message = str(caught.value)
    assert str(path) in message
    assert "writable" in message
    assert caught.value.details["path"] == str(path)


async def test_a_directory_in_place_of_the_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.mkdir()
    with pytest.raises(Unavailable, match=str(path)):
        async with SqliteStore(path):
            pass


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Unavailable, match="not a usable SQLite database"):
        async with SqliteStore(path):
            pass
    assert path.read_bytes() == b"this is not sqlite" * 100


async def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.put("/a", b"1")
        with pytest.raises(Unavailable, match="another process"):
            async with SqliteStore(path):
                pass
        assert await store.put("/a", b"2") == 2
    async with SqliteStore(path) as store:
        assert await store.revision() == 2


async def test_a_store_that_was_not_entered_says_how_to_open_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(Unavailable, match="async with"):
        await store.get("/a")
