"""One node whose usage history the tests read: a live node on the mock runtime, behind the API.

The control loop and the node loop run, the history is an in-memory SQLite
table, and the sampler is handed back so a test takes its samples when it
wants them (after setting the mock runtime's stats), not every 10 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKeys, ShoalClient
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
from shoal.interfaces import Capacity, Instance, InstanceState, Node
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore, SqliteUsageHistory


@dataclass
class UsageNode:
    """The node's API address, its runtime (to set stats) and its sampler."""

    url: str
    runtime: MockRuntime
    sampler: UsageSampler


@asynccontextmanager
async def usage_node(keys: AuthorizedKeys, capacity: Capacity) -> AsyncIterator[UsageNode]:
    """Run node ``n1`` of ``capacity``, its API signed for ``keys``, until the block ends."""
    clock = SystemClock()
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
        yield UsageNode(f"http://127.0.0.1:{port}", runtime, sampler)
        tg.cancel_scope.cancel()


async def running(client: ShoalClient) -> list[Instance]:
    """Wait until the node runs an instance; return the instances."""
    with anyio.fail_after(10):  # polled: the node loop writes the state, no event to wait on
        while True:
            instances = await client.list_instances()
            if any(i.state == InstanceState.RUNNING for i in instances):
                return instances
            await anyio.sleep(0.05)
