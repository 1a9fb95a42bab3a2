"""Usage history: what each node samples of its instances' CPU, memory and restarts.

A node samples every instance it runs, and itself, every
:data:`USAGE_FINE_STEP` seconds into a bounded table on its own disk (the
:class:`UsageHistory` protocol; ``shoal.state.SqliteUsageHistory`` keeps it in
``DATA_DIR/usage.db``). Samples of the last :data:`USAGE_FINE_KEEP` seconds
are kept at that resolution; each whole minute is rolled up into one
:data:`USAGE_COARSE_STEP` point kept for :data:`USAGE_COARSE_KEEP` seconds.
The table never holds more than :data:`USAGE_ROW_CAP` rows: past it, the
oldest rows go first.

Front doors ask for a :data:`UsageRange` and get a :class:`UsageSeries`;
:func:`summarize_usage` makes the bounded :class:`UsageSummary` that the CLI
prints and the MCP tool returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, get_args, runtime_checkable

from pydantic import Field

from ._base import Model
from ._errors import InvalidInput

__all__ = [
    "USAGE_COARSE_KEEP",
    "USAGE_COARSE_STEP",
    "USAGE_DEFAULT_RANGE",
    "USAGE_FINE_KEEP",
    "USAGE_FINE_STEP",
    "USAGE_RANGES",
    "USAGE_ROW_CAP",
    "USAGE_SUMMARY_POINTS",
    "UsageHistory",
    "UsageKind",
    "UsagePoint",
    "UsageQuery",
    "UsageRange",
    "UsageSample",
    "UsageSeries",
    "UsageStat",
    "UsageSummary",
    "check_usage_range",
    "summarize_usage",
    "usage_range_seconds",
]

UsageRange = Literal["15m", "1h", "6h", "24h"]
"""How far back a usage query looks."""

UsageKind = Literal["instance", "node"]
"""What a usage series is about: one instance (by namespace/name) or one node."""

USAGE_RANGES: tuple[UsageRange, ...] = get_args(UsageRange)
"""The ranges a usage query accepts, shortest first."""
USAGE_DEFAULT_RANGE: UsageRange = "1h"
"""The range of a usage query that names none."""

_RANGE_SECONDS: dict[str, int] = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}

USAGE_FINE_STEP = 10
"""Seconds between two samples of one instance (the fine resolution)."""
USAGE_FINE_KEEP = 3600
"""Seconds fine samples are kept (ranges up to this long are answered at the fine step)."""
USAGE_COARSE_STEP = 60
"""Seconds one rolled-up point covers (the average of that minute's samples)."""
USAGE_COARSE_KEEP = 24 * 3600
"""Seconds rolled-up points are kept."""
USAGE_ROW_CAP = 250_000
"""Most rows a node's usage table holds (about 20 MB on disk): a full day of one series is
360 fine + 1,440 rolled-up rows, so about 135 instances keep their whole day; past the cap
the oldest rows are pruned first, so history gets shorter, never the table bigger."""
USAGE_SUMMARY_POINTS = 24
"""Most points a :class:`UsageSummary` carries (so an agent's context stays small)."""


def usage_range_seconds(span: str) -> int:
    """Return the seconds a range covers.

    Raises:
        InvalidInput: not one of :data:`USAGE_RANGES` (the message lists them).
    """
    return _RANGE_SECONDS[check_usage_range(span)]


def check_usage_range(span: str) -> UsageRange:
    """Return ``span`` as a :data:`UsageRange`.

    Raises:
        InvalidInput: not one of :data:`USAGE_RANGES` (the message lists them).
    """
    for accepted in USAGE_RANGES:
        if span == accepted:
            return accepted
    raise InvalidInput(
        f"range {span!r} is not one of {', '.join(USAGE_RANGES)}; pick one of those",
        field="range",
    )


class UsageSample(Model):
    """One measurement of one instance or node, as a node records it."""

    kind: UsageKind
    """instance or node."""
    key: str
    """'namespace/name' for an instance, the node name for a node."""
    at: datetime
    """When it was taken (the node's clock)."""
    cpu_millicores: int = 0
    """CPU in use, summed over the instance's containers (or the node's instances)."""
    memory_bytes: int = 0
    """Memory in use, summed the same way."""
    restarts: int = 0
    """The instance's restart count (for a node: the sum over its instances)."""


class UsagePoint(Model):
    """One point of a usage series: a fine sample, or the average of one minute's."""

    at: datetime
    """Start of the interval the point covers."""
    cpu_millicores: int = 0
    """CPU in use (averaged over the interval)."""
    memory_bytes: int = 0
    """Memory in use (averaged over the interval)."""
    restarts: int = 0
    """Restart count at the end of the interval."""


class UsageSeries(Model):
    """The usage history of one instance or node over a range."""

    kind: UsageKind
    """instance or node."""
    name: str
    """The instance's or the node's name."""
    namespace: str = ""
    """The instance's namespace ('' for a node)."""
    node: str = ""
    """The node that sampled it."""
    range: UsageRange = USAGE_DEFAULT_RANGE
    """How far back it goes."""
    step_seconds: int = USAGE_FINE_STEP
    """Seconds between points (10 up to 1h, 60 beyond)."""
    cpu_limit_millicores: int = 0
    """The CPU limit (instance: of all its containers; node: its capacity); 0 means none."""
    memory_limit_bytes: int = 0
    """The memory limit, the same way; 0 means none."""
    points: list[UsagePoint] = Field(default_factory=list)
    """Oldest first; gaps where nothing was sampled (not running, node down)."""


class UsageStat(Model):
    """Minimum, average, maximum and latest of one measure over a range."""

    min: int = 0
    """Smallest value."""
    avg: int = 0
    """Average value."""
    max: int = 0
    """Largest value."""
    last: int = 0
    """Latest value."""


class UsageSummary(Model):
    """A bounded digest of a :class:`UsageSeries`: what an agent or a terminal needs."""

    kind: UsageKind
    """instance or node."""
    name: str
    """The instance's or the node's name."""
    namespace: str = ""
    """The instance's namespace ('' for a node)."""
    node: str = ""
    """The node that sampled it."""
    range: UsageRange = USAGE_DEFAULT_RANGE
    """How far back it goes."""
    samples: int = 0
    """How many points the range holds (0: nothing sampled yet)."""
    cpu_millicores: UsageStat = UsageStat()
    """CPU over the range."""
    memory_bytes: UsageStat = UsageStat()
    """Memory over the range."""
    cpu_limit_millicores: int = 0
    """The CPU limit; 0 means none."""
    memory_limit_bytes: int = 0
    """The memory limit; 0 means none."""
    cpu_peak_of_limit: float | None = None
    """The CPU maximum as a fraction of the limit (None without a limit)."""
    memory_peak_of_limit: float | None = None
    """The memory maximum as a fraction of the limit (None without a limit)."""
    restarts: int = 0
    """Restarts within the range."""
    step_seconds: int = 0
    """Seconds each of ``points`` covers (the series' step, widened to fit the bound)."""
    points: list[UsagePoint] = Field(default_factory=list)
    """At most USAGE_SUMMARY_POINTS points, oldest first: each the average of its interval
    (restarts: the count at its end)."""


def _stat(values: Sequence[int]) -> UsageStat:
    if not values:
        return UsageStat()
    return UsageStat(
        min=min(values), avg=round(sum(values) / len(values)), max=max(values), last=values[-1]
    )


def summarize_usage(series: UsageSeries, max_points: int = USAGE_SUMMARY_POINTS) -> UsageSummary:
    """Digest ``series`` into min/avg/max/last, against its limits, with at most ``max_points``."""
    points = series.points
    cpu = [p.cpu_millicores for p in points]
    memory = [p.memory_bytes for p in points]
    per = max(1, -(-len(points) // max(1, max_points)))
    merged = [
        UsagePoint(
            at=chunk[0].at,
            cpu_millicores=round(sum(p.cpu_millicores for p in chunk) / len(chunk)),
            memory_bytes=round(sum(p.memory_bytes for p in chunk) / len(chunk)),
            restarts=chunk[-1].restarts,
        )
        for chunk in (points[i : i + per] for i in range(0, len(points), per))
    ]
    cpu_stat, memory_stat = _stat(cpu), _stat(memory)
    cpu_limit, memory_limit = series.cpu_limit_millicores, series.memory_limit_bytes
    return UsageSummary(
        kind=series.kind,
        name=series.name,
        namespace=series.namespace,
        node=series.node,
        range=series.range,
        samples=len(points),
        cpu_millicores=cpu_stat,
        memory_bytes=memory_stat,
        cpu_limit_millicores=cpu_limit,
        memory_limit_bytes=memory_limit,
        cpu_peak_of_limit=round(cpu_stat.max / cpu_limit, 3) if cpu_limit else None,
        memory_peak_of_limit=round(memory_stat.max / memory_limit, 3) if memory_limit else None,
        restarts=points[-1].restarts - points[0].restarts if points else 0,
        step_seconds=series.step_seconds * per,
        points=merged,
    )


@runtime_checkable
class UsageQuery(Protocol):
    """Reads a node's usage history: its own table, or another node's over the network."""

    async def query(
        self, kind: UsageKind, key: str, span: UsageRange, now: datetime
    ) -> tuple[int, list[UsagePoint]]:
        """Return the step in seconds and the points of one series over ``span`` before ``now``.

        Ranges up to USAGE_FINE_KEEP come at the fine step, longer ones at the
        coarse step (a minute not yet rolled up is rolled up from its fine samples).

        Raises:
            Unavailable: the table cannot be read, or its node cannot be reached.
        """
        ...


@runtime_checkable
class UsageHistory(UsageQuery, Protocol):
    """A node's bounded table of usage samples (see the module docstring for the bounds)."""

    async def record(self, samples: Sequence[UsageSample]) -> None:
        """Store one round of fine samples, roll whole minutes up, prune by age and by cap.

        Raises:
            Unavailable: the table cannot be written.
        """
        ...

    async def rows(self) -> int:
        """Return how many rows the table holds (never more than its cap)."""
        ...

    async def aclose(self) -> None:
        """Close the table."""
        ...
