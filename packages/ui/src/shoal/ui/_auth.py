"""Who is asking: every data request of the dashboard is signed, and answered for its caller.

Pages (``/ui``, ``/ui/workloads``, ...) are shells without data and need no
signature; the browser then fetches fragments under ``/ui/f/`` signed with its
Ed25519 key. :func:`signed` wraps a fragment endpoint: it authenticates the
request through the agent's verifier, checks the role the endpoint needs and
hands it the service acting as the caller (``via: ui``). Failures come back as
the JSON error body the REST API uses, so the page can show the reason (and
return to enrolment on a 401).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shoal.interfaces import (
    Actor,
    Caller,
    InternalError,
    InvalidInput,
    Role,
    Service,
    ShoalError,
    Via,
)

__all__ = ["ActsAs", "Authenticate", "Call", "Enrol", "error_response", "signed"]

log = logging.getLogger("shoal.ui")

Authenticate = Callable[[Mapping[str, Any], bytes], Caller]
"""Authenticates an ASGI HTTP request (its scope and body) signed per RFC 9421.

Raises ``Unauthenticated`` (with ``details['reason']``) when the signature is
missing or not acceptable. The agent builds it from the REST API's verifier,
so the browser's requests pass the same policy and share its replay cache.
"""


Enrol = Callable[[Mapping[str, Any], bytes], Caller]
"""Redeems a one-time enrolment code for the key a request carries (and is signed with).

The body is ``{"code", "key_id", "public_key"}``; the request must be signed by
that key (proof that the browser holds it). Returns the caller it authorized.
Raises ``Unauthenticated`` (reason ``bad_enrolment_code``) or ``InvalidInput``.
"""


class ActsAs(Protocol):
    """A service that can act as another actor: ``shoal.core.ShoalService``."""

    def with_actor(self, actor: Actor) -> Service:
        """Return the same service acting as ``actor``."""
        ...


@dataclass(frozen=True)
class Call:
    """One authenticated fragment request."""

    request: Request
    caller: Caller
    service: Service
    """The node's service, acting as the caller through the dashboard."""
    body: bytes

    @property
    def can_operate(self) -> bool:
        """Whether the caller may change things (operator or admin)."""
        return self.caller.allows(Role.OPERATOR)

    def form(self) -> dict[str, str]:
        """The JSON object the page sent as the body (string values), or ``{}``.

        Raises:
            InvalidInput: the body is not a JSON object.
        """
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise InvalidInput(f"the request body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput("the request body must be a JSON object")
        return {str(key): str(value) for key, value in data.items()}


def error_response(error: ShoalError) -> JSONResponse:
    """Render ``error`` as the REST API does: its status and ``{"error": {...}}``."""
    return JSONResponse(
        {"error": error.to_body().model_dump(mode="json")}, status_code=error.http_status
    )


Endpoint = Callable[[Call], Awaitable[Response]]


def signed(
    service: ActsAs, authenticate: Authenticate, required: Role = Role.VIEWER
) -> Callable[[Endpoint], Callable[[Request], Awaitable[Response]]]:
    """Make ``endpoint`` a Starlette endpoint that answers signed requests of ``required`` role."""

    def wrap(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                body = await request.body()
                caller = authenticate(request.scope, body)
                caller.require(required, f"{request.method} {request.url.path}")
                acting = service.with_actor(Actor(id=caller.key_id, via=Via.UI))
                return await endpoint(Call(request, caller, acting, body))
            except ShoalError as exc:
                return error_response(exc)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                return error_response(
                    InternalError("internal error; the server log has the details")
                )

        return handle

    return wrap
