"""Who is calling a tool, and what they may do.

Over streamable HTTP the caller is the bearer token's key id and role (the
token was verified before the request reached the MCP server; see
:mod:`shoal.mcp._http`). Over stdio and in-process there is no token: the
server's configured default caller applies — the user whose key ``shoal mcp``
signs its REST requests with, as a viewer in ``--read-only`` mode.

Tools are either reads (viewer) or changes (operator); the role check happens
before anything else, so a viewer is never asked to confirm a change it could
not make.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context

from shoal.interfaces import Actor, Caller, Role, Service, Via

__all__ = [
    "ROLE_CLAIM",
    "ActsAs",
    "Caller",
    "ServiceFactory",
    "caller_from_request",
    "caller_of",
    "in_process",
    "remote",
]

ROLE_CLAIM = "role"
"""The access-token claim that carries the caller's role."""


ServiceFactory = Callable[[Caller], Service]
"""Returns the service a tool call runs against, acting as the caller."""


class ActsAs(Protocol):
    """A service that can act as another actor: ``shoal.core.ShoalService``."""

    def with_actor(self, actor: Actor) -> Service:
        """Return the same service acting as ``actor``."""
        ...


def in_process(service: ActsAs) -> ServiceFactory:
    """Bind an in-process ``ShoalService``: each call acts as its caller (for events and audit)."""
    return lambda caller: service.with_actor(Actor(id=caller.key_id, via=Via.MCP))


def remote(service: Service) -> ServiceFactory:
    """Use one remote service (a ``ShoalClient``) for every call: its key is the actor."""
    return lambda caller: service


def _token_of(request: Any) -> AccessToken | None:
    scope = getattr(request, "scope", None)
    user = scope.get("user") if isinstance(scope, dict) else None
    return user.access_token if isinstance(user, AuthenticatedUser) else None


def caller_from_request(request: Any, default: Caller) -> Caller:
    """Return the caller of an HTTP request that passed the bearer gate, else ``default``.

    The role is read from the request being served, not from the session:
    every HTTP request carries its own token, which may differ from the one
    that opened the session.
    """
    token = _token_of(request)
    if token is None:
        return default
    role = (token.claims or {}).get(ROLE_CLAIM)
    try:
        return Caller(token.client_id, Role(str(role)))
    except ValueError:  # the gate checked the claim; fall back to the least privilege
        return Caller(token.client_id, Role.VIEWER)


def caller_of(ctx: Context[Any, Any], default: Caller) -> Caller:
    """Return the caller of the request ``ctx`` serves."""
    try:
        request = ctx.request_context.request
    except ValueError:  # outside a request (a direct call in a test)
        return default
    return caller_from_request(request, default)
