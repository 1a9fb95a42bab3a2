"""The REST API: FastAPI routes over the service layer, every /v1 call signed.

Routes (all JSON; errors are ``{"error": {"code", "message", "details"}}``)::

    GET    /healthz, /readyz, /openapi.json                 unauthenticated
    GET    /metrics  (Prometheus text, see ``_observe``)      unauthenticated
    POST   /v1/workloads/apply   {documents, dry_run, strict}  operator (every kind, both dialects)
    GET    /v1/workloads[?namespace=]                         viewer
    GET    /v1/workloads/{ns}/{name}                          viewer
    POST   /v1/workloads/{ns}/{name}/scale  {replicas}        operator
    POST   /v1/workloads/{ns}/{name}/rollout/undo  {revision}  operator
    POST   /v1/workloads/{ns}/{name}/rollout/{pause|resume|promote}  operator
    DELETE /v1/workloads/{ns}/{name}                          operator
    GET    /v1/instances[?namespace=&workload=&node=]         viewer
    GET    /v1/instances/{ns}/{name}[/explain]                viewer
    GET    /v1/instances/{ns}/{name}/stats[?range=]  (now; with range: usage history)  viewer
    GET    /v1/nodes, /v1/nodes/{name}                        viewer
    GET    /v1/nodes/{name}/stats[?range=1h]  (usage history)  viewer
    GET    /v1/members   (gossip view of this node)           viewer
    GET    /v1/statusz   (version, uptime, role, leader, store, config)  viewer
    GET    /v1/audit[?limit=], /v1/audit/verify   (the hash-chained audit trail)  admin
    POST   /v1/nodes/{name}/{cordon|uncordon|drain}           operator
    GET    /v1/events[?limit=&kind=&name=&namespace=]         viewer
    GET    /v1/events/stream   (server-sent events)           viewer
    GET    /v1/traces/{trace_id}   (spans of a request and the work it caused)  viewer
    ConfigMaps, Secrets, Namespaces: see ``_config_routes``
    GET    /v1/manifests   (watched manifests directories)    viewer, see ``_manifest_routes``

The caller's key id becomes the actor of every event its request causes.
Every request is a span; the ``traceresponse`` header names its trace (see ``_tracing``).
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.routing import Route
from starlette.types import ASGIApp

from shoal.core import ShoalService
from shoal.interfaces import (
    API_PREFIX,
    APPLY_PATH,
    DECLARED_VIAS,
    NO_METRICS,
    USAGE_DEFAULT_RANGE,
    VIA_HEADER,
    Actor,
    ApplyResult,
    AuditEntry,
    AuditReport,
    ContainerStats,
    Event,
    EventType,
    ExecResult,
    Explanation,
    ImageInfo,
    Instance,
    InternalError,
    InvalidInput,
    Member,
    Metrics,
    Node,
    ObjectRef,
    Role,
    ShoalError,
    Statusz,
    StatuszSource,
    TraceView,
    UsageSeries,
    Via,
    Workload,
)
from shoal.kube import merge_warnings, parse_documents

from ._auth import RequestVerifier, Verified, target_uri_from_scope
from ._config_routes import CALLER_STATE, config_router
from ._limits import BodyLimit, body_too_large, too_large_error
from ._manifest_routes import manifests_router
from ._observe import RequestMetrics, add_metrics_route
from ._precondition import Precondition
from ._streams import EventStream, JsonLines, LogStream, pull_lines
from ._tracing import RequestTracing, verified_early

__all__ = [
    "ApplyRequest",
    "EventRequest",
    "EventStream",
    "ExecRequest",
    "LogStream",
    "ScaleRequest",
    "create_app",
]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[str | None]]
"""Returns None when the node is ready, else why it is not (served by /readyz)."""


class ApplyRequest(BaseModel):
    """Body of an apply: raw documents of either dialect, validated all or nothing."""

    documents: list[Any] = Field(max_length=1000)
    """Documents as parsed from YAML or JSON: Shoal's (Workload, ConfigMap, Secret, Namespace,
    told apart by kind) or Kubernetes' (with apiVersion; see docs/kubernetes.md)."""
    dry_run: bool = False
    """Only return the plan; change nothing."""
    strict: bool = False
    """Refuse documents with what Shoal would ignore (kinds, fields), instead of warning."""
    source: str = "request"
    """Where the documents came from (e.g. a file name), for error messages."""


