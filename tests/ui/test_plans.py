"""What the dashboard's plans say about a workload's instances (no browser: the text only)."""

from __future__ import annotations

import pytest

from shoal.core import ControlLoop, DefaultScheduler, ManualClock, ShoalService
from shoal.interfaces import Actor
from shoal.state import MemoryStore
from shoal.ui._actions import _what_happens
from tests.core.support import Cluster, spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_promote_plan_says_how_far_the_canaries_are() -> None:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        control = ControlLoop(store, DefaultScheduler(), clock)
        service = ShoalService(store, clock, Actor(id="tester", via="ui"))
        cluster = Cluster(store, clock, control, service)
        await cluster.add_node("n1")
        update = {"canary": 1, "max_surge": 1, "max_unavailable": 0}
        await service.apply([spec(replicas=3, update=update)])
        await cluster.settle()
        await service.apply([spec(replicas=3, image="busybox:2", update=update)])
        await cluster.settle()
        workload = await service.get_workload("web")
        said = await _what_happens(service, "promote", workload)
        assert (
            said == " (revision 2: 1 of 1 canaries ready, 1 wanted; 3 old instance(s) to replace)"
        )
        stopping = await _what_happens(service, "delete", workload)
        assert stopping.startswith(" (4 instance(s) stop: web-")
        assert await _what_happens(service, "pause", workload) == ""
