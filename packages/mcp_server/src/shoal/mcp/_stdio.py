"""``shoal mcp``: the MCP server over stdio, reaching a cluster through the signed REST client.

The MCP client (an IDE, a desktop assistant, an agent framework) starts
``shoal mcp`` as a subprocess and speaks MCP on its stdin and stdout. Every
tool call becomes signed REST requests with the user's key to ``--server``
(``$SHOAL_SERVER``), so it works on a laptop against a remote cluster, and
the agent's authorized_keys decides what the key may do. With
``--read-only`` only the read and planning tools exist.
"""

from __future__ import annotations

from pathlib import Path

from shoal.client import ShoalClient, load_keypair
from shoal.interfaces import Role, Via

from ._caller import Caller, remote
from ._server import VERSION, McpSettings, build_server

__all__ = ["USER_AGENT", "serve_stdio"]

USER_AGENT = f"shoal-mcp/{VERSION}"
"""Names this program in the REST requests it makes (informational; ``via`` is signed)."""


async def serve_stdio(server: str, home: Path, *, read_only: bool = False) -> None:
    """Serve MCP on stdin/stdout until the client closes it.

    Args:
        server: The agent's URL, e.g. ``http://127.0.0.1:7070``.
        home: Where the user's key lives (``$SHOAL_HOME``).
        read_only: Register only the read and planning tools.

    Raises:
        InvalidInput: the key is missing or unreadable (before anything is served).
    """
    keypair = load_keypair(home)
    # The agent enforces the key's real role; here the key may try everything
    # it is allowed, or only reads in read-only mode.
    caller = Caller(keypair.key_id, Role.VIEWER if read_only else Role.ADMIN)
    async with ShoalClient(server, keypair, user_agent=USER_AGENT, via=Via.MCP) as client:
        mcp = build_server(remote(client), McpSettings(read_only=read_only, default_caller=caller))
        await mcp.run_stdio_async()
