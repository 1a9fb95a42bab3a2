"""``GET /v1/statusz``: what a node is, how long it has run, who leads, how it is configured.

The model is shared by the API (which serves it) and the agent (which fills
it in); the configuration it carries is already redacted by the agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ._base import Model
from ._roles import NodeRole

__all__ = ["REDACTED_VALUE", "Statusz", "StatuszSource"]

REDACTED_VALUE = "<redacted>"
"""What a secret in :attr:`Statusz.config` is shown as."""


class Statusz(Model):
    """One node's identity, uptime, role, leader, store and effective configuration."""

    version: str
    """The Shoal version the node runs."""
    node: str
    """The node's name."""
    role: NodeRole
    """server, worker or both."""
    started_at: datetime
    """When the agent started (UTC)."""
    uptime_seconds: float
    """Seconds since the agent started."""
    leader: str | None
    """The server that leads the control loop now; None while nobody does."""
    leading: bool
    """Whether this node is that leader."""
    store: str
    """The state store backend: sqlite, memory or etcd."""
    runtime: str
    """The container runtime: runc, crun, youki, cri, or mock."""
    config: dict[str, Any]
    """The effective configuration, defaults filled in; secrets shown as '<redacted>'."""


StatuszSource = Callable[[], Awaitable[Statusz]]
"""Returns the node's status now (the agent gives one to the API)."""
