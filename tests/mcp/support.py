"""Helpers for the MCP tests: a live in-process cluster, clients, and tool-call shortcuts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

from shoal.cluster import StaticCluster, node_tags
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    LocalNode,
    LocalNodeState,
    NodeLoop,
    ShoalService,
    SystemClock,
)
from shoal.interfaces import Capacity, Node, Role
from shoal.mcp import Caller, McpSettings, build_server, in_process
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore

T = TypeVar("T")

HELLO: dict[str, Any] = {
    "name": "hello",
    "replicas": 2,
    "template": {
        "containers": [
            {
                "name": "web",
                "image": "busybox:1.36",
                "env": {
                    "GREETING": "hi",
                    "DB_PASSWORD": "hunter2-secret",
                    "DATABASE_URL": "postgres://app:s3cr3t-pw@db:5432/app",
                },
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
            }
        ]
    },
}
"""A workload with secrets in its env."""

OPERATOR = Caller("operator@test", Role.OPERATOR)
VIEWER = Caller("viewer@test", Role.VIEWER)


@dataclass
class Live:
    """A running single-node cluster: control and node loops over a MockRuntime."""

    service: ShoalService
    runtime: MockRuntime
    node: str = "n1"

    def server(self, caller: Caller = OPERATOR, *, read_only: bool = False) -> MCPServer[Any]:
        settings = McpSettings(read_only=read_only, default_caller=caller)
        return build_server(in_process(self.service), settings)


@asynccontextmanager
async def live_cluster() -> AsyncIterator[Live]:
    """Run a cluster (one node, its own StaticCluster member) until the context exits."""
    clock = SystemClock()
    capacity = Capacity.model_validate({"cpu": "4", "memory": "8Gi"})
    node = Node(name="n1", capacity=capacity, allocatable=capacity, runtime="mock")
    runtime = MockRuntime(clock)
    gossip = StaticCluster("n1", "127.0.0.1:7946", tags=node_tags(node))
    async with MemoryStore(clock=clock) as store, gossip, anyio.create_task_group() as tg:
        service = ShoalService(store, clock, local=LocalNode("n1", runtime), members=gossip.members)
        await tg.start(ControlLoop(store, DefaultScheduler(), clock, resync=0.5).run)
        await tg.start(
            NodeLoop(node, LocalNodeState(store, node.name), runtime, clock, resync=0.5).run
        )
        yield Live(service, runtime)
        tg.cancel_scope.cancel()


def text_of(result: CallToolResult) -> str:
    """Return the text of a tool result's first content block."""
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured content (checked against its text)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    content: dict[str, Any] = result.structured_content
    if set(content) != {"result"}:  # models: the text is the same JSON
        assert json.loads(text_of(result)) == content
    return content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return its error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    return text_of(result)


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 15.0) -> T:
    """Poll ``check`` (for at most ``within`` seconds) until it returns something but None."""
    with anyio.fail_after(within):
        while True:
            value = await check()
            if value is not None:
                return value
            await anyio.sleep(0.02)
