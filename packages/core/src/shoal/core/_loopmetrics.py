"""What the control loop reports about the cluster: gauges read from its caches, and SLIs.

The leader's caches hold every instance and node, so the gauges of
instances by state, pending instances by reason and gossip members by state
are counted from them when the metrics are scraped (:func:`cluster_samples`),
never kept up to date per change. Every value of a label is reported, zero
included, so the set of series is the same whatever the cluster holds.

:class:`ChangeMetrics` watches instance changes for what only a transition
shows: a restart (``restart_count`` went up) and the reschedule SLI — from an
instance lost with its node to a replacement of the same workload running.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterable

from shoal.interfaces import (
    Catalogue,
    Clock,
    GossipState,
    Instance,
    InstanceState,
    Metrics,
    Node,
    Sample,
    ScheduleFailure,
)

__all__ = ["PENDING_REASONS", "ChangeMetrics", "cluster_samples", "pending_reason"]

PENDING_REASONS = (
    "insufficient_cpu",
    "insufficient_memory",
    "too_many_instances",
    "host_port",
    "constraint",
    "cordoned",
    "node_not_ready",
    "no_nodes",
    "other",
)
"""The ``reason`` label values of ``shoal_pending_instances``."""

_PREFIXES = (
    ("insufficient cpu", "insufficient_cpu"),
    ("insufficient memory", "insufficient_memory"),
    ("too many instances", "too_many_instances"),
    ("host port", "host_port"),
    ("constraint", "constraint"),
    ("node is cordoned", "cordoned"),
    ("node is", "node_not_ready"),
)
_KEEP_LOST = 1000
"""Losses remembered per workload, awaiting a replacement (older ones are dropped)."""


def pending_reason(failure: ScheduleFailure | None) -> str:
    """Return the bounded reason of a placement failure: the one most nodes gave."""
    if failure is None or not failure.nodes:
        return "no_nodes" if failure is not None else "other"
    votes: Counter[str] = Counter()
    for why in failure.nodes.values():
        votes[next((label for prefix, label in _PREFIXES if why.startswith(prefix)), "other")] += 1
    return votes.most_common(1)[0][0]


def cluster_samples(
    instances: Iterable[Instance], nodes: Iterable[Node], queue_depth: int
) -> list[Sample]:
    """Return the leader's gauges: queue depth, instances by state, pending, members."""
    states: Counter[InstanceState] = Counter()
    pending: Counter[str] = Counter()
    for inst in instances:
        states[inst.state] += 1
        if inst.state == InstanceState.PENDING and inst.schedule_failure is not None:
            pending[pending_reason(inst.schedule_failure)] += 1
    members = Counter(node.state for node in nodes)
    samples: list[Sample] = [(Catalogue.WORKQUEUE_DEPTH, ("control",), float(queue_depth))]
    samples += [(Catalogue.INSTANCES, (s.value,), float(states[s])) for s in InstanceState]
    samples += [(Catalogue.PENDING_INSTANCES, (r,), float(pending[r])) for r in PENDING_REASONS]
    samples += [(Catalogue.GOSSIP_MEMBERS, (s.value,), float(members[s])) for s in GossipState]
    return samples


class ChangeMetrics:
    """Counts restarts and times reschedules from the instance changes the leader sees."""

    def __init__(self, clock: Clock, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self._lost: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_KEEP_LOST))
        """Per workload ``namespace/name``: when its instances were lost, oldest first."""

    def instance_changed(self, old: Instance | None, new: Instance | None) -> None:
        """Note one instance change (``None`` for absent before, or deleted)."""
        if new is None or (old is None and new.state != InstanceState.RUNNING):
            return
        workload = f"{new.namespace}/{new.workload}"
        if old is not None and new.restart_count > old.restart_count:
            self.metrics.inc(Catalogue.INSTANCE_RESTARTS)
        if new.state == InstanceState.LOST and (old is None or old.state != InstanceState.LOST):
            self._lost[workload].append(self.clock.monotonic())
        elif new.state == InstanceState.RUNNING and (old is None or old.state != new.state):
            lost = self._lost.get(workload)
            if lost and new.restart_count == 0:
                took = self.clock.monotonic() - lost.popleft()
                self.metrics.observe(Catalogue.RESCHEDULE_DURATION, took)
                if not lost:
                    del self._lost[workload]

    def workload_gone(self, workload: str) -> None:
        """Forget the losses of a deleted workload ``namespace/name``."""
        self._lost.pop(workload, None)
