"""The instance: one replica of a workload, placed on one node.

The allowed state changes are a table (:data:`INSTANCE_TRANSITIONS`) that
``ontology/instance.yaml`` mirrors and a test holds the two to::

    pending → scheduled → starting → running → stopping → stopped | failed
                                  any placed state → lost (its node failed)
    stopped | failed → scheduled (restarted on the same node per restart policy)
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Model
from ._errors import InvalidTransition
from ._tracing import TRACE_ID_PATTERN, TRACEPARENT_PATTERN
from ._workload import PodTemplate, RestartPolicy

__all__ = [
    "INSTANCE_STATUS_FIELDS",
    "INSTANCE_TRANSITIONS",
    "PLACED_STATES",
    "Instance",
    "InstanceState",
    "ScheduleFailure",
]

INSTANCE_STATUS_FIELDS = (
    "state",
    "reason",
    "message",
    "ready",
    "ready_since",
    "restart_count",
    "exit_code",
    "container_ids",
    "started_at",
    "finished_at",
    "not_before",
    "start_trace_id",
)
"""The fields of an instance its node reports, and the only ones a worker may write.

A contract between the node loop (``shoal.core``, which reports them) and the
servers' worker scope (``shoal.cluster``, which refuses any other change).
``Instance.transition`` sets state, reason and message; the reports add ready,
exit_code, container_ids, started_at and finished_at, and starting a pod
clears not_before (the restart backoff it waited out) and records
start_trace_id (the trace of that start). restart_count is
status too, though the control loop is the one that counts. Everything else
says what to run, where and as whom: the control loop's.
"""


class InstanceState(StrEnum):
    """Lifecycle state of an instance."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"


_S = InstanceState

INSTANCE_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    _S.PENDING: frozenset({_S.SCHEDULED, _S.STOPPED}),
    _S.SCHEDULED: frozenset({_S.STARTING, _S.STOPPING, _S.FAILED, _S.LOST}),
    _S.STARTING: frozenset({_S.RUNNING, _S.STOPPING, _S.STOPPED, _S.FAILED, _S.LOST}),
    _S.RUNNING: frozenset({_S.STOPPING, _S.STOPPED, _S.FAILED, _S.LOST}),
    _S.STOPPING: frozenset({_S.STOPPED, _S.FAILED, _S.LOST}),
    _S.STOPPED: frozenset({_S.SCHEDULED}),
    _S.FAILED: frozenset({_S.SCHEDULED, _S.STOPPED}),
    _S.LOST: frozenset(),
}
"""For each state, the states it may move to. ``lost`` is terminal: it is replaced."""

PLACED_STATES = frozenset({_S.SCHEDULED, _S.STARTING, _S.RUNNING, _S.STOPPING})


class ScheduleFailure(Model):
    """Why the scheduler could not place an instance, per node."""

    message: str
    """Summary, e.g. '0/3 nodes fit: 2 insufficient cpu, 1 cordoned'."""
    nodes: dict[str, str] = Field(default_factory=dict)
    """Node name → the filter that rejected it."""


class Instance(Model):
    """One replica of a workload on one node."""

    name: str
    """Unique within the namespace: the workload's name and a suffix."""
    namespace: str
    """Namespace of its workload."""
    uid: str
    """Unique id; runtimes label containers with it."""
    workload: str
    """Name of the workload it belongs to."""
    workload_uid: str
    """Uid of that workload object."""
    generation: int
    """The workload generation whose template this instance runs."""
    revision: int = 0
    """The workload revision (see ``Workload.revisions``) whose template this instance runs."""
    template: PodTemplate
    """The pod this instance runs (a snapshot of the workload's template)."""
    restart_policy: RestartPolicy
    """Copied from the workload."""
    node: str | None = None
    """The node it is placed on; None while pending."""
    state: InstanceState = InstanceState.PENDING
    """Lifecycle state."""
    deleting: bool = False
    """Set when the instance should be stopped and removed."""
    ready: bool = False
    """Running and passing its readiness probes."""
    ready_since: datetime | None = None
    """When it last became ready (a rollout counts it available ``min_ready_seconds`` later)."""
    restart_count: int = 0
    """How many restarts it was given on its node. Counted when the control loop decides
    one: while it waits out its backoff (scheduled, ``not_before`` set), the restart it
    waits for is counted already."""
    exit_code: int | None = None
    """Exit code of the last finished run."""
    reason: str = ""
    """One-word cause of the current state, e.g. 'Scheduled', 'CrashLoopBackOff'."""
    message: str = ""
    """What a human should know about the current state."""
    not_before: datetime | None = None
    """A restart waits until this time (exponential backoff)."""
    schedule_failure: ScheduleFailure | None = None
    """Set while pending: why no node fits."""
    container_ids: dict[str, str] = Field(default_factory=dict)
    """Container name → runtime container id."""
    trace_context: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)
    """The W3C ``traceparent`` of the request that caused this instance (copied from its
    workload's when the control loop made it): its node's spans link to it."""
    start_trace_id: str | None = Field(default=None, pattern=TRACE_ID_PATTERN)
    """The trace of the node's last start of this instance (pull, create, start), for
    ``get_trace``; None before the first start or without tracing."""
    created_at: datetime
    """When the control loop created it."""
    placed_at: datetime | None = None
    """When the control loop placed it on a node, if not as it created it (it waited for
    room): the start SLI counts from then, as Kubernetes' counts schedulable pods only."""
    started_at: datetime | None = None
    """When its containers last started."""
    finished_at: datetime | None = None
    """When its containers last finished."""

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def transition(self, to: InstanceState, reason: str, message: str = "") -> Instance:
        """Return a copy in state ``to``.

        Raises:
            InvalidTransition: the transition table does not allow it.

        """
        if to != self.state and to not in INSTANCE_TRANSITIONS[self.state]:
            raise InvalidTransition(
                f"instance {self.key} cannot go from {self.state} to {to}",
                instance=self.key,
                current=self.state.value,
                requested=to.value,
            )
        return self.model_copy(update={"state": to, "reason": reason, "message": message})
