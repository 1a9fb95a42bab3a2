"""Shared fixtures: run every async test on asyncio through anyio's plugin.

``serf_root`` is where tests put the data dirs of the serf agents they run;
its finalizer SIGKILLs every serf process still running from under it, even
when the test failed half-way. ``store`` is a server's empty store, once a
MemoryStore and once a SqliteStore.
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shoal.interfaces import StateStore
from shoal.state import MemoryStore, SqliteStore
from tests.cluster.serf_support import SERF, kill_agents_under


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def serf_root(tmp_path: Path) -> Iterator[Path]:
    """Return a directory for serf data dirs; kill leftover agents afterwards."""
    if SERF is None:
        pytest.skip("serf is not installed: apt-get install serf (scripts/system-deps.sh)")
    root = tmp_path / "serf"
    yield root
    leftovers = kill_agents_under(root)
    assert not leftovers, f"serf agents outlived their SerfCluster: {leftovers}"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """A server's store, empty: a MemoryStore, then a SqliteStore."""
    if request.param == "memory":
        async with MemoryStore() as memory:
            yield memory
    else:
        async with SqliteStore(tmp_path / "state.db") as sqlite:
            yield sqlite
