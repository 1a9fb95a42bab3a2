"""Fixtures for the StateStore tests: one ``store`` fixture per implementation.

The conformance suite talks to stores through the protocol only. The one
thing the protocol cannot do — discard history on demand — goes through the
``compact`` fixture, the single place that knows each implementation.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shoal.interfaces import StateStore
from shoal.state import MemoryStore, SqliteStore

Compact = Callable[[StateStore, int], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[StateStore]:
    """Yield an empty, open store of each implementation."""
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    else:
        # A small in-memory tail, so watchers that fall behind read the table.
        async with SqliteStore(tmp_path / "data" / "state.db", recent_history=64) as sqlite:
            yield sqlite


@pytest.fixture
def compact() -> Compact:
    """Return a function that discards a store's history before a revision."""

    async def compact_store(store: StateStore, revision: int) -> None:
        assert isinstance(store, MemoryStore | SqliteStore), f"no compaction for {store!r}"
        await store.compact(revision)

    return compact_store
