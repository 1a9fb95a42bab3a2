"""The ``shoal://manifests`` resource: the files of the node's watched manifests directories.

=====================  ================  ==============================================
URI                    type              content
=====================  ================  ==============================================
``shoal://manifests``  application/json  per file: path, content hash, when applied, the
                                         objects it owns, its error, warnings, conflicts
=====================  ================  ==============================================
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import MCPServer

from ._audit import Gate
from ._resources import JSON, _guarded

__all__ = ["MANIFESTS_URI", "register_manifests_resource"]

MANIFESTS_URI = "shoal://manifests"


def register_manifests_resource(server: MCPServer[Any], gate: Gate) -> None:
    """Register ``shoal://manifests`` on ``server``."""

    @server.resource(
        MANIFESTS_URI,
        name="manifests",
        title="Shoal watched manifests",
        description="The files of the node's watched manifests directories (shoal agent "
        "--manifests): per file its path, content hash, when it was applied, the objects it "
        "owns, and its error (its last good objects keep running), warnings and conflicts.",
        mime_type=JSON,
    )
    async def manifests_document() -> str:
        async def read() -> str:
            sources = await gate.services(gate.default_caller).list_manifests()
            document = {"manifests": [source.model_dump(mode="json") for source in sources]}
            return json.dumps(document, indent=2)

        return await _guarded(read)
