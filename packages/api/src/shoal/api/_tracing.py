"""Every API request is a span: the root of its trace, or an admin caller's child.

:class:`RequestTracing` is a plain ASGI middleware, inside the body limit.
It opens a server span per request, named by method and route template
(``POST /v1/workloads/apply``), and answers with the W3C ``traceresponse``
header, so a caller learns the trace its call was recorded in (``shoal``
prints it; ``get_trace`` shows it).

A ``traceparent`` sent by the caller joins the request to the caller's
trace only when the caller is an admin and its signature covers the header
(a header added on the way proves nothing). To know that before the span
starts, the middleware checks the signature of such a request itself — once:
the route's authentication takes the result from the scope
(:func:`verified_early`), since a second check would see a replayed nonce.
Mounted front doors (``/mcp``, ``/ui``) check their own signatures; their
requests are always roots here (MCP carries its trace context in
``params._meta``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.interfaces import (
    API_PREFIX,
    TRACEPARENT_HEADER,
    TRACERESPONSE_HEADER,
    Role,
    ShoalError,
)

from ._auth import RequestVerifier, Verified, target_uri_from_scope
from ._observe import UNMATCHED

__all__ = ["RequestTracing", "verified_early"]

TRACER = trace.get_tracer("shoal.api")
_PROPAGATOR = TraceContextTextMapPropagator()
_VERIFIED = "shoal.verified"
"""Scope key: the middleware's outcome of checking the signature (Verified or the error)."""
_TRACEPARENT = TRACEPARENT_HEADER.encode()
_TRACERESPONSE = TRACERESPONSE_HEADER.encode()


def verified_early(scope: Scope) -> Verified | None:
    """Return the signature check :class:`RequestTracing` made of this request, if it made one.

    Raises:
        ShoalError: the check failed (the route answers with it).
    """
    outcome = scope.get(_VERIFIED)
    if isinstance(outcome, ShoalError):
        raise outcome
    return outcome if isinstance(outcome, Verified) else None


class RequestTracing:
    """Opens a server span per HTTP request (see the module)."""

    def __init__(
        self, app: ASGIApp, verifier: RequestVerifier, mounts: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.mounts = mounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = otel_context.Context()  # a root unless an admin asks otherwise
        traceparent = _header(scope, _TRACEPARENT)
        if traceparent is not None and scope["path"].startswith(f"{API_PREFIX}/"):
            receive = await self._check(scope, receive)
            verified = scope.get(_VERIFIED)
            if (
                isinstance(verified, Verified)
                and verified.caller.allows(Role.ADMIN)
                and TRACEPARENT_HEADER in verified.covered
            ):
                parent = _PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent})
        method = scope["method"]
        with TRACER.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
            record_exception=False,
            set_status_on_exception=False,  # the status code says it; a message may quote input
        ) as span:
            context = span.get_span_context()
            response_header = (
                f"00-{trace.format_trace_id(context.trace_id)}-"
                f"{trace.format_span_id(context.span_id)}-01"
            ).encode()
            status = 500

            async def send_traced(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if context.is_valid:
                        headers = [*message.get("headers", []), (_TRACERESPONSE, response_header)]
                        message = {**message, "headers": headers}
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = _route_of(scope, self.mounts)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))

    async def _check(self, scope: Scope, receive: Receive) -> Receive:
        """Check the request's signature now; return a ``receive`` that replays its body."""
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            scope[_VERIFIED] = self.verifier.verify_signed(
                scope["method"], target_uri_from_scope(scope), headers, bytes(body)
            )
        except ShoalError as exc:
            scope[_VERIFIED] = exc
        replay = iter(messages)

        async def replayed() -> Message:
            for message in replay:
                return message
            return await receive()

        return replayed


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def _route_of(scope: Scope, mounts: frozenset[str]) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return scope["path"] if scope["path"] in mounts else UNMATCHED
