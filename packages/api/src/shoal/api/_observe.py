"""The API's own telemetry: every request timed by route template, and ``GET /metrics``.

:class:`RequestMetrics` is a plain ASGI middleware (no per-request objects
beyond a closure), outermost, so it times what a client waits for: the body
limit, the signature check and the route. The ``route`` label is the
template the router matched (``/v1/workloads/{namespace}/{name}``), never the
path itself, so names and ids do not become series; a request no route
matches is counted under ``unmatched``. A front door mounted at an exact path
(``/mcp``) is counted under that path: the router names no route template
for it. A streamed response (events, logs)
is timed until its stream ends.

``GET /metrics`` answers the Prometheus text format without a signature, as
``/healthz`` does: it holds counts by bounded labels, nothing about any one
object. :func:`metrics_app` serves it alone (with ``/healthz``), for a node
that serves no API (a worker) or an operator who scrapes another address.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.interfaces import Catalogue, Metrics

__all__ = ["UNMATCHED", "RequestMetrics", "add_metrics_route", "metrics_app"]

UNMATCHED = "unmatched"
"""The ``route`` label of a request that no route matched."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Times every HTTP request into ``shoal_api_request_duration_seconds``."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, mounts: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.mounts = mounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.observe(
                Catalogue.API_REQUEST_DURATION,
                time.perf_counter() - began,
                self._route_of(scope),
                method,
                str(status),
            )

    def _route_of(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        return scope["path"] if scope["path"] in self.mounts else UNMATCHED


def add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    """Serve ``metrics`` at ``GET /metrics`` of ``app`` (an explicit route, no redirect)."""

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of this node (the catalogue is in docs/observability.md)."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=None, headers={"Content-Type": content_type})


def metrics_app(metrics: Metrics) -> Starlette:
    """Return an app serving only ``GET /metrics`` and ``GET /healthz`` (no API, no signatures)."""

    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=None, headers={"Content-Type": content_type})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/metrics", prometheus_metrics), Route("/healthz", healthz)])
