"""Resources: the ontology, workloads, nodes and the event log, as documents to read and follow.

=====================================  ==================  =====================================
URI                                     type                content
=====================================  ==================  =====================================
``shoal://ontology/{entity}``           application/yaml    ``ontology/{entity}.yaml``: fields,
                                                            states, transitions of an entity
``shoal://workloads/{namespace}/{name}`` application/json   the workload (secrets redacted), its
                                                            instances and latest events
``shoal://nodes/{name}``                application/json    the node, its load and instances
``shoal://events``                      application/json    the latest 100 events (no MCP audit)
=====================================  ==================  =====================================

The ontology entities are also listed as static resources. Subscribers are
told when a resource changes (:mod:`shoal.mcp._notify`).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.mcpserver.resources import FunctionResource

from shoal.interfaces import NotFound, Service, ShoalError

from ._audit import AUDIT_REASON, Gate
from ._notify import EVENTS_URI
from ._ontology import Ontology
from ._views import InstanceSummary, WorkloadDetail, node_summaries

__all__ = ["register_resources"]

_EVENTS = 100
_OBJECT_EVENTS = 20
JSON = "application/json"


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False)


async def _guarded(read: Any) -> str:
    """Run a resource read, turning Shoal errors into resource errors."""
    try:
        text: str = await read()
    except NotFound as exc:
        raise ResourceNotFoundError(f"{exc.code}: {exc.message}") from exc
    except ShoalError as exc:
        raise ResourceError(f"{exc.code}: {exc.message}") from exc
    return text


def register_resources(server: MCPServer[Any], gate: Gate, ontology: Ontology) -> None:
    """Register the resources and resource templates on ``server``."""

    def service(ctx: Context | None = None) -> Service:
        caller = gate.default_caller if ctx is None else gate.caller(ctx)
        return gate.services(caller)

    @server.resource(
        "shoal://ontology/{entity}",
        name="ontology",
        title="Shoal ontology entity",
        description="Fields, states and allowed transitions of a Shoal entity "
        "(workload, instance, node), as YAML.",
        mime_type="application/yaml",
    )
    async def ontology_entity(entity: str) -> str:
        async def read() -> str:
            return ontology.read(entity)

        return await _guarded(read)

    for entity in ontology.entities:
        server.add_resource(
            FunctionResource.from_function(
                fn=functools.partial(ontology.read, entity),
                uri=f"shoal://ontology/{entity}",
                name=f"ontology-{entity}",
                title=f"Shoal ontology: {entity}",
                description=f"Fields, states and transitions of the {entity} entity.",
                mime_type="application/yaml",
            )
        )

    @server.resource(
        "shoal://workloads/{namespace}/{name}",
        name="workload",
        title="Shoal workload",
        description="A workload (secret env values redacted), its instances and latest events.",
        mime_type=JSON,
    )
    async def workload_document(namespace: str, name: str, ctx: Context) -> str:
        async def read() -> str:
            svc = service(ctx)
            workload = await svc.get_workload(name, namespace)
            instances = await svc.list_instances(namespace, name)
            events = await svc.list_events(
                limit=_OBJECT_EVENTS, kind="Workload", name=name, namespace=namespace
            )
            detail = WorkloadDetail.of(workload, instances).model_dump(mode="json")
            detail["events"] = [e.model_dump(mode="json") for e in events]
            return _dump(detail)

        return await _guarded(read)

    @server.resource(
        "shoal://nodes/{name}",
        name="node",
        title="Shoal node",
        description="A node: addresses, labels, capacity, state, load and instances.",
        mime_type=JSON,
    )
    async def node_document(name: str, ctx: Context) -> str:
        async def read() -> str:
            svc = service(ctx)
            node = await svc.get_node(name)
            instances = await svc.list_instances(node=name)
            (usage,) = node_summaries([node], instances)
            return _dump(
                {
                    "node": node.model_dump(mode="json"),
                    "usage": usage.model_dump(mode="json"),
                    "instances": [InstanceSummary.of(i).model_dump(mode="json") for i in instances],
                }
            )

        return await _guarded(read)

    @server.resource(
        EVENTS_URI,
        name="events",
        title="Shoal events",
        description=f"The latest {_EVENTS} events, oldest first (MCP audit events left out).",
        mime_type=JSON,
    )
    async def events_document() -> str:
        async def read() -> str:
            events = await service().list_events(limit=_EVENTS * 5)
            shown = [e for e in events if e.reason != AUDIT_REASON][-_EVENTS:]
            return _dump({"events": [e.model_dump(mode="json") for e in shown]})

        return await _guarded(read)
