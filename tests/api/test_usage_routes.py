"""Usage history over real HTTP: the stats routes with ``range``, through the signed client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, ShoalClient, SignedAuth
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    LocalNode,
    LocalNodeState,
    NodeLoop,
    ShoalService,
    SystemClock,
    UsageSampler,
)
from shoal.interfaces import (
    USAGE_RANGES,
    Capacity,
    ContainerStats,
    InstanceState,
    InvalidInput,
    Node,
    Role,
    UsageSeries,
)
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore, SqliteUsageHistory
from tests.api.test_server import VIEWER, keypair

pytestmark = pytest.mark.anyio

OPERATOR = keypair("operator@usage", 12)

LIMITED = {
    "name": "hello",
    "replicas": 1,
    "template": {
        "containers": [
            {
                "name": "web",
                "image": "busybox",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            }
        ]
    },
}


@dataclass
class Node1:
    url: str
    runtime: MockRuntime
    sampler: UsageSampler


@pytest.fixture
async def node1() -> AsyncIterator[Node1]:
    keys = AuthorizedKeys(
        {
            k.key_id: AuthorizedKey(role, k.key_id, k.verify_key)
            for k, role in ((OPERATOR, Role.OPERATOR), (VIEWER, Role.VIEWER))
        }
    )
    clock = SystemClock()
    capacity = Capacity.model_validate({"cpu": "4", "memory": "8Gi"})
    node = Node(name="n1", capacity=capacity, allocatable=capacity)
    runtime = MockRuntime(clock)
    async with (
        MemoryStore(clock=clock) as store,
        SqliteUsageHistory() as history,
        anyio.create_task_group() as tg,
    ):
        service = ShoalService(store, clock, local=LocalNode("n1", runtime, None, history))
        loop = NodeLoop(node, LocalNodeState(store, node.name), runtime, clock)
        await tg.start(ControlLoop(store, DefaultScheduler(), clock).run)
        await tg.start(loop.run)
        sampler = UsageSampler(
            "n1", runtime, history, clock, lambda: [s.value for s in loop.instances.values()]
        )
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        yield Node1(f"http://127.0.0.1:{port}", runtime, sampler)
        tg.cancel_scope.cancel()


async def test_stats_with_a_range_return_the_history_against_limits(node1: Node1) -> None:
    async with ShoalClient(node1.url, OPERATOR) as client:
        await client.apply_documents([LIMITED])
        with anyio.fail_after(10):  # polled: the node loop writes the state, no event to wait on
            while True:
                if [i for i in await client.list_instances() if i.state == InstanceState.RUNNING]:
                    break
                await anyio.sleep(0.05)
        (instance,) = await client.list_instances()
        node1.runtime.set_stats(
            "web", ContainerStats(name="web", cpu_millicores=250, memory_bytes=7)
        )
        await node1.sampler.sample_once()

    async with ShoalClient(node1.url, VIEWER) as viewer:
        series = await viewer.usage("instance", instance.name, range="15m")
        assert (series.cpu_limit_millicores, series.memory_limit_bytes) == (1000, 1024**3)
        assert [(p.cpu_millicores, p.memory_bytes) for p in series.points] == [(250, 7)]
        node = await viewer.usage("node", "n1", range="24h")
        assert (node.step_seconds, node.cpu_limit_millicores) == (60, 4000)
        assert [p.cpu_millicores for p in node.points] == [250]
        # without a range the route is what it was: the containers' use now
        (now,) = await viewer.stats(instance.name)
        assert now.cpu_millicores == 250
        with pytest.raises(InvalidInput) as bad:
            await viewer.usage("instance", instance.name, range="1d")
        assert all(r in str(bad.value) for r in USAGE_RANGES)

    async with httpx.AsyncClient(base_url=node1.url, auth=SignedAuth(VIEWER)) as http:
        response = await http.get(f"/v1/instances/default/{instance.name}/stats?range=1h")
        assert response.status_code == 200
        assert UsageSeries.model_validate(response.json()).range == "1h"
        response = await http.get("/v1/nodes/n1/stats", params={"range": "2h"})
        assert response.status_code == 400, response.text
        assert "15m, 1h, 6h, 24h" in response.json()["error"]["message"]
        response = await http.get("/v1/nodes/nowhere/stats")
        assert response.status_code == 404
