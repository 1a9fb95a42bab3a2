"""Fixtures shared across the test tree: the session's private containerd."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.runtime.cri.support import PrivateContainerd


@pytest.fixture(scope="session")
def private_containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateContainerd]:
    """One containerd for the session's CRI tests, removed at the end whatever happened.

    Skipped, with the reason, where it cannot run (no root, no containerd).
    """
    # Loaded on use: gRPC and the CRI messages are for the tests that ask for it.
    from tests.runtime.cri.support import private_containerd as start

    instance = start(tmp_path_factory)
    try:
        yield instance
    finally:
        instance.close()
