"""A node's usage history over real gRPC: its PodGateway serves it, RemotePods reads it.

The service layer on a server reaches the history of an instance on a worker
this way (``ShoalService(remote_usage=...)``), as it reaches its logs and stats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import pytest
from nacl.signing import SigningKey

from shoal.cluster import PodGateway, RemotePods
from shoal.cluster.grpc._grpc_base import NodeChannel
from shoal.cluster.grpc._nodeauth import CallVerifier, NodeIdentity
from shoal.core import ManualClock, ShoalService
from shoal.interfaces import (
    USAGE_FINE_STEP,
    Capacity,
    Forbidden,
    InvalidInput,
    Node,
    Unavailable,
    UsageHistory,
    UsageQuery,
    UsageSample,
    node_key,
)
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore, SqliteUsageHistory
from tests.cluster.grpc_support import serving
from tests.cluster.test_grpc_pods import SERVER, START, TOKEN, WAIT, Authorizer

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def worker(usage: UsageHistory | None) -> AsyncIterator[str]:
    """Serve a Pods service with ``usage``; yield its address."""
    gateway = PodGateway(MockRuntime(), CallVerifier(TOKEN), Authorizer({SERVER}), usage=usage)
    async with serving(gateway.handler()) as address:
        yield address


def remote(address: str, name: str = SERVER) -> RemotePods:
    return RemotePods(NodeChannel(NodeIdentity(name, SigningKey.generate()), TOKEN, address))


async def test_remote_history_is_the_nodes_own_and_reaches_the_service() -> None:
    async with SqliteUsageHistory() as history:
        for round_ in range(90):  # 15 minutes of one node
            at = START + timedelta(seconds=USAGE_FINE_STEP * round_)
            await history.record(
                [UsageSample(kind="node", key="w1", at=at, cpu_millicores=round_, restarts=1)]
            )
        now = START + timedelta(seconds=USAGE_FINE_STEP * 89)
        async with worker(history) as address, remote(address) as pods:
            reader: UsageQuery = pods  # what the service layer takes
            with anyio.fail_after(WAIT):
                for span in ("15m", "24h"):
                    assert await reader.query("node", "w1", span, now) == await history.query(
                        "node", "w1", span, now
                    )

                clock = ManualClock(now)
                capacity = Capacity.model_validate({"cpu": "2", "memory": "1Gi"})
                node = Node(
                    name="w1",
                    capacity=capacity,
                    allocatable=capacity,
                    addresses={"grpc": address},
                )
                async with MemoryStore(clock=clock) as store:
                    await store.put(node_key("w1"), node.model_dump_json().encode())
                    service = ShoalService(store, clock, remote_usage=lambda _: pods)
                    series = await service.usage("node", "w1", range="1h")
                assert (series.node, series.step_seconds, series.cpu_limit_millicores) == (
                    "w1",
                    10,
                    2000,
                )
                assert [p.cpu_millicores for p in series.points] == list(range(90))

                with pytest.raises(InvalidInput, match="15m, 1h, 6h, 24h"):
                    await pods.query("node", "w1", "2h", now)  # type: ignore[arg-type]


async def test_a_node_without_history_or_a_caller_not_admitted_is_refused() -> None:
    now = START
    async with worker(None) as address:
        async with remote(address) as pods:
            with anyio.fail_after(WAIT), pytest.raises(Unavailable, match="no usage history"):
                await pods.query("node", "w1", "1h", now)
        async with remote(address, "worker-2") as pods:
            with anyio.fail_after(WAIT), pytest.raises(Forbidden):
                await pods.query("node", "w1", "1h", now)