class ExecRequest(BaseModel):
    """Body of an exec."""

    command: list[str] = Field(min_length=1)
    """The command and its arguments."""
    container: str | None = None
    """Which container; the first one by default."""
    time_limit: float = Field(default=30, gt=0, le=600)
    """Seconds before the command is killed."""


class EventRequest(BaseModel):
    """Body of a recorded event (front doors auditing their own calls)."""

    object: ObjectRef
    """What the event is about."""
    reason: str = Field(min_length=1, max_length=64)
    """One-word cause."""
    message: str = Field(max_length=4096)
    """What happened."""
    type: EventType = EventType.NORMAL
    """Normal or Warning."""
    details: dict[str, str] = Field(default_factory=dict)
    """Extra context."""


class PullRequest(BaseModel):
    """Body of an image pull."""

    reference: str = Field(min_length=1)
    """Image reference, e.g. 127.0.0.1:5000/busybox:1.36."""


class ImportRequest(BaseModel):
    """Body of an image import."""

    path: str = Field(min_length=1)
    """Path on the node of an OCI layout directory or a docker-save tarball."""
    reference: str | None = None
    """Name to give the image (default: from the layout or archive)."""


class UndoRequest(BaseModel):
    """Body of a rollout undo."""

    revision: int | None = Field(default=None, ge=1)
    """The kept revision to go back to; the one before the current if absent."""


class ScaleRequest(BaseModel):
    """Body of a scale."""

    replicas: int
    """The new replica count, 0 to ``shoal.interfaces.MAX_REPLICAS``."""


def _error_response(error: ShoalError) -> JSONResponse:
    return JSONResponse({"error": error.to_body().model_dump(mode="json")}, error.http_status)


def _via(request: Request, covered: frozenset[str]) -> Via:
    """Return the front door a signed request declares it came through, else ``rest``.

    The declaration counts only when the signature covers it (a header added
    on the way is ignored) and names a front door that calls this API.
    """
    declared = request.headers.get(VIA_HEADER)
    if declared is None or VIA_HEADER not in covered:
        return Via.REST
    try:
        via = Via(declared)
    except ValueError:
        return Via.REST
    return via if via in DECLARED_VIAS else Via.REST


