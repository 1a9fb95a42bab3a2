"""The agent's MCP endpoint: streamable HTTP at ``/mcp`` behind bearer tokens and an Origin check.

``shoal.agent.run_agent(config, home, mounts=[mcp_mount()])`` serves it beside the REST
API. Every request passes, in order:

1. the bearer gate: ``Authorization: Bearer <token>`` with a token from
   ``shoal token create`` (:mod:`shoal.mcp._tokens`), checked against the
   agent's live authorized_keys; anything else is 401 with a JSON error whose
   ``details.reason`` says why, and a ``WWW-Authenticate`` header;
2. the SDK's DNS-rebinding protection: the ``Host`` header must name the
   agent (loopback, or the host it listens on) and an ``Origin`` header, when a
   browser sends one, must be such a host too; otherwise 421 / 403;
3. the SDK's session manager and the MCP server (:func:`build_server`) over
   the agent's in-process service, acting as the token's key.

More hosts and origins (a DNS name in front of the agent, say) are allowed
with ``$SHOAL_MCP_ALLOWED_HOSTS`` and ``$SHOAL_MCP_ALLOWED_ORIGINS``
(comma-separated, ``host:*`` and ``https://host:*`` patterns allowed).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from shoal.core import AgentContext, AgentMount
from shoal.interfaces import Caller, Role, Unauthenticated

from ._caller import ROLE_CLAIM, in_process
from ._server import McpSettings, build_server
from ._tokens import TokenVerifier

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "ALLOWED_ORIGINS_ENV",
    "MCP_PATH",
    "BearerGate",
    "mcp_mount",
    "transport_security",
]

MCP_PATH = "/mcp"
ALLOWED_HOSTS_ENV = "SHOAL_MCP_ALLOWED_HOSTS"
ALLOWED_ORIGINS_ENV = "SHOAL_MCP_ALLOWED_ORIGINS"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("0.0.0.0", "::", "")
REALM = "shoal-mcp"


def transport_security(
    listen: str, hosts: Sequence[str] = (), origins: Sequence[str] = ()
) -> TransportSecuritySettings:
    """Return the Host/Origin allow-lists for an agent listening on host ``listen``.

    Loopback is always allowed; so is the host the agent listens on, unless
    that is a wildcard address (then name the hosts clients use in ``hosts``).
    """
    names = list(_LOOPBACK)
    if listen not in _WILDCARDS and listen not in ("127.0.0.1", "localhost", "::1"):
        names.append(f"[{listen}]" if ":" in listen else listen)
    allowed_hosts = [f"{name}:*" for name in names] + list(names) + list(hosts)
    allowed_origins = [
        f"{scheme}://{name}{port}"
        for scheme in ("http", "https")
        for name in names
        for port in (":*", "")
    ] + list(origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
    )


async def _refuse(send: Send, error: Unauthenticated) -> None:
    reason = str(error.details.get("reason", "invalid_token"))
    challenge = f'Bearer realm="{REALM}"'
    if reason != "missing_token":
        description = error.message.replace('"', "'")
        challenge += f', error="invalid_token", error_description="{description}"'
    body = json.dumps({"error": error.to_body().model_dump(mode="json")}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerGate:
    """ASGI middleware: admit only requests with a valid MCP bearer token.

    The verified caller is put where the MCP SDK looks for it (``scope['user']``
    and its auth context), so sessions stay bound to the key that opened them
    and every tool call knows its caller and role.
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "this endpoint needs `Authorization: Bearer <token>`: create a token with "
                    "`shoal token create --role viewer` (or operator)",
                    reason="missing_token",
                )
            claims = self.verifier.verify(token.strip())
        except Unauthenticated as exc:
            await _refuse(send, exc)
            return
        access = AccessToken(
            token=token.strip(),
            client_id=claims.key_id,
            subject=claims.key_id,
            scopes=[claims.role.value],
            expires_at=claims.expires_at,
            claims={ROLE_CLAIM: claims.role.value},
        )
        user = AuthenticatedUser(access)
        authenticated = {**scope, "user": user, "auth": AuthCredentials(access.scopes)}
        reset = auth_context_var.set(user)
        try:
            await self.app(authenticated, receive, send)
        finally:
            auth_context_var.reset(reset)


def _from_env(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def mcp_mount(
    *,
    read_only: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    allowed_origins: Sequence[str] | None = None,
) -> AgentMount:
    """Return the agent mount that serves MCP over streamable HTTP at ``/mcp``.

    Args:
        read_only: Register only the read and planning tools, whatever the token's role.
        allowed_hosts: Extra Host header patterns (default: ``$SHOAL_MCP_ALLOWED_HOSTS``).
        allowed_origins: Extra Origin patterns (default: ``$SHOAL_MCP_ALLOWED_ORIGINS``).
    """

    @asynccontextmanager
    async def mount(agent: AgentContext) -> AsyncIterator[tuple[str, ASGIApp]]:
        settings = McpSettings(
            read_only=read_only,
            # Unreachable behind the gate; the least privilege should it ever apply.
            default_caller=Caller("anonymous", Role.VIEWER),
            metrics=agent.metrics,
        )
        server = build_server(in_process(agent.service), settings)
        security = transport_security(
            agent.api_host,
            _from_env(ALLOWED_HOSTS_ENV) if allowed_hosts is None else allowed_hosts,
            _from_env(ALLOWED_ORIGINS_ENV) if allowed_origins is None else allowed_origins,
        )
        # Builds the session manager; its Starlette wrapper is not used (the
        # agent serves the endpoint, and the manager's lifetime is ours).
        server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=security)
        manager = server.session_manager
        app = BearerGate(StreamableHTTPASGIApp(manager), TokenVerifier(agent.keys))
        async with manager.run():
            yield MCP_PATH, app

    return mount
