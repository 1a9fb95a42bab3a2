"""MCP tool calls are counted by tool and outcome, an unknown tool name under ``unknown``."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from shoal.agent._metrics import PrometheusMetrics
from shoal.interfaces import Catalogue
from shoal.mcp import Caller, McpSettings, build_server, in_process
from tests.mcp.support import OPERATOR, VIEWER, Live, refused

pytestmark = pytest.mark.anyio


async def test_tool_calls_are_counted_by_tool_and_outcome(live: Live) -> None:
    metrics = PrometheusMetrics()

    def server(caller: Caller) -> MCPServer[Any]:
        settings = McpSettings(default_caller=caller, metrics=metrics)
        return build_server(in_process(live.service), settings)

    async with Client(server(OPERATOR)) as client:
        assert not (await client.call_tool("list_workloads", {})).is_error
        await refused(client, "get_workload", name="nothing-here")
        await refused(client, "no_such_tool")
    async with Client(server(VIEWER)) as client:
        await refused(client, "scale_workload", name="hello", replicas=3)

    def calls(tool: str, outcome: str) -> float:
        return metrics.count(Catalogue.MCP_TOOL_CALLS, tool=tool, outcome=outcome)

    assert calls("list_workloads", "ok") == 1
    assert calls("get_workload", "error") == 1
    assert calls("unknown", "error") == 1
    assert calls("scale_workload", "refused") == 1
    assert metrics.count(Catalogue.MCP_TOOL_DURATION) == 4
    body = metrics.exposition()[0].decode()
    assert "no_such_tool" not in body  # a caller's made-up name never becomes a series
