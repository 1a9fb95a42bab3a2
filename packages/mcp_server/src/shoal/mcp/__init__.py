"""Shoal's MCP server: tools, resources and prompts for LLM agents, safe by default.

Public surface:

* :func:`build_server` / :class:`McpSettings` — the transport-neutral server,
  over a service bound with :func:`in_process` (a ``ShoalService``) or
  :func:`remote` (a ``ShoalClient``);
* :func:`serve_stdio` — what ``shoal mcp`` runs;
* :func:`mcp_mount` — streamable HTTP at ``/mcp`` inside the agent, behind
  bearer tokens (:func:`create_token`, :class:`TokenVerifier`);
* :data:`CHANGE_TOOLS`, :data:`REDACTED` — the tools viewers do not get, and
  what secret values read as.

See docs/mcp.md for client configuration, the tool list and the safety model.
"""

from ._audit import AUDIT_KIND, AUDIT_REASON
from ._caller import Caller, ServiceFactory, in_process, remote
from ._http import MCP_PATH, BearerGate, mcp_mount, transport_security
from ._ontology import ONTOLOGY_ENV, Ontology
from ._plans import ChangePlan
from ._redact import REDACTED
from ._server import INSTRUCTIONS, McpSettings, build_server
from ._stdio import USER_AGENT, serve_stdio
from ._tokens import AUDIENCE, TokenClaims, TokenVerifier, create_token, parse_ttl
from ._tools_change import CHANGE_TOOLS

__all__ = [
    "AUDIENCE",
    "AUDIT_KIND",
    "AUDIT_REASON",
    "CHANGE_TOOLS",
    "INSTRUCTIONS",
    "MCP_PATH",
    "ONTOLOGY_ENV",
    "REDACTED",
    "USER_AGENT",
    "BearerGate",
    "Caller",
    "ChangePlan",
    "McpSettings",
    "Ontology",
    "ServiceFactory",
    "TokenClaims",
    "TokenVerifier",
    "build_server",
    "create_token",
    "in_process",
    "mcp_mount",
    "parse_ttl",
    "remote",
    "serve_stdio",
    "transport_security",
]
