"""The full `shoal` app: every command module imported, so each has registered its commands.

The entry point (``_main``) imports this only for help, no command or an
unknown one; a named command imports its own module alone.
"""

from __future__ import annotations

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
    _cmd_trace,
    _cmd_workloads,
)
from ._base import app

__all__ = ["app"]

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
    _cmd_trace,
    _cmd_workloads,
)
"""Imported for their side effect: each registers its commands on ``app``."""
