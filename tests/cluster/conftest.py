"""Shared fixtures: run every async test on asyncio through anyio's plugin.

``serf_root`` is where tests put the data dirs of the serf agents they run;
its finalizer SIGKILLs every serf process still running from under it, even
when the test failed half-way.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

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
