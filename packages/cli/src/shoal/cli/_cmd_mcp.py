"""`shoal mcp` (stdio server) and `shoal token create` (bearer tokens for /mcp)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from shoal.interfaces import Role

from ._base import app, checked_server, err, fail, run, settings, token_app

# --- MCP -----------------------------------------------------------------


@app.command("mcp")
def mcp_stdio(
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Expose only the read and planning tools.")
    ] = False,
) -> None:
    """Serve Shoal's MCP tools on stdin/stdout for an MCP client, acting with your key."""
    import logging

    from shoal.client import default_home
    from shoal.mcp import serve_stdio  # the MCP SDK loads on use, not with every command

    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,  # stdout carries the protocol
    )
    home = settings.home or default_home()
    server = checked_server(settings.server)
    run(lambda: serve_stdio(server, home, read_only=read_only))


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="What the token may do.")] = Role.VIEWER,
    ttl: Annotated[str, typer.Option(help="Lifetime: 15m, 1h, 7d (1m to 30d).")] = "1h",
) -> None:
    """Print a bearer token (an EdDSA JWT signed with your key) for the agent's /mcp endpoint."""
    from shoal.client import default_home, load_keypair
    from shoal.interfaces import ShoalError
    from shoal.mcp import create_token, parse_ttl

    try:
        keypair = load_keypair(settings.home or default_home())
        token = create_token(keypair, role, parse_ttl(ttl))
    except ShoalError as exc:
        fail(exc.message)
    print(token)
    err.print(
        f"token for key {keypair.key_id}, role {role.value}, valid for {ttl}: the agent accepts "
        f"it while authorized_keys gives that key role {role.value} or higher",
        highlight=False,
    )
