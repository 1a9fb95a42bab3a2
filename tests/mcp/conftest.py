"""Shared fixtures for the MCP tests."""

from collections.abc import AsyncIterator

import pytest

from tests.mcp.support import Live, live_cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    """A running single-node cluster on a MockRuntime."""
    async with live_cluster() as cluster:
        yield cluster
