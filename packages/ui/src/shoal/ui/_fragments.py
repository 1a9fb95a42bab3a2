"""The read side: signed fragments under ``/ui/f/``, rendered for the caller's role.

Each fragment is the body of one page; the parts that change live carry
``hx-trigger="shoal:changed from:body"`` and re-fetch themselves when the stream says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shoal.interfaces import (
    PLACED_STATES,
    Event,
    GossipState,
    Instance,
    InstanceState,
    Node,
    ShoalError,
    Statusz,
    StatuszSource,
    Via,
    Workload,
)

from ._auth import ActsAs, Authenticate, Call, signed
from ._render import fragment

__all__ = ["PAGE_SIZE", "NodeRow", "fragment_routes", "problems"]

EVENT_LIMIT = 500
"""How many of the latest events the events page filters."""
PAGE_SIZE = 200
"""Instances listed per page (and on a workload's or a node's page)."""
MAX_PROBLEMS = 50
"""Lines the overview's problems list holds at most (the last says how many more)."""
MAX_HITS = 100
"""Search hits shown per kind at most."""


@dataclass
class NodeRow:
    """A node with what is placed on it."""

    node: Node
    instances: list[Instance] = field(default_factory=list)
    cpu: int = 0
    memory: int = 0


def node_rows(nodes: list[Node], instances: list[Instance]) -> list[NodeRow]:
    """Pair every node with its placed instances and the resources they request."""
    rows = {node.name: NodeRow(node) for node in nodes}
    for instance in instances:
        row = rows.get(instance.node or "")
        if row is None or instance.state not in PLACED_STATES:
            continue
        requests = instance.template.requests()
        row.instances.append(instance)
        row.cpu += requests.cpu
        row.memory += requests.memory
    return list(rows.values())


def problems(nodes: list[Node], workloads: list[Workload], instances: list[Instance]) -> list[str]:
    """What an operator should look at first, one sentence each, at most MAX_PROBLEMS."""
    found = _problems(nodes, workloads, instances)
    if len(found) <= MAX_PROBLEMS:
        return found
    more = len(found) - MAX_PROBLEMS + 1
    return [*found[: MAX_PROBLEMS - 1], f"... and {more} more: see the instances and nodes pages"]


def _problems(nodes: list[Node], workloads: list[Workload], instances: list[Instance]) -> list[str]:
    found: list[str] = []
    for node in nodes:
        if node.state != GossipState.ALIVE:
            found.append(f"node {node.name} is {node.state.value}")
        elif node.draining:
            found.append(f"node {node.name} is draining")
        elif node.cordoned:
            found.append(f"node {node.name} is cordoned")
    for workload in workloads:
        status = workload.status
        if not workload.deleting and status.ready_replicas < status.desired_replicas:
            found.append(
                f"workload {workload.key}: {status.ready_replicas}/{status.desired_replicas} ready"
            )
    for instance in instances:
        if instance.state in (InstanceState.FAILED, InstanceState.LOST):
            found.append(f"instance {instance.key} is {instance.state.value}: {instance.message}")
        elif instance.state == InstanceState.PENDING and instance.schedule_failure is not None:
            found.append(f"instance {instance.key} is pending: {instance.message or 'unplaced'}")
    return found


def _matches(event: Event, actor: str, via: str, text: str) -> bool:
    if actor and actor.lower() not in event.actor.id.lower():
        return False
    if via and event.actor.via.value != via:
        return False
    haystack = f"{event.object.kind} {event.object.name} {event.reason} {event.message}".lower()
    return not text or text.lower() in haystack


async def _status(statusz: StatuszSource | None) -> Statusz | None:
    if statusz is None:
        return None
    try:
        return await statusz()
    except ShoalError:  # the store does not answer: the overview says "unknown"
        return None