def create_app(
    service: ShoalService,
    verifier: RequestVerifier,
    *,
    ready: ReadyCheck | None = None,
    heartbeat: float = 15.0,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
    metrics: Metrics = NO_METRICS,
    statusz: StatuszSource | None = None,
) -> FastAPI:
    """Build the ASGI app (wrapped in the 1 MiB body limit) for ``service``.

    ``mounts`` are ``(path, ASGI app)`` pairs served at exactly ``path`` (e.g.
    the MCP endpoint at ``/mcp``); they authenticate requests themselves.
    Every request is timed into ``metrics``, served at ``GET /metrics``;
    ``statusz`` answers ``GET /v1/statusz`` (not served without it).
    """
    app = FastAPI(
        # FastAPI's own telemetry would join any caller's traceparent: RequestTracing opens
        # the request's span instead, joining only an admin's (see ._tracing).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Shoal",
        version="0.1.0",
        description="Gossip-clustered container orchestrator. Every /v1 request must be "
        "signed per RFC 9421 with ed25519 (see docs/getting-started.md).",
    )

    @app.exception_handler(ShoalError)
    async def shoal_error(request: Request, exc: ShoalError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if body_too_large(request.scope):
            return _error_response(too_large_error())
        problems = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"{loc or 'body'}: {error.get('msg', 'invalid')}")
        return _error_response(InvalidInput("invalid request: " + "; ".join(problems)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return _error_response(
            InternalError("internal error; the server log has the details", path=request.url.path)
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: the node's loops run and its store answers."""
        why = None if ready is None else await ready()
        if why is None:
            return JSONResponse({"status": "ready"}, 200)
        return JSONResponse({"status": "not ready", "reason": why}, 503)

    async def authenticate(request: Request) -> Verified:
        if body_too_large(request.scope):
            raise too_large_error()
        early = verified_early(request.scope)  # checked already, to honour a traceparent
        if early is not None:
            return early
        body = await request.body()
        return verifier.verify_signed(
            request.method,
            target_uri_from_scope(request.scope),
            request.headers.items(),
            body,
        )

    def role(required: Role) -> Callable[[Request], Awaitable[ShoalService]]:
        async def dependency(request: Request) -> ShoalService:
            caller, covered = await authenticate(request)
            caller.require(required, f"{request.method} {request.url.path}")
            setattr(request.state, CALLER_STATE, caller)  # for checks a route adds (show_values)
            return service.with_actor(Actor(id=caller.key_id, via=_via(request, covered)))

        return dependency

    Viewer = Annotated[ShoalService, Depends(role(Role.VIEWER))]
    Operator = Annotated[ShoalService, Depends(role(Role.OPERATOR))]
    Admin = Annotated[ShoalService, Depends(role(Role.ADMIN))]
    v1 = APIRouter(prefix=API_PREFIX)

    @v1.post(APPLY_PATH.removeprefix(API_PREFIX), tags=["workloads"])
    async def apply(body: ApplyRequest, svc: Operator) -> ApplyResult:
        """Create or update workloads, ConfigMaps, Secrets and Namespaces from documents.

        All or nothing; dry_run returns the plan. Kubernetes documents are translated, and
        what Shoal does not honour comes back in warnings (refused with strict).
        """
        translation = parse_documents(body.documents, body.source, strict=body.strict)
        result = await svc.apply(translation.objects, dry_run=body.dry_run)
        warnings = merge_warnings(translation.warnings, result.warnings)
        return result.model_copy(update={"warnings": warnings})

    @v1.get("/workloads", tags=["workloads"])
    async def list_workloads(svc: Viewer, namespace: str | None = None) -> list[Workload]:
        """List workloads."""
        return await svc.list_workloads(namespace)

    @v1.get("/workloads/{namespace}/{name}", tags=["workloads"])
    async def get_workload(namespace: str, name: str, svc: Viewer) -> Workload:
        """Get one workload."""
        return await svc.get_workload(name, namespace)

    @v1.post("/workloads/{namespace}/{name}/scale", tags=["workloads"])
    async def scale(
        namespace: str, name: str, body: ScaleRequest, svc: Operator, expected: Precondition
    ) -> Workload:
        """Set a workload's replica count (if it is the ``If-Match`` version, when sent)."""
        return await svc.scale(name, body.replicas, namespace, expected=expected)

    @v1.post("/workloads/{namespace}/{name}/rollout/undo", tags=["workloads"])
    async def rollout_undo(
        namespace: str, name: str, body: UndoRequest, svc: Operator, expected: Precondition
    ) -> Workload:
        """Roll back to a kept revision (the one before the current by default)."""
        return await svc.rollout_undo(name, body.revision, namespace, expected=expected)

    @v1.post("/workloads/{namespace}/{name}/rollout/promote", tags=["workloads"])
    async def promote_rollout(
        namespace: str, name: str, svc: Operator, expected: Precondition
    ) -> Workload:
        """Promote the current revision's canaries: the rollout replaces the rest."""
        return await svc.promote_rollout(name, namespace, expected=expected)

    @v1.post("/workloads/{namespace}/{name}/rollout/pause", tags=["workloads"])
    async def pause_rollout(
        namespace: str, name: str, svc: Operator, expected: Precondition
    ) -> Workload:
        """Pause the workload's rollouts: a template change waits until resumed."""
        return await svc.pause_rollout(name, True, namespace, expected=expected)

    @v1.post("/workloads/{namespace}/{name}/rollout/resume", tags=["workloads"])
    async def resume_rollout(
        namespace: str, name: str, svc: Operator, expected: Precondition
    ) -> Workload:
        """Resume the workload's rollouts."""
        return await svc.pause_rollout(name, False, namespace, expected=expected)

    @v1.delete("/workloads/{namespace}/{name}", tags=["workloads"])
    async def delete_workload(
        namespace: str, name: str, svc: Operator, expected: Precondition
    ) -> Workload:
        """Delete a workload: its instances are stopped, then it is removed."""
        return await svc.delete_workload(name, namespace, expected=expected)

    @v1.get("/instances", tags=["instances"])
    async def list_instances(
        svc: Viewer,
        namespace: str | None = None,
        workload: str | None = None,
        node: str | None = None,
    ) -> list[Instance]:
        """List instances, filtered by namespace, workload and node."""
        return await svc.list_instances(namespace, workload, node)

    @v1.get("/instances/{namespace}/{name}", tags=["instances"])
    async def get_instance(namespace: str, name: str, svc: Viewer) -> Instance:
        """Get one instance."""
        return await svc.get_instance(name, namespace)

    @v1.get("/instances/{namespace}/{name}/explain", tags=["instances"])
    async def explain(namespace: str, name: str, svc: Viewer) -> Explanation:
        """Explain why an instance is pending, failing or running where it is."""
        return await svc.explain(name, namespace)

    @v1.get(
        "/instances/{namespace}/{name}/logs",
        tags=["instances"],
        response_class=LogStream,
        status_code=200,
    )
    async def logs(
        namespace: str,
        name: str,
        svc: Viewer,
        container: str | None = None,
        tail: Annotated[int | None, Query(ge=0)] = None,
        since: datetime | None = None,
        follow: bool = False,
        previous: bool = False,
    ) -> LogStream:
        """Stream an instance's log lines as JSON lines (LogLine); follow keeps the stream open.

        ``previous`` streams its previous run's lines instead (kept when it started again).
        """
        lines = svc.logs(
            name,
            namespace,
            container=container,
            tail=tail,
            since=since,
            follow=follow,
            previous=previous,
        )
        first = await anext(aiter(lines), None)  # errors (NotFound, ...) become JSON, not a stream
        return LogStream(first, lines)

    @v1.post("/instances/{namespace}/{name}/exec", tags=["instances"])
    async def exec_command(
        namespace: str, name: str, body: ExecRequest, svc: Operator
    ) -> ExecResult:
        """Run a command in a running instance's container."""
        return await svc.exec(
            name, body.command, namespace, container=body.container, time_limit=body.time_limit
        )

    @v1.get("/instances/{namespace}/{name}/stats", tags=["instances"])
    async def stats(
        namespace: str, name: str, svc: Viewer, range: str | None = None
    ) -> list[ContainerStats] | UsageSeries:
        """Resource use of a running instance's containers, now or over a range.

        With ``range`` (15m, 1h, 6h or 24h), its usage history instead: CPU, memory and
        restarts against its limits, kept by the node that runs it.
        """
        if range is not None:
            return await svc.usage("instance", name, namespace, range=range)
        return await svc.stats(name, namespace)

    @v1.get("/images", tags=["images"])
    async def list_images(svc: Viewer, node: str | None = None) -> list[ImageInfo]:
        """List the images on a node: this one by default, or any node of the cluster."""
        return await svc.list_images(node)

    @v1.post("/images/pull", tags=["images"], response_class=JsonLines, status_code=200)
    async def pull_image(body: PullRequest, svc: Operator) -> JsonLines:
        """Pull an image; streams progress lines, then one line with the image."""
        return JsonLines(pull_lines(svc, body.reference))

    @v1.post("/images/import", tags=["images"])
    async def import_image(body: ImportRequest, svc: Operator) -> list[ImageInfo]:
        """Import an OCI layout directory or docker-save tarball from a path on this node."""
        return await svc.import_image(body.path, body.reference)

    @v1.delete("/images", tags=["images"])
    async def remove_image(svc: Operator, reference: str) -> list[ImageInfo]:
        """Forget an image reference (its data stays until gc)."""
        return await svc.remove_image(reference)

    @v1.post("/images/gc", tags=["images"])
    async def gc_images(svc: Operator) -> dict[str, int]:
        """Free the space no image needs."""
        return {"freed_bytes": await svc.gc_images()}

    @v1.get("/nodes", tags=["nodes"])
    async def list_nodes(svc: Viewer) -> list[Node]:
        """List nodes."""
        return await svc.list_nodes()

    @v1.get("/nodes/{name}", tags=["nodes"])
    async def get_node(name: str, svc: Viewer) -> Node:
        """Get one node."""
        return await svc.get_node(name)

    @v1.get("/nodes/{name}/stats", tags=["nodes"])
    async def node_stats(name: str, svc: Viewer, range: str = USAGE_DEFAULT_RANGE) -> UsageSeries:
        """A node's usage history over ``range`` (15m, 1h, 6h or 24h).

        Its instances' CPU, memory and restarts summed, against its capacity.
        """
        return await svc.usage("node", name, range=range)

    @v1.get("/members", tags=["nodes"])
    async def list_members(svc: Viewer) -> list[Member]:
        """List the gossip members this node knows, with nodes that have no record."""
        return await svc.list_members()

    if statusz is not None:
        status_of_node = statusz

        @v1.get("/statusz", tags=["nodes"])
        async def get_statusz(svc: Viewer) -> Statusz:
            """This node: version, uptime, role, leader, store, configuration (secrets redacted)."""
            return await status_of_node()

    @v1.post("/nodes/{name}/cordon", tags=["nodes"])
    async def cordon(name: str, svc: Operator) -> Node:
        """Stop placing new instances on a node."""
        return await svc.cordon(name)

    @v1.post("/nodes/{name}/uncordon", tags=["nodes"])
    async def uncordon(name: str, svc: Operator) -> Node:
        """Allow placements on a node again."""
        return await svc.uncordon(name)

    @v1.post("/nodes/{name}/drain", tags=["nodes"])
    async def drain(name: str, svc: Operator) -> Node:
        """Cordon a node and move its instances elsewhere, replacement first."""
        return await svc.drain(name)

    @v1.delete("/nodes/{name}", tags=["nodes"])
    async def delete_node(name: str, svc: Operator) -> Node:
        """Forget a node that failed or left, and the instances lost with it (409 if alive)."""
        return await svc.delete_node(name)

    @v1.get("/events", tags=["events"])
    async def list_events(
        svc: Viewer,
        limit: Annotated[int, Query(ge=1, le=5000)] = 100,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        actor: str | None = None,
        via: Via | None = None,
        trace_id: str | None = None,
    ) -> list[Event]:
        """List the latest events, oldest first (of one object, actor, front door or trace)."""
        return await svc.list_events(
            limit=limit,
            kind=kind,
            name=name,
            namespace=namespace,
            actor=actor,
            via=via,
            trace_id=trace_id,
        )

    @v1.post("/events", tags=["events"])
    async def record_event(body: EventRequest, svc: Operator) -> Event:
        """Record an event as the caller (front doors use it to audit their calls)."""
        return await svc.record_event(
            body.object, body.reason, body.message, event_type=body.type, details=body.details
        )

    @v1.get("/audit", tags=["audit"])
    async def list_audit(
        svc: Admin, limit: Annotated[int, Query(ge=1, le=5000)] = 100
    ) -> list[AuditEntry]:
        """List the last entries of the audit trail (every mutating call), oldest first."""
        return await svc.audit_entries(limit)

    @v1.get("/traces/{trace_id}", tags=["events"])
    async def get_trace(trace_id: str, svc: Viewer) -> TraceView:
        """The spans of one trace and of the traces linked to it, from every node it crossed."""
        return await svc.get_trace(trace_id)

    @v1.get("/audit/verify", tags=["audit"])
    async def verify_audit(svc: Admin) -> AuditReport:
        """Check the audit trail's hash chain: reports edited and deleted entries."""
        return await svc.verify_audit()

    @v1.get("/events/stream", tags=["events"], response_class=EventStream, status_code=200)
    async def stream_events(svc: Viewer) -> EventStream:
        """Stream events as server-sent events (``event: shoal-event``) from now on."""
        return EventStream(svc, heartbeat)

    app.include_router(v1)
    app.include_router(config_router(role))
    app.include_router(manifests_router(role))
    for path, mounted in mounts:
        # A Route whose endpoint is not a function serves it as a raw ASGI app.
        app.router.routes.append(Route(path, mounted, include_in_schema=False))
    add_metrics_route(app, metrics)
    app.add_middleware(RequestTracing, verifier=verifier, mounts=frozenset(p for p, _ in mounts))
    app.add_middleware(BodyLimit)
    # Outermost: it times what a client waits for.
    app.add_middleware(RequestMetrics, metrics=metrics, mounts=frozenset(p for p, _ in mounts))
    return app
