"""Fixtures for the real-container tests: a runc runtime per test, cleaned up whatever happens.

Skipped, with the reason, without root, runc or busybox-static.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from shoal.runtime import OciCliRuntime
from tests.runtime.oci.harness import RuntimeFactory, oci_runtime


@pytest.fixture
def make_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeFactory:
    """Return a factory of runtimes with options; each cleans up after itself."""
    count = 0

    def factory(**options: Any) -> AbstractAsyncContextManager[OciCliRuntime]:
        nonlocal count
        count += 1
        return oci_runtime(request, tmp_path / f"rt{count}", **options)

    return factory


@pytest.fixture
async def runtime(make_runtime: RuntimeFactory, anyio_backend: str) -> AsyncIterator[OciCliRuntime]:
    """A runc runtime with default options."""
    async with make_runtime() as runtime:
        yield runtime
