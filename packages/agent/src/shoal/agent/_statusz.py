"""What the agent answers at ``GET /v1/statusz``, with the secrets of its configuration redacted.

:func:`redact_config` shows the configuration as the node runs it (defaults
filled in) with two kinds of value hidden: a field named like a secret
(token, password, secret, key, credential) that holds a value rather than
the path of a file, and the user and password of an address
(``https://user:pass@host``). Paths of secret files are shown: they say where
a secret is, not what it is.

:func:`slo_statuses` measures each of :data:`~shoal.interfaces.SLOS` from
the node's own histograms, over its life (the quantile interpolated within
a bucket, as PromQL's ``histogram_quantile`` does).
"""

from __future__ import annotations

import re
from datetime import UTC
from importlib import metadata
from typing import Any

from shoal.core import LEADER_ELECTION
from shoal.interfaces import (
    NO_METRICS,
    REDACTED_VALUE,
    SLOS,
    Clock,
    Metrics,
    SloStatus,
    StateStore,
    Statusz,
    StatuszSource,
)

from ._config import NodeConfig
from ._metrics import PrometheusMetrics

__all__ = ["redact_config", "slo_statuses", "statusz_source"]

_SECRET_NAME = re.compile(
    r"token|passw|pwd|secret|credential|auth|private|apikey|(^|[_-])key($|[_-])", re.IGNORECASE
)
"""Names whose text values statusz shows redacted (config fields, node labels); a path to a
secret (``*_file``, ``*_path``, ``*_keyring``) is shown."""
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def _version() -> str:
    try:
        return metadata.version("shoal-agent")
    except metadata.PackageNotFoundError:
        return "unknown"


def _redact(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(name, item) for item in value]
    if isinstance(value, str):
        if _SECRET_NAME.search(name) and not name.endswith(("_file", "_path", "_keyring")):
            return REDACTED_VALUE
        return _USERINFO.sub(rf"\g<scheme>{REDACTED_VALUE}@", value)
    return value


def redact_config(fields: dict[str, Any]) -> dict[str, Any]:
    """Return ``fields`` (JSON values) with secret values and address credentials redacted."""
    return {name: _redact(name, value) for name, value in fields.items()}


def slo_statuses(metrics: Metrics) -> list[SloStatus]:
    """Return each of :data:`~shoal.interfaces.SLOS` as ``metrics`` measured it (none without)."""
    if not isinstance(metrics, PrometheusMetrics):
        return []
    statuses = []
    observations = metrics.quantiles([(slo.metric, slo.quantile, slo.labels) for slo in SLOS])
    for slo, observed in zip(SLOS, observations, strict=True):
        statuses.append(
            SloStatus(
                name=slo.name,
                objective_seconds=slo.objective_seconds,
                observed_seconds=None if observed is None else round(observed, 4),
                met=None if observed is None else observed <= slo.objective_seconds,
            )
        )
    return statuses


def statusz_source(
    config: NodeConfig, store: StateStore, clock: Clock, metrics: Metrics = NO_METRICS
) -> StatuszSource:
    """Return what answers ``GET /v1/statusz`` for the node run from ``config``.

    ``store`` is the node's :class:`~shoal.interfaces.StateStore` (asked who
    leads); the clock starts now; ``metrics`` are the histograms the SLOs are
    measured from.
    """
    started_at = clock.now().astimezone(UTC)
    started = clock.monotonic()
    version = _version()
    shown = redact_config(config.model_dump(mode="json"))

    async def statusz() -> Statusz:
        leader = await store.leader(LEADER_ELECTION)
        return Statusz(
            version=version,
            node=config.name,
            role=config.role,
            started_at=started_at,
            uptime_seconds=round(clock.monotonic() - started, 3),
            leader=leader,
            leading=leader == config.name,
            store=config.state,
            runtime=config.runtime,
            config=shown,
            slos=slo_statuses(metrics),
        )

    return statusz
