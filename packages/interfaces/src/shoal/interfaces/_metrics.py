"""Metrics: the catalogue of every series Shoal exports, and the facade that records them.

A metric's name and labels are a contract between the package that records it
(core, the front doors) and the one that exports it (``shoal.agent``, with
``prometheus_client``), so they live here: :class:`MetricSpec` constants on
:class:`Catalogue`, all listed in :data:`METRICS`. docs/observability.md is
the same catalogue for people, and a test holds the two (and the exporter's registry) together.

Code records through the :class:`Metrics` protocol, with label *values*
positional in the order of the spec's ``labels``. Every label has a bounded set
of values (a route template, a tool name, a state): no instance, workload or
node name is ever a label, so the number of series does not grow with the
cluster's churn. :data:`NO_METRICS` records nothing, the default of every
constructor that takes a ``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "METRICS",
    "NO_METRICS",
    "Catalogue",
    "GaugeSource",
    "MetricKind",
    "MetricSpec",
    "Metrics",
    "NullMetrics",
    "Sample",
]


class MetricKind(StrEnum):
    """The Prometheus type of a metric."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: from a store read (a millisecond) to a slow runtime call (seconds)."""
SLOW_BUCKETS = (
    0.05,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Seconds: from a container start (a tenth of a second) to a reschedule after a node loss."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its name, type, help text and label names (values are bounded)."""

    name: str
    """The exported name; counters end in ``_total``, durations in ``_seconds``."""
    kind: MetricKind
    """Counter, gauge or histogram."""
    help: str
    """One line saying what it counts."""
    labels: tuple[str, ...] = ()
    """Label names; values are passed positionally in this order."""
    buckets: tuple[float, ...] = ()
    """Histogram bucket upper bounds, in seconds (histograms only)."""
    known: tuple[tuple[str, ...], ...] = ()
    """Label values known in advance, exported (at zero) before anything is recorded."""


def _histogram(
    name: str,
    help: str,
    labels: tuple[str, ...] = (),
    *,
    slow: bool = False,
    known: tuple[tuple[str, ...], ...] = (),
) -> MetricSpec:
    buckets = SLOW_BUCKETS if slow else LATENCY_BUCKETS
    return MetricSpec(name, MetricKind.HISTOGRAM, help, labels, buckets, known)


def _each(*values: str) -> tuple[tuple[str, ...], ...]:
    return tuple((value,) for value in values)


def _pairs(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple((a, b) for a in first for b in second)


QUEUES = ("control",)
"""The work queues (``queue`` label)."""
NODE_ACTIONS = (
    "start",
    "stop",
    "report_exit",
    "teardown",
    "remove_orphan",
    "kill_unhealthy",
    "set_ready",
    "update_files",
    "wait_for_config",
    "sync",
)
"""What the node loop does (``action`` label)."""
RUNTIME_OPERATIONS = (
    "pull",
    "run",
    "create",
    "start",
    "stop",
    "remove",
    "inspect",
    "list",
    "exec",
    "stats",
    "update_files",
)
"""Container runtime calls (``operation`` label of the runtime series)."""
STORE_OPERATIONS = (
    "get",
    "put",
    "delete",
    "list",
    "revision",
    "txn",
    "grant_lease",
    "keepalive",
    "revoke",
    "resign",
    "leader",
)
"""State store calls (``operation`` label of the store series)."""


class Catalogue:
    """Every metric Shoal exports, by constant name (``Catalogue.LEADER``)."""

    API_REQUEST_DURATION = _histogram(
        "shoal_api_request_duration_seconds",
        "REST requests by route template, method and status code (SLI: API latency per route).",
        ("route", "method", "status"),
    )
    MCP_TOOL_CALLS = MetricSpec(
        "shoal_mcp_tool_calls_total",
        MetricKind.COUNTER,
        "MCP tool calls by tool and outcome (ok, error, refused).",
        ("tool", "outcome"),
    )
    MCP_TOOL_DURATION = _histogram(
        "shoal_mcp_tool_call_duration_seconds", "MCP tool calls' duration by tool.", ("tool",)
    )
    WORKQUEUE_DEPTH = MetricSpec(
        "shoal_workqueue_depth",
        MetricKind.GAUGE,
        "Keys waiting in a work queue for a worker (not those due later: a recheck, a retry).",
        ("queue",),
        known=_each(*QUEUES),
    )
    WORKQUEUE_ADDS = MetricSpec(
        "shoal_workqueue_adds_total",
        MetricKind.COUNTER,
        "Keys queued (a key already waiting is not counted again).",
        ("queue",),
        known=_each(*QUEUES),
    )
    WORKQUEUE_QUEUE_DURATION = _histogram(
        "shoal_workqueue_queue_duration_seconds",
        "How long a key waited in the queue before a worker took it.",
        ("queue",),
        known=_each(*QUEUES),
    )
    WORKQUEUE_WORK_DURATION = _histogram(
        "shoal_workqueue_work_duration_seconds",
        "How long a worker held a key (one reconcile of it).",
        ("queue",),
        known=_each(*QUEUES),
    )
    WORKQUEUE_RETRIES = MetricSpec(
        "shoal_workqueue_retries_total",
        MetricKind.COUNTER,
        "Keys put back after a failure, to be retried with a backoff.",
        ("queue",),
        known=_each(*QUEUES),
    )
    SCHEDULING_ATTEMPTS = MetricSpec(
        "shoal_scheduling_attempts_total",
        MetricKind.COUNTER,
        "Instances the scheduler tried to place, by result (scheduled, unschedulable).",
        ("result",),
        known=_each("scheduled", "unschedulable"),
    )
    SCHEDULING_DURATION = _histogram(
        "shoal_scheduling_duration_seconds", "One scheduling pass (a batch of placement requests)."
    )
    PENDING_INSTANCES = MetricSpec(
        "shoal_pending_instances",
        MetricKind.GAUGE,
        "Instances no node fits, by the reason most nodes gave (leader only).",
        ("reason",),
    )
    NODE_LOOP_ACTIONS = MetricSpec(
        "shoal_node_loop_actions_total",
        MetricKind.COUNTER,
        "What the node loop did to its instances' pods, by action and outcome (ok, error).",
        ("action", "outcome"),
        known=_pairs(NODE_ACTIONS, ("ok", "error")),
    )
    RUNTIME_OPERATION_DURATION = _histogram(
        "shoal_runtime_operation_duration_seconds",
        "Container runtime calls of the node loop by operation (pull, run, stop, remove, ...).",
        ("operation",),
        known=_each(*RUNTIME_OPERATIONS),
    )
    RUNTIME_FAILURES = MetricSpec(
        "shoal_runtime_operation_failures_total",
        MetricKind.COUNTER,
        "Container runtime calls that failed, by operation (a missing pod is an answer).",
        ("operation",),
        known=_each(*RUNTIME_OPERATIONS),
    )
    STORE_OPERATION_DURATION = _histogram(
        "shoal_store_operation_duration_seconds",
        "State store calls by operation (get, put, delete, list, txn, ...).",
        ("operation",),
        known=_each(*STORE_OPERATIONS),
    )
    STORE_FAILURES = MetricSpec(
        "shoal_store_operation_failures_total",
        MetricKind.COUNTER,
        "State store calls that failed, by operation (a lost compare-and-swap is an answer).",
        ("operation",),
        known=_each(*STORE_OPERATIONS),
    )
    GOSSIP_MEMBERS = MetricSpec(
        "shoal_gossip_members",
        MetricKind.GAUGE,
        "Nodes by gossip state (alive, suspect, failed, left), as the leader sees them.",
        ("state",),
    )
    LEADER = MetricSpec(
        "shoal_leader", MetricKind.GAUGE, "1 while this server leads the control loop, else 0."
    )
    INSTANCES = MetricSpec(
        "shoal_instances",
        MetricKind.GAUGE,
        "Instances by lifecycle state, as the leader sees them.",
        ("state",),
    )
    INSTANCE_RESTARTS = MetricSpec(
        "shoal_instance_restarts_total",
        MetricKind.COUNTER,
        "Instances the control loop scheduled again after they ended (restart policy).",
    )
    INSTANCE_OOM_KILLS = MetricSpec(
        "shoal_instance_oom_kills_total",
        MetricKind.COUNTER,
        "Containers of this node's instances killed for using more memory than their limit.",
    )
    INSTANCE_START_DURATION = _histogram(
        "shoal_instance_start_duration_seconds",
        "SLI: an instance's creation to its pod running, image pulls excluded (first starts).",
        slow=True,
    )
    RESCHEDULE_DURATION = _histogram(
        "shoal_reschedule_duration_seconds",
        "SLI: an instance lost with its node to its replacement running (leader only).",
        slow=True,
    )


METRICS: tuple[MetricSpec, ...] = tuple(
    spec for spec in vars(Catalogue).values() if isinstance(spec, MetricSpec)
)
"""Every metric Shoal exports (docs/observability.md lists the same)."""

Sample = tuple[MetricSpec, tuple[str, ...], float]
"""A gauge value read at scrape time: (metric, label values, value)."""
GaugeSource = Callable[[], Iterable[Sample]]
"""Returns gauge values when the metrics are scraped (e.g. instances by state from a cache)."""


@runtime_checkable
class Metrics(Protocol):
    """Records metrics of :data:`METRICS`; label values are positional, in the spec's order."""

    def inc(self, metric: MetricSpec, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter."""
        ...

    def observe(self, metric: MetricSpec, value: float, *labels: str) -> None:
        """Record one observation (seconds) in a histogram."""
        ...

    def set(self, metric: MetricSpec, value: float, *labels: str) -> None:
        """Set a gauge."""
        ...

    def add_source(self, source: GaugeSource) -> Callable[[], None]:
        """Read gauges from ``source`` at every scrape, until the returned function is called.

        The gauges a source reports are cleared before each scrape, so a
        label value it stops reporting disappears.
        """
        ...

    def exposition(self) -> tuple[bytes, str]:
        """Return the metrics in the Prometheus text format, and its content type."""
        ...


class NullMetrics:
    """Records nothing (telemetry off, and the default of every component)."""

    def inc(self, metric: MetricSpec, *labels: str, amount: float = 1.0) -> None:
        """Do nothing."""

    def observe(self, metric: MetricSpec, value: float, *labels: str) -> None:
        """Do nothing."""

    def set(self, metric: MetricSpec, value: float, *labels: str) -> None:
        """Do nothing."""

    def add_source(self, source: GaugeSource) -> Callable[[], None]:
        """Keep nothing; return a function that does nothing."""
        return _nothing

    def exposition(self) -> tuple[bytes, str]:
        """Return an empty exposition."""
        return b"", "text/plain; version=0.0.4; charset=utf-8"


def _nothing() -> None:
    return None


NO_METRICS = NullMetrics()
"""The metrics of a component nobody asked to measure."""
