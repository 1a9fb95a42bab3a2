"""Names a signed client and the REST API share on the wire: headers and the front doors.

Kept apart from the models (and from pydantic), so that a client which only
sends a request and prints the answer (`shoal get`) imports no model at all.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "API_PREFIX",
    "APPLY_PATH",
    "DECLARED_VIAS",
    "IF_MATCH_HEADER",
    "TRACEPARENT_HEADER",
    "TRACERESPONSE_HEADER",
    "VIA_HEADER",
    "Via",
]

API_PREFIX = "/v1"
"""Where the REST API's signed routes live."""
APPLY_PATH = f"{API_PREFIX}/workloads/apply"
"""The apply route: called by the client, served by the API, measured by an SLO."""


class Via(StrEnum):
    """The front door (or the component) a change came through, for events and the audit."""

    REST = "rest"
    """The REST API, called by anything that signs its requests."""
    CLI = "cli"
    """The ``shoal`` command (it calls the REST API and says so in a signed header)."""
    MCP = "mcp"
    """The MCP server: in the agent, or ``shoal mcp`` over stdio (through the REST API)."""
    UI = "ui"
    """The web dashboard at ``/ui``: requests signed in the browser with its own key."""
    CONTROL_LOOP = "control-loop"
    NODE_LOOP = "node-loop"
    SYSTEM = "system"


VIA_HEADER = "shoal-via"
"""The request header in which a signed client says which front door it serves.

The REST API believes it only when the request's signature covers it, and
only for :data:`DECLARED_VIAS`; else the call came via ``rest``.
"""

DECLARED_VIAS = frozenset({Via.CLI, Via.MCP})
"""What a signed client may declare in :data:`VIA_HEADER`."""

IF_MATCH_HEADER = "if-match"
"""The precondition of a change to a workload (:class:`~shoal.interfaces.Expected`), signed."""
TRACEPARENT_HEADER = "traceparent"
"""The W3C Trace Context request header; honoured only for admin callers."""
TRACERESPONSE_HEADER = "traceresponse"
"""The W3C Trace Context Level 2 response header: the trace the server recorded the call in."""
