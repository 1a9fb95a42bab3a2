"""What the tools return: compact pydantic views, sized for an agent's context.

Lists return one-line summaries (an agent asks for the full object when it
needs it); full objects have their secrets redacted. Field docstrings become
the tools' output schema descriptions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import ConfigDict, Field

from shoal.interfaces import (
    PLACED_STATES,
    ContainerStats,
    Event,
    Instance,
    InstanceState,
    LogLine,
    Member,
    Node,
    PlannedChange,
    ScheduleFailure,
    Workload,
    WorkloadPhase,
    format_cpu,
    format_memory,
)

from ._hints import as_tool_calls
from ._redact import redact_model
from ._schema import SelfContained

__all__ = [
    "DETAIL_INSTANCES",
    "Applied",
    "ClusterStatus",
    "ContainerStatsList",
    "Diagnosis",
    "EventList",
    "InstanceList",
    "InstanceSummary",
    "LogResult",
    "MemberList",
    "NodeChanged",
    "NodeDetail",
    "NodeList",
    "NodeSummary",
    "Page",
    "WorkloadChanged",
    "WorkloadDetail",
    "WorkloadList",
    "WorkloadSummary",
    "count_by",
    "node_summaries",
]

DETAIL_INSTANCES = 100
"""The most instances a workload's detail view lists (a workload may have 10,000)."""


class Model(SelfContained):
    """A view: attribute docstrings describe its fields in a self-contained output schema."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class InstanceSummary(Model):
    """One replica, in one line."""

    name: str
    """Instance name (use it with explain_instance and get_logs)."""
    namespace: str
    """Namespace."""
    workload: str
    """The workload it belongs to."""
    node: str | None
    """The node it is placed on; null while pending."""
    state: InstanceState
    """pending, scheduled, starting, running, stopping, stopped, failed or lost."""
    ready: bool
    """Running and passing its readiness probes."""
    restart_count: int
    """Restarts on its node."""
    exit_code: int | None
    """Exit code of the last finished run."""
    reason: str
    """One-word cause of the current state."""
    message: str
    """What to know about the current state."""

    @classmethod
    def of(cls, inst: Instance) -> InstanceSummary:
        """Summarise ``inst``."""
        return cls(
            name=inst.name,
            namespace=inst.namespace,
            workload=inst.workload,
            node=inst.node,
            state=inst.state,
            ready=inst.ready,
            restart_count=inst.restart_count,
            exit_code=inst.exit_code,
            reason=inst.reason,
            message=inst.message,
        )


class Page(Model):
    """The first ``limit`` items of a list, and how many there were."""

    total: int
    """How many matched; the list holds the first of them, up to the call's limit."""
    truncated: bool
    """True when the list leaves some out (total is larger): narrow the call's filters."""


class InstanceList(Page):
    """Instances matching a filter."""

    instances: list[InstanceSummary]
    """The instances, by namespace and name."""
    by_state: dict[str, int]
    """How many of those the namespace, workload and node filters match are in each state
    (whatever state and limit leave out)."""


class WorkloadSummary(Model):
    """One workload, in one line."""

    name: str
    """Workload name."""
    namespace: str
    """Namespace."""
    phase: WorkloadPhase
    """pending, progressing, running, degraded or deleting."""
    replicas: int
    """Desired instances: ``replicas``, a daemon's eligible nodes, a job's runs at once."""
    ready_replicas: int
    """Instances running and ready."""
    generation: int
    """Spec version; observed_generation below it means a change is still rolling out."""
    observed_generation: int
    """The generation the control loop last acted on."""
    images: list[str]
    """Container images."""
    deleting: bool
    """Deletion requested; its instances are stopping."""

    @classmethod
    def of(cls, workload: Workload) -> WorkloadSummary:
        """Summarise ``workload``."""
        return cls(
            name=workload.name,
            namespace=workload.namespace,
            phase=workload.status.phase,
            replicas=workload.wanted_replicas,
            ready_replicas=workload.status.ready_replicas,
            generation=workload.generation,
            observed_generation=workload.status.observed_generation,
            images=[c.image for c in workload.spec.template.containers],
            deleting=workload.deleting,
        )


class WorkloadList(Page):
    """Workloads, by namespace and name."""

    workloads: list[WorkloadSummary]
    """One line per workload."""


