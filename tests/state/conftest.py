"""Fixtures for the StateStore tests: one ``store`` fixture per implementation.

The conformance suite talks to stores through the protocol only. The one
thing the protocol cannot do — discard history on demand — goes through the
``compact`` fixture, the single place that knows each implementation.

One real etcd serves the whole session (started on first use, killed at the
end). Each etcd test gets its own key prefix, so tests never see each
other's keys; revisions are etcd's and shared, which is why the suite
compares revisions with the store's revision at the start of a test. After
each etcd test every lease is revoked, so none expires during the next.
"""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from shoal.interfaces import StateStore
from shoal.state import EtcdStore, Keyring, MemoryStore, SealedStore, SqliteStore
from tests.state.support import revoke_every_lease, running_etcd

Compact = Callable[[StateStore, int], Awaitable[None]]

SEALED_PREFIXES = tuple(f"/{c}" for c in "abcdefhijklmnopqrstuvwxyz0123456789")
"""What the "sealed" store seals: every key the suite writes except those under ``/g``
(``/guard``'s value is compared, which a sealed key refuses)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    """Start one etcd for the session (skip without etcd); return its client endpoint."""
    with running_etcd() as member:
        yield member.endpoint


@asynccontextmanager
async def isolated_etcd_store(endpoint: str) -> AsyncIterator[EtcdStore]:
    """Open an EtcdStore under a fresh prefix; revoke every lease afterwards."""
    try:
        async with EtcdStore(endpoint, prefix=f"/test/{uuid.uuid4().hex}") as store:
            yield store
    finally:
        await revoke_every_lease(endpoint)


@pytest.fixture
async def etcd_store(etcd_endpoint: str, anyio_backend: str) -> AsyncIterator[EtcdStore]:
    """Yield an open EtcdStore on the session's etcd, under a prefix of its own."""
    async with isolated_etcd_store(etcd_endpoint) as store:
        yield store


@pytest.fixture(params=["memory", "sqlite", "etcd", "sealed"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[StateStore]:
    """Yield an open store of each implementation, holding no keys.

    "sealed" is a SealedStore over SQLite that seals the keys of SEALED_PREFIXES.
    """
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    elif request.param == "sealed":
        keyring = Keyring.load(tmp_path / "keyring")
        async with SqliteStore(tmp_path / "data" / "state.db", recent_history=64) as sqlite:
            yield SealedStore(sqlite, keyring, prefixes=SEALED_PREFIXES)
    elif request.param == "sqlite":
        # A small in-memory tail, so watchers that fall behind read the table.
        async with SqliteStore(tmp_path / "data" / "state.db", recent_history=64) as sqlite:
            yield sqlite
    else:
        async with isolated_etcd_store(request.getfixturevalue("etcd_endpoint")) as etcd:
            yield etcd


@pytest.fixture
def compact() -> Compact:
    """Return a function that discards a store's history before a revision."""

    async def compact_store(store: StateStore, revision: int) -> None:
        if isinstance(store, SealedStore):
            store = store.inner
        assert isinstance(store, MemoryStore | SqliteStore | EtcdStore), (
            f"no compaction for {store!r}"
        )
        await store.compact(revision)

    return compact_store
