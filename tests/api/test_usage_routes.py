"""Usage history over real HTTP: the stats routes with ``range``, through the signed client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shoal.client import AuthorizedKey, AuthorizedKeys, ShoalClient, SignedAuth
from shoal.interfaces import (
    USAGE_RANGES,
    Capacity,
    ContainerStats,
    InvalidInput,
    Role,
    UsageSeries,
)
from tests.api.test_server import VIEWER, keypair
from tests.usage_node import UsageNode, running, usage_node

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


@pytest.fixture
async def node1() -> AsyncIterator[UsageNode]:
    keys = AuthorizedKeys(
        {
            k.key_id: AuthorizedKey(role, k.key_id, k.verify_key)
            for k, role in ((OPERATOR, Role.OPERATOR), (VIEWER, Role.VIEWER))
        }
    )
    async with usage_node(keys, Capacity.model_validate({"cpu": "4", "memory": "8Gi"})) as node:
        yield node


async def test_stats_with_a_range_return_the_history_against_limits(node1: UsageNode) -> None:
    async with ShoalClient(node1.url, OPERATOR) as client:
        await client.apply_documents([LIMITED])
        (instance,) = await running(client)
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
