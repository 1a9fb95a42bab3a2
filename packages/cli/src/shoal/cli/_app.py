"""The `shoal` command: the typer app with every command module registered."""

from __future__ import annotations

import os
import sys

from . import (
    _cmd_agent,
    _cmd_apply,
    _cmd_audit,
    _cmd_cluster,
    _cmd_config,
    _cmd_images,
    _cmd_instances,
    _cmd_manifests,
    _cmd_mcp,
    _cmd_node,
    _cmd_rollout,
    _cmd_workloads,
)
from ._base import app, err

__all__ = ["app", "main"]

_COMMANDS = (
    _cmd_agent,
    _cmd_apply,
    _cmd_audit,
    _cmd_cluster,
    _cmd_config,
    _cmd_images,
    _cmd_instances,
    _cmd_manifests,
    _cmd_mcp,
    _cmd_node,
    _cmd_rollout,
    _cmd_workloads,
)
"""Imported for their side effect: each registers its commands on ``app``."""

_SERVES_SCHEMAS = {"agent", "mcp"}
"""Commands that serve schemas (OpenAPI, MCP tools), whose descriptions come from field docs."""


def main() -> None:
    """Entry point of the `shoal` command."""
    # httpx imports its own command line (click, pygments, rich.syntax) whenever
    # click is installed; the shoal command never runs it, so skip that import.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: not importable
    if not set(sys.argv[1:]) & _SERVES_SCHEMAS:  # anywhere: `shoal --server X mcp` serves too
        # A client call prints answers and serves no schema: its models need
        # not read their field docstrings (see shoal.interfaces._fielddocs).
        from shoal.interfaces import describe_fields

        describe_fields(False)
    if os.environ.get("SHOAL_DEBUG") == "1":
        app()
        return
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # a bug: say so in one line, never a traceback
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(rerun with SHOAL_DEBUG=1 for details)"
        )
        raise SystemExit(70) from None
