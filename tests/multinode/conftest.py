"""Fixtures of the multi-node suite: clusters of real agent processes (see support.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multinode.support import LocalCluster, local_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """An empty cluster: add nodes with ``cluster.add`` and ``cluster.start``."""
    if shutil.which("serf") is None:
        pytest.skip("serf is not installed (make test installs it: apt-get install serf)")
    with local_cluster(tmp_path) as made:
        yield made
