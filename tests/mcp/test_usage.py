"""query_usage through the SDK's client: a bounded summary of an instance's or a node's history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp import Client

from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    LocalNode,
    LocalNodeState,
    ManualClock,
    NodeLoop,
    ShoalService,
    UsageSampler,
)
from shoal.interfaces import (
    USAGE_FINE_STEP,
    USAGE_RANGES,
    USAGE_SUMMARY_POINTS,
    Capacity,
    ContainerStats,
    InstanceState,
    Node,
    WorkloadSpec,
)
from shoal.mcp import McpSettings, build_server, in_process
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore, SqliteUsageHistory
from tests.mcp.support import VIEWER, call, refused

pytestmark = pytest.mark.anyio

LIMITED: dict[str, Any] = {
    "name": "web",
    "replicas": 1,
    "template": {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {"limits": {"cpu": "1", "memory": "100Mi"}},
            }
        ]
    },
}


@pytest.fixture
async def sampled() -> AsyncIterator[tuple[ShoalService, str]]:
    """One instance whose memory grows for an hour, sampled every 10 s on a manual clock."""
    clock = ManualClock()
    capacity = Capacity.model_validate({"cpu": "4", "memory": "8Gi"})
    node = Node(name="n1", capacity=capacity, allocatable=capacity, runtime="mock")
    runtime = MockRuntime(clock)
    async with MemoryStore(clock=clock) as store, SqliteUsageHistory() as history:
        service = ShoalService(store, clock, local=LocalNode("n1", runtime, None, history))
        loop = NodeLoop(node, LocalNodeState(store, node.name), runtime, clock)
        await loop.register()
        control = ControlLoop(store, DefaultScheduler(), clock)
        await service.apply([WorkloadSpec.model_validate(LIMITED)])
        with anyio.fail_after(10):
            while not loop.instances.values() or any(
                s.value.state != InstanceState.RUNNING for s in loop.instances.values()
            ):
                await control.reconcile_once()
                await loop.reconcile_once()
        (instance,) = [s.value for s in loop.instances.values()]
        sampler = UsageSampler("n1", runtime, history, clock, lambda: [instance])
        for round_ in range(360):  # an hour: memory grows 1 MiB a round, CPU steady
            memory = (round_ + 1) * 1024**2 // 4
            runtime.set_stats(
                "main", ContainerStats(name="main", cpu_millicores=200, memory_bytes=memory)
            )
            clock.advance(USAGE_FINE_STEP if round_ else 0)
            await sampler.sample_once()
        yield service, instance.name


def client(service: ShoalService) -> Client:
    return Client(build_server(in_process(service), McpSettings(default_caller=VIEWER)))


async def test_the_tool_description_names_the_summarys_size() -> None:
    """The description is written out (an agent reads it): it keeps to the constant."""
    async with MemoryStore() as store, client(ShoalService(store, ManualClock())) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    description = tools["query_usage"].description
    assert description is not None
    assert f"at most {USAGE_SUMMARY_POINTS} averaged points" in " ".join(description.split())


async def test_query_usage_returns_a_bounded_summary_against_limits(
    sampled: tuple[ShoalService, str],
) -> None:
    service, name = sampled
    async with client(service) as mcp:
        summary = await call(mcp, "query_usage", object=name, range="1h")
        assert summary["samples"] == 360
        assert len(summary["points"]) <= USAGE_SUMMARY_POINTS
        assert summary["cpu_millicores"] == {"min": 200, "avg": 200, "max": 200, "last": 200}
        assert summary["cpu_limit_millicores"] == 1000
        assert summary["cpu_peak_of_limit"] == 0.2
        assert summary["memory_bytes"]["max"] == 90 * 1024**2
        assert summary["memory_peak_of_limit"] == 0.9  # 90 MiB of 100 MiB: near its limit
        assert summary["points"][0]["memory_bytes"] < summary["points"][-1]["memory_bytes"]

        same = await call(mcp, "query_usage", object=f"default/{name}", range="15m")
        assert same["samples"] == 90

        node = await call(mcp, "query_usage", object="node/n1", range="24h")
        assert (node["kind"], node["samples"], node["cpu_limit_millicores"]) == ("node", 60, 4000)
        assert len(node["points"]) <= USAGE_SUMMARY_POINTS

        bad_range = await refused(mcp, "query_usage", object=name, range="2h")
        assert all(f"'{r}'" in bad_range for r in USAGE_RANGES)  # the schema's enum, named
        assert "NAMESPACE/NAME" in await refused(mcp, "query_usage", object="a/b/c")
        assert "not_found" in await refused(mcp, "query_usage", object="ghost")
