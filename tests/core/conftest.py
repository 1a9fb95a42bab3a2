from collections.abc import AsyncIterator

import pytest

from shoal.core import ControlLoop, DefaultScheduler, ManualClock, ShoalService
from shoal.interfaces import Actor
from shoal.state import MemoryStore
from tests.core.support import Cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        control = ControlLoop(store, DefaultScheduler(), clock)
        service = ShoalService(store, clock, Actor(id="tester", via="rest"))
        yield Cluster(store, clock, control, service)
