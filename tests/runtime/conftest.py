"""Shared fixtures: run every async test on asyncio through anyio's plugin."""

from collections.abc import Iterator

import pytest

from tests.runtime.cri.support import PrivateContainerd
from tests.runtime.cri.support import private_containerd as start_private_containerd


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def private_containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateContainerd]:
    """One containerd for the session's CRI tests, removed at the end whatever happened."""
    instance = start_private_containerd(tmp_path_factory)
    try:
        yield instance
    finally:
        instance.close()
