"""Node roles.

In a module of their own, free of pydantic, so that the `shoal` command can
offer them as choices without building any model.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["NodeRole"]


class NodeRole(StrEnum):
    """What a node does: servers schedule, workers run containers."""

    SERVER = "server"
    WORKER = "worker"
    BOTH = "both"