class WorkloadDetail(Model):
    """A workload in full (secret env values redacted) and its instances."""

    workload: Workload
    """Spec, identity, generation and status.

    Secret env values read '<redacted>'; applying them back unchanged keeps the stored values.
    """
    instances: list[InstanceSummary]
    """Its instances, the first DETAIL_INSTANCES of them by name."""
    instances_total: int
    """How many instances it has; list_instances(workload=..., state=...) shows the rest."""

    @classmethod
    def of(cls, workload: Workload, instances: Sequence[Instance]) -> WorkloadDetail:
        """Build the detail view, redacting secrets."""
        return cls(
            workload=redact_model(workload),
            instances=[InstanceSummary.of(i) for i in instances[:DETAIL_INSTANCES]],
            instances_total=len(instances),
        )


class NodeSummary(Model):
    """One node and what is placed on it."""

    name: str
    """Node name."""
    state: str
    """Gossip state: alive, suspect, failed or left."""
    role: str
    """server, worker or both."""
    schedulable: bool
    """Whether new instances may be placed here."""
    cordoned: bool
    """No new placements."""
    draining: bool
    """Instances are being moved off."""
    cpu: str = Field(description="CPU requested / allocatable, e.g. '1500m / 4'.")
    memory: str = Field(description="Memory requested / allocatable, e.g. '1Gi / 8Gi'.")
    instances: int
    """Instances placed here."""


def node_summaries(nodes: Sequence[Node], instances: Sequence[Instance]) -> list[NodeSummary]:
    """Summarise ``nodes`` with the requests of the instances placed on each."""
    cpu: Counter[str] = Counter()
    memory: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for inst in instances:
        if inst.node is None or inst.state not in PLACED_STATES:
            continue
        requests = inst.template.requests()
        cpu[inst.node] += requests.cpu
        memory[inst.node] += requests.memory
        count[inst.node] += 1
    return [
        NodeSummary(
            name=n.name,
            state=n.state.value,
            role=n.role.value,
            schedulable=n.schedulable,
            cordoned=n.cordoned,
            draining=n.draining,
            cpu=f"{format_cpu(cpu[n.name])} / {format_cpu(n.allocatable.cpu)}",
            memory=f"{format_memory(memory[n.name])} / {format_memory(n.allocatable.memory)}",
            instances=count[n.name],
        )
        for n in nodes
    ]


class NodeList(Page):
    """Nodes, by name."""

    nodes: list[NodeSummary]
    """One line per node."""


class MemberList(Page):
    """The gossip members the server's node knows, sorted by name."""

    members: list[Member]
    """Each with its gossip address, state and tags (id, role, api, grpc, cpu, mem, pods,
    l.LABEL; cid on servers; bye while leaving)."""


class NodeDetail(Model):
    """A node in full and the instances placed on it."""

    node: Node
    """The node record: addresses, labels, capacity, state."""
    usage: NodeSummary
    """Requested versus allocatable resources."""
    instances: list[InstanceSummary]
    """Instances on this node."""


class ClusterStatus(Model):
    """The cluster at a glance: start here."""

    healthy: bool
    """True when no problem below needs attention."""
    problems: list[str]
    """What needs attention, most important first (at most 20)."""
    nodes: list[NodeSummary]
    """Every node with its load."""
    workloads_by_phase: dict[str, int]
    """Workload count per phase."""
    instances_by_state: dict[str, int]
    """Instance count per state."""


class EventList(Model):
    """Events, oldest first."""

    events: list[Event]
    """What happened, who did it (actor) and why (reason, message)."""


class LogResult(Model):
    """The last log lines of one container, filtered and capped."""

    instance: str
    """Instance name."""
    container: str | None
    """Container the lines come from (the first one unless one was asked for)."""
    previous: bool = False
    """True: the lines are of the previous run (kept when the instance started again)."""
    lines: list[LogLine]
    """Matching lines, oldest first; secret values are redacted."""
    truncated: bool
    """True when older matching lines were left out to respect tail or max_bytes."""
    note: str = ""
    """What was filtered or left out, and how to see more."""


class Diagnosis(Model):
    """Why an instance is where it is: state, scheduler reasons, events and logs together."""

    instance: InstanceSummary
    """The instance."""
    summary: str
    """One sentence: its state and why."""
    details: list[str]
    """Supporting facts and suggested fixes, most important first."""
    schedule_failure: ScheduleFailure | None
    """For a pending instance: why each node was rejected."""
    events: list[Event]
    """Its latest events (and its workload's), newest last."""
    log_tail: list[str]
    """Its last log lines (secret values redacted)."""
    logs_note: str = ""
    """Why there are no log lines, when there are none."""
    previous_log_tail: list[str] = Field(default_factory=list)
    """For an instance that restarted: the last lines of the run before, often why it ended,
    of each container that wrote (prefixed 'NAME: ' when several did; secret values redacted;
    get_logs with previous and container for more)."""
    start_trace_id: str | None = None
    """The trace of its last start (pull, create, start): pass it to get_trace."""
    cause_trace_id: str | None = None
    """The trace of the request that caused it (an apply, a scale): pass it to get_trace."""


