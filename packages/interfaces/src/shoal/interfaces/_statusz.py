"""``GET /v1/statusz``: what a node is, how long it has run, who leads, how it is configured.

The model is shared by the API (which serves it) and the agent (which fills
it in); the configuration it carries is already redacted by the agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import Field

from ._base import Model
from ._metrics import Catalogue, MetricSpec
from ._roles import NodeRole
from ._wire import APPLY_PATH

__all__ = ["REDACTED_VALUE", "SLOS", "Slo", "SloStatus", "Statusz", "StatuszSource"]

REDACTED_VALUE = "<redacted>"
"""What a secret in :attr:`Statusz.config` is shown as."""


@dataclass(frozen=True)
class Slo:
    """A service-level objective: a quantile of an SLI histogram held under a bound."""

    name: str
    """What it promises, for people: 'instance start p99 <= 5 s'."""
    metric: MetricSpec
    """The SLI histogram (a name of :class:`~shoal.interfaces.Catalogue`)."""
    quantile: float
    """0.99 for p99."""
    objective_seconds: float
    """The bound the quantile must stay under."""
    labels: dict[str, str] = field(default_factory=dict)
    """Only the series with these labels (e.g. one API route)."""


SLOS: tuple[Slo, ...] = (
    # The Kubernetes pod-startup SLO: stateless pods, image pulls excluded, p99 within 5 s.
    Slo("instance start p99 <= 5 s", Catalogue.INSTANCE_START_DURATION, 0.99, 5.0),
    # Kubernetes' API-call SLO for a mutating single-object call is p99 within 1 s; an apply
    # is Shoal's most common change. Streams and exec are left out: they last on purpose.
    Slo(
        "apply p99 <= 1 s",
        Catalogue.API_REQUEST_DURATION,
        0.99,
        1.0,
        {"route": APPLY_PATH, "method": "POST"},
    ),
    # Failure detection (gossip) and a new start: within a minute of losing a node.
    Slo("reschedule after a node loss p99 <= 60 s", Catalogue.RESCHEDULE_DURATION, 0.99, 60.0),
)
"""The objectives the overview and ``GET /v1/statusz`` report against (see
docs/observability.md); measured over the node's life, from its own histograms."""


class SloStatus(Model):
    """How one SLO stands on this node."""

    name: str
    """The objective, e.g. 'instance start p99 <= 5 s'."""
    objective_seconds: float
    """The bound."""
    observed_seconds: float | None = None
    """The quantile as estimated from the histogram's buckets; None before any observation."""
    met: bool | None = None
    """Whether the observed quantile is within the objective; None without observations."""


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
    slos: list[SloStatus] = Field(default_factory=list)
    """Each of :data:`SLOS` as this node measured it since it started (empty without metrics)."""


StatuszSource = Callable[[], Awaitable[Statusz]]
"""Returns the node's status now (the agent gives one to the API)."""
