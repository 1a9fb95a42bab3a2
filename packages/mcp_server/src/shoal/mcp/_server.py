"""Assemble Shoal's MCP server: tools, resources, prompts, subscriptions and the viewer filter.

``build_server(services, settings)`` is transport-neutral: the same server
runs over stdio (``shoal mcp``, against a remote cluster through the signed
REST client), over streamable HTTP inside the agent (:mod:`shoal.mcp._http`)
and in-process (tests, with the SDK's in-memory client). ``services`` is the
only way its tools reach Shoal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.server._otel import OpenTelemetryMiddleware as SdkTracing
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import SubscribeRequestParams, UnsubscribeRequestParams

from shoal.interfaces import NO_METRICS, Metrics, Role

from ._audit import Gate
from ._caller import Caller, ServiceFactory, caller_from_request
from ._manifests import register_manifests_resource
from ._notify import ChangeNotifier
from ._ontology import Ontology
from ._prompts import register_prompts
from ._resources import register_resources
from ._tools_change import CHANGE_TOOLS, register_change_tools
from ._tools_config import register_config_tools
from ._tools_read import register_read_tools
from ._tools_trace import register_trace_tools
from ._tools_usage import register_usage_tools

__all__ = ["INSTRUCTIONS", "McpSettings", "build_server"]

VERSION = "0.1.0"

INSTRUCTIONS = """\
Shoal runs containers on a cluster of nodes. Workloads declare N replicas of a pod; the control \
loop places their instances on nodes and keeps them running.

Start with cluster_status. To find out why something fails: explain_instance, get_logs, \
list_events (or the diagnose-workload prompt); query_usage shows an instance's or a node's CPU, \
memory and restarts against its limits over up to 24h. Changes: plan first (plan_workload, \
plan_drain, plan_delete_config), show the plan to the user, then make the change with the \
plan's plan_id. \
Deleting a workload, a ConfigMap or a Secret, draining a node and scaling to zero are refused \
without a plan_id for exactly that change (or the user's confirmation when asked). \
apply_workload takes Kubernetes manifests too (Deployment, DaemonSet, Job, Pod, ConfigMap, \
Secret, Namespace) and reports what it ignores in warnings. Secret values read '<redacted>' \
(a Secret object's values are never shown: list_secrets gives keys and sizes); applying them \
back unchanged keeps the stored values. The ontology resources (shoal://ontology/workload, ...) \
describe every field and state."""


@dataclass(frozen=True)
class McpSettings:
    """How an MCP server behaves."""

    read_only: bool = False
    """Register only the read and planning tools."""
    default_caller: Caller = field(default_factory=lambda: Caller("local", Role.ADMIN))
    """The caller when the transport carries no token (stdio, in-process)."""
    ontology_dir: Path | None = None
    """Where the ontology YAML files are (found automatically when None)."""
    name: str = "shoal"
    """The server name clients see."""
    metrics: Metrics = NO_METRICS
    """Where tool calls are counted and timed (the agent's node metrics)."""


def _viewer_filter(gate: Gate) -> ServerMiddleware[Any]:
    """Middleware that hides the change tools from callers who may not use them."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or not isinstance(result, dict):
            return result
        caller = caller_from_request(ctx.request, gate.default_caller)
        if caller.allows(Role.OPERATOR):
            return result
        tools = [t for t in result.get("tools", []) if t.get("name") not in CHANGE_TOOLS]
        return {**result, "tools": tools}

    return middleware


def build_server(services: ServiceFactory, settings: McpSettings | None = None) -> MCPServer[Any]:
    """Return an MCP server whose tools act on Shoal through ``services``.

    Args:
        services: Returns the service to use for a caller (see ``in_process`` and ``remote``).
        settings: Read-only mode, the default caller, the ontology directory.
    """
    settings = settings or McpSettings()
    default = settings.default_caller
    if settings.read_only and default.allows(Role.OPERATOR):
        default = Caller(default.key_id, Role.VIEWER)
    gate = Gate(services, default, settings.metrics)
    notifier = ChangeNotifier(services(default))

    @asynccontextmanager
    async def lifespan(server: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            try:
                yield {}
            finally:
                tg.cancel_scope.cancel()

    server: MCPServer[Any] = MCPServer(
        settings.name,
        title="Shoal",
        description="Gossip-clustered container orchestrator",
        instructions=INSTRUCTIONS,
        version=VERSION,
        lifespan=lifespan,
        subscriptions=notifier,
        middleware=[gate.middleware(), _viewer_filter(gate)],
        log_level="WARNING",
    )
    # The SDK's own span per message joins any caller's params._meta.traceparent; the gate
    # opens the tool call's span instead, joining only an admin's (see ._audit).
    lowlevel_middleware = server._lowlevel_server.middleware
    lowlevel_middleware[:] = [m for m in lowlevel_middleware if not isinstance(m, SdkTracing)]
    register_read_tools(server, gate)
    register_usage_tools(server, gate)
    register_trace_tools(server, gate)
    register_change_tools(server, gate, read_only=settings.read_only)
    register_config_tools(server, gate, read_only=settings.read_only)
    register_resources(server, gate, Ontology(settings.ontology_dir))
    register_manifests_resource(server, gate)
    register_prompts(server, gate)
    gate.tools = frozenset(tool.name for tool in server._tool_manager.list_tools())
    # Handshake-era clients subscribe with resources/subscribe, which MCPServer
    # has no public hook for; the low-level server serves it.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler(
        "resources/subscribe", SubscribeRequestParams, notifier.on_subscribe
    )
    lowlevel.add_request_handler(
        "resources/unsubscribe", UnsubscribeRequestParams, notifier.on_unsubscribe
    )
    return server