class ContainerStatsList(Model):
    """Resource use of a running instance's containers."""

    containers: list[ContainerStats]
    """One entry per container."""


class WorkloadChanged(Model):
    """A change made to one workload."""

    summary: str
    """What was done."""
    confirmed: str
    """How the change was authorised: 'plan', 'elicitation' or 'not destructive'."""
    workload: WorkloadSummary
    """The workload after the change (the control loop converges from here)."""
    trace_id: str | None = None
    """The trace of this call: get_trace shows it and the work it caused (placement, starts)."""


class NodeChanged(Model):
    """A change made to one node."""

    summary: str
    """What was done."""
    confirmed: str
    """How the change was authorised: 'plan', 'elicitation' or 'not destructive'."""
    node: NodeSummary
    """The node after the change."""
    trace_id: str | None = None
    """The trace of this call: get_trace shows it and the work it caused (placement, starts)."""


class Applied(Model):
    """The outcome of an apply."""

    plan_id: str
    """The id of the plan that was applied."""
    summary: str
    """What was done."""
    confirmed: str
    """How the apply was authorised: 'plan', 'elicitation' or 'not destructive'."""
    changes: list[PlannedChange]
    """Per object: create, update or unchanged, with the changed fields (secrets redacted)."""
    workloads: list[WorkloadSummary]
    """The stored workloads (list_instances shows their instances as they converge)."""
    config: list[str] = Field(default_factory=list)
    """The ConfigMaps, Secrets and Namespaces applied, as 'Kind namespace/name'."""
    warnings: list[str] = Field(default_factory=list)
    """What Shoal did not honour in the documents (kinds, fields), per object: not applied."""
    trace_id: str | None = None
    """The trace of this call: get_trace shows it and the work it caused (placement, starts)."""


def count_by(values: Iterable[str]) -> dict[str, int]:
    """Return how often each value occurs, sorted by value."""
    return dict(sorted(Counter(values).items()))


class RevisionSummary(Model):
    """One kept revision of a workload."""

    number: int
    """Revision number; undo_rollout takes it."""
    current: bool
    """Whether this is the workload's template now."""
    template_hash: str
    """Short hash of the template."""
    images: list[str]
    """Its container images."""
    created_at: datetime
    """When it became the template."""
    cause: str
    """What made it (apply, undo, auto-revert)."""


class RolloutView(Model):
    """Where a workload's rollout stands, and the revisions it can go back to."""

    name: str
    """Workload name."""
    namespace: str
    """Namespace."""
    revision: int
    """The current revision (the template instances are moving to)."""
    replicas: int
    """Desired instances: ``replicas``, a daemon's eligible nodes, a job's runs at once."""
    updated_replicas: int
    """Instances running the current template."""
    available_replicas: int
    """Instances ready for at least min_ready_seconds."""
    total_replicas: int
    """Instances of any template that are not being deleted."""
    state: str
    """RolloutComplete, RollingOut, RolloutPaused, ProgressDeadlineExceeded or Waiting."""
    message: str
    """The rollout condition's message."""
    complete_revision: int
    """The last revision whose rollout completed."""
    revisions: list[RevisionSummary]
    """Kept revisions, oldest first."""

    @classmethod
    def of(cls, workload: Workload) -> RolloutView:
        """Describe ``workload``'s rollout."""
        status = workload.status
        condition = next((c for c in status.conditions if c.type == "Progressing"), None)
        return cls(
            name=workload.name,
            namespace=workload.namespace,
            revision=workload.revision,
            replicas=workload.wanted_replicas,
            updated_replicas=status.updated_replicas,
            available_replicas=status.available_replicas,
            total_replicas=status.replicas,
            state=condition.reason if condition else "Waiting",
            message=as_tool_calls(condition.message, workload.namespace) if condition else "",
            complete_revision=status.complete_revision,
            revisions=[
                RevisionSummary(
                    number=r.number,
                    current=r.number == workload.revision,
                    template_hash=r.template_hash,
                    images=[c.image for c in r.template.containers],
                    created_at=r.created_at,
                    cause=r.cause,
                )
                for r in workload.revisions
            ],
        )