def fragment_routes(
    service: ActsAs, authenticate: Authenticate, statusz: StatuszSource | None = None
) -> list[Route]:
    """The read fragments, each answering signed GETs of viewers and up.

    ``statusz`` tells the overview who leads, and what this node runs.
    """
    viewer = signed(service, authenticate)

    @viewer
    async def whoami(call: Call) -> Response:
        return JSONResponse({"key_id": call.caller.key_id, "role": call.caller.role.value})

    @viewer
    async def overview(call: Call) -> Response:
        svc = call.service
        nodes, workloads = await svc.list_nodes(), await svc.list_workloads()
        instances, members = await svc.list_instances(), await svc.list_members()
        states: dict[str, int] = defaultdict(int)
        for instance in instances:
            states[instance.state.value] += 1
        return fragment(
            call.request,
            "overview.html",
            call=call,
            rows=node_rows(nodes, instances),
            members=members,
            status=await _status(statusz),
            workloads=workloads,
            states=dict(sorted(states.items())),
            problems=problems(nodes, workloads, instances),
        )

    @viewer
    async def workloads(call: Call) -> Response:
        items = await call.service.list_workloads(call.request.query_params.get("namespace"))
        return fragment(call.request, "workloads.html", call=call, workloads=items)

    @viewer
    async def workload(call: Call) -> Response:
        namespace, name = call.request.path_params["namespace"], call.request.path_params["name"]
        item = await call.service.get_workload(name, namespace)
        instances = await call.service.list_instances(namespace, name)
        events = await call.service.list_events(
            limit=50, kind="Workload", name=name, namespace=namespace
        )
        return fragment(
            call.request,
            "workload.html",
            call=call,
            workload=item,
            instances=instances,
            page_size=PAGE_SIZE,
            events=events,
        )

    @viewer
    async def instances(call: Call) -> Response:
        query = call.request.query_params
        items = await call.service.list_instances(
            query.get("namespace"), query.get("workload"), query.get("node")
        )
        try:
            offset = max(0, int(query.get("offset", "0")))
        except ValueError:
            offset = 0
        filters = {k: v for k, v in query.items() if k != "offset"}
        return fragment(
            call.request,
            "instances.html",
            call=call,
            instances=items[offset : offset + PAGE_SIZE],
            total=len(items),
            offset=offset,
            page_size=PAGE_SIZE,
            filters=filters,
        )

    async def explained(call: Call, template: str) -> Response:
        namespace, name = call.request.path_params["namespace"], call.request.path_params["name"]
        explanation = await call.service.explain(name, namespace)
        return fragment(
            call.request,
            template,
            call=call,
            instance=explanation.instance,
            summary=explanation.summary,
            details=explanation.details,
            events=explanation.events,
        )

    @viewer
    async def instance(call: Call) -> Response:
        return await explained(call, "instance.html")

    @viewer
    async def instance_status(call: Call) -> Response:
        return await explained(call, "instance_status.html")

    @viewer
    async def nodes(call: Call) -> Response:
        rows = node_rows(await call.service.list_nodes(), await call.service.list_instances())
        return fragment(call.request, "nodes.html", call=call, rows=rows)

    @viewer
    async def node(call: Call) -> Response:
        name = call.request.path_params["name"]
        item = await call.service.get_node(name)
        (row,) = node_rows([item], await call.service.list_instances(node=name))
        return fragment(call.request, "node.html", call=call, row=row, page_size=PAGE_SIZE)

    @viewer
    async def events(call: Call) -> Response:
        query = call.request.query_params
        actor, via, text = (query.get(key, "").strip() for key in ("actor", "via", "q"))
        # The door is filtered by the server, over every kept event, not only the latest.
        door = Via(via) if via in {door.value for door in Via} else None
        listed = await call.service.list_events(limit=EVENT_LIMIT, via=door)
        shown = [event for event in reversed(listed) if _matches(event, actor, via, text)]
        return fragment(
            call.request,
            "events.html",
            call=call,
            events=shown,
            actor=actor,
            via=via,
            text=text,
            vias=[door.value for door in Via],
        )

    @viewer
    async def manifests(call: Call) -> Response:
        sources = await call.service.list_manifests()
        return fragment(call.request, "manifests.html", call=call, sources=sources)

    @viewer
    async def apply_form(call: Call) -> Response:
        return fragment(call.request, "apply.html", call=call)

    @viewer
    async def search(call: Call) -> Response:
        text = call.request.query_params.get("q", "").strip().lower()
        svc = call.service
        found: dict[str, list[tuple[str, str]]] = {}
        if text:
            found["workloads"] = [
                (w.key, f"/ui/workloads/{w.namespace}/{w.name}")
                for w in await svc.list_workloads()
                if text in w.key.lower() or text in w.uid.lower()
            ]
            found["instances"] = [
                (i.key, f"/ui/instances/{i.namespace}/{i.name}")
                for i in await svc.list_instances()
                if text in i.key.lower()
                or text in i.uid.lower()
                or any(text in cid.lower() for cid in i.container_ids.values())
            ]
            found["nodes"] = [
                (n.name, f"/ui/nodes/{n.name}")
                for n in await svc.list_nodes()
                if text in n.name.lower() or text in n.node_id.lower()
            ]
        totals = {kind: len(hits) for kind, hits in found.items()}
        shown = {kind: hits[:MAX_HITS] for kind, hits in found.items()}
        return fragment(
            call.request, "search.html", call=call, text=text, found=shown, totals=totals
        )

    return [
        Route("/ui/f/whoami", whoami),
        Route("/ui/f/overview", overview),
        Route("/ui/f/workloads", workloads),
        Route("/ui/f/workloads/{namespace}/{name}", workload),
        Route("/ui/f/instances", instances),
        Route("/ui/f/instances/{namespace}/{name}", instance),
        Route("/ui/f/instances/{namespace}/{name}/status", instance_status),
        Route("/ui/f/nodes", nodes),
        Route("/ui/f/nodes/{name}", node),
        Route("/ui/f/events", events),
        Route("/ui/f/manifests", manifests),
        Route("/ui/f/apply", apply_form),
        Route("/ui/f/search", search),
    ]
