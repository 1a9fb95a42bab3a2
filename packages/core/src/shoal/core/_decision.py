"""What one :func:`~shoal.core._reconcile.decide` call builds: its actions and working state.

The records a decision is made of (writes, deletes, instances to place,
events) and the per-call helper that applies node loss and restart policy,
shared by the decision for each workload mode (``_reconcile``, ``_modes``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from shoal.interfaces import (
    EventType,
    GossipState,
    Instance,
    InstanceState,
    Node,
    ObjectRef,
    ScheduleFailure,
    Workload,
    WorkloadStatus,
)

from ._repo import Stored
from ._restarts import BACKOFF_REASONS, restart, should_restart

__all__ = [
    "NOT_PLACED",
    "Deciding",
    "Decision",
    "Delete",
    "JobProgress",
    "Note",
    "Pending",
    "Settled",
    "Write",
    "instance_ref",
    "starting_report",
    "workload_ref",
]

_FINISHED = frozenset({InstanceState.STOPPED, InstanceState.FAILED})
# Read once: an enum member read is a descriptor call, and lifecycle() runs for
# every instance of every workload a pass decides.
_LOST, _SCHEDULED = InstanceState.LOST, InstanceState.SCHEDULED
_NODE_FAILED, _NODE_LEFT, _NODE_SUSPECT = GossipState.FAILED, GossipState.LEFT, GossipState.SUSPECT
NOT_PLACED = ScheduleFailure(message="the scheduler neither placed nor explained it")


@dataclass(frozen=True, slots=True)
class Note:
    """An event to record about ``obj``."""

    obj: ObjectRef
    reason: str
    message: str
    type: EventType = EventType.NORMAL


@dataclass(frozen=True, slots=True)
class Write:
    """Replace an instance as read with ``value`` (compare-and-swap); then record ``note``."""

    stored: Stored[Instance]
    value: Instance
    note: Note | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete an instance as read (compare-and-swap); then record ``note``."""

    stored: Stored[Instance]
    note: Note | None = None


class Pending(NamedTuple):
    """An instance to place: an unplaced one as read, or a new one (``stored`` None).

    A named tuple, cheap to make: a pass may place ten thousand.
    """

    stored: Stored[Instance] | None
    name: str
    uid: str
    node: str | None = None
    """The only node it may go to (a daemon's instance), or None for any that fits."""


@dataclass(frozen=True, slots=True)
class JobProgress:
    """How far a job got, counted from its instances by :func:`decide`."""

    succeeded: int
    """Runs that exited 0."""
    failed: int
    """Failed runs, restarts included."""
    finished: tuple[str, str, str] | None = None
    """``(condition type, reason, message)`` once the job completed or failed: Complete or
    Failed (BackoffLimitExceeded, DeadlineExceeded)."""


@dataclass(slots=True)
class Decision:
    """What :func:`decide` returns for one workload."""

    workload: Stored[Workload] | None
    ops: dict[str, Write | Delete] = field(default_factory=dict)
    """Per instance key, its one write or delete."""
    pending: list[Pending] = field(default_factory=list)
    live: dict[str, Instance] = field(default_factory=dict)
    """The workload's live instances by name, as they stand after ``ops``."""
    delete_workload: bool = False
    """The workload is being deleted and has no instance left: delete its record."""
    recheck: float | None = None
    """Seconds after which to decide again even if nothing changes (a ready-for timer)."""
    notes: list[Note] = field(default_factory=list)
    """Events about the workload: a rollout step, a surge that fits nowhere."""
    desired: int | None = None
    """How many instances the workload wants when that is not ``replicas``: a daemon's
    eligible nodes, a job's active slots."""
    job: JobProgress | None = None
    """For a job: its counts and outcome, for the status."""
    expire: bool = False
    """A finished job's ttl_seconds_after_finished passed: mark the workload deleting."""
    promote: bool = False
    """The current revision's canaries are all available and update.auto_promote is set:
    promote them (the rollout then replaces the rest)."""
    surging: bool = False
    """A rolling step makes new instances beside the old ones (max_surge): should they fit
    nowhere, the workload is decided again at once, to go on without the surge."""


@dataclass(slots=True)
class Settled:
    """What :func:`settle` returns: the rest of the workload's writes."""

    ops: list[Write] = field(default_factory=list)
    created: list[Instance] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    status: WorkloadStatus | None = None
    """The workload's new status, or None if it is unchanged (or it has no record)."""
    unschedulable: str | None = None
    """Why some instance fits nowhere, or None if every one was placed."""
    recheck: float | None = None
    """Seconds after which to decide again even if nothing changes (min-ready, deadline)."""
    revert_to: int | None = None
    """The rollout failed and reverts: the revision whose template comes back."""


def instance_ref(inst: Instance) -> ObjectRef:
    """Return the reference of an instance, for its events."""
    return ObjectRef(kind="Instance", namespace=inst.namespace, name=inst.name)


def workload_ref(item: Workload | Instance) -> ObjectRef:
    """Return the workload an object is, or belongs to."""
    name = item.name if isinstance(item, Workload) else item.workload
    return ObjectRef(kind="Workload", namespace=item.namespace, name=name)


_STARTING_REPORT = {"state", "reason", "message", "start_trace_id"}
"""What a node writes when it begins starting an instance (see :func:`starting_report`)."""


def starting_report(old: Instance, new: Instance) -> bool:
    """Whether ``new`` is ``old`` as its node reports it begins starting it, and nothing else.

    No decision and no status reads the difference: a scheduled and a
    starting instance are both placed and not yet running (the one rule that
    tells them apart, a suspect node's unstarted instances, only moves
    scheduled ones). The control loop takes no pass for it; the next report
    (running, or failed) brings one. Not so for an instance restarting after
    a crash: the status counts it as crashing (its reason) until it starts.
    """
    if old.state != InstanceState.SCHEDULED or new.state != InstanceState.STARTING:
        return False
    if old.reason in BACKOFF_REASONS:
        return False
    return old.model_copy(update={f: getattr(new, f) for f in _STARTING_REPORT}) == new


def _left(node: Node | None) -> bool:
    """Whether ``node`` left the cluster on purpose (None: no such node, it did not)."""
    return node is not None and node.state == _NODE_LEFT


def _lost_because(node: Node | None, inst: Instance) -> str | None:
    """Return why ``inst`` is lost with its node (which it is placed on), or None if it is not.

    An instance of a failed or vanished node is lost; so is one that a
    suspect node (silent, or unsure in gossip) has not even started: moving
    it costs nothing, and if that node starts it after all, the instance's
    record tells it to stop the copy.
    """
    if node is None:
        return "is gone"
    state = node.state
    if state == _NODE_FAILED:
        return "failed"
    if state == _NODE_SUSPECT and inst.state == _SCHEDULED:
        return "is suspect and has not started it"
    return None


class Deciding:
    """The working state of one :func:`decide` call."""

    def __init__(self, nodes: Mapping[str, Node], decision: Decision) -> None:
        self.nodes = nodes
        self.decision = decision

    def node_left(self, inst: Instance) -> bool:
        """Return whether the node of ``inst`` left the cluster on purpose."""
        return _left(self.nodes.get(inst.node or ""))

    def remove(self, stored: Stored[Instance], reason: str, message: str) -> None:
        """Ask an instance to go; this replaces any other op of the decision on it.

        Its record is deleted at once when nobody is left to stop it: it is
        placed nowhere, its node left, or its node is gone (failed, vanished)
        and it was lost or on its way out already. A node that comes back
        removes the pod no record claims.
        """
        inst = stored.value
        node = self.nodes.get(inst.node or "")
        gone_node = node is None or node.state in (GossipState.FAILED, GossipState.LEFT)
        if (
            inst.node is None
            or self.node_left(inst)
            or ((inst.state == InstanceState.LOST or inst.deleting) and gone_node)
        ):
            removed = f"removed: {message}"
            note = None if inst.node is None else Note(instance_ref(inst), reason, removed)
            self.decision.ops[stored.key] = Delete(stored, note)
        elif not inst.deleting:
            update = {"deleting": True, "reason": reason, "message": message}
            self.decision.ops[stored.key] = Write(stored, inst.model_copy(update=update))

    def going(self, stored: Stored[Instance], inst: Instance) -> None:
        """Follow up ``inst`` (as it stands) on its way out: delete it once nobody can stop it."""
        if self.node_left(inst):
            self.remove(stored, "NodeLeft", f"node {inst.node} left the cluster")
        elif inst.state == InstanceState.LOST and inst.node not in self.nodes:
            if stored.key not in self.decision.ops:  # marked lost just now: deleted next time
                self.remove(stored, "NodeLost", f"node {inst.node} is gone")

    def lifecycle(
        self,
        workload: Workload,
        stored: Stored[Instance],
        now: datetime,
        backoff: Callable[[int], float],
        *,
        restarts: bool = True,
    ) -> Instance:
        """Apply node loss and restart policy to one instance; return it as it then stands.

        With ``restarts`` False (a job that finished) a finished instance stays finished.
        One already on its way out (deleting) is lost with its node too: nothing
        would ever stop it there, nor say it stopped, and it would hold up its
        workload's deletion (which deletes a lost instance of a gone node at once).
        """
        inst = stored.value
        placed = inst.node
        node = None if placed is None else self.nodes.get(placed)
        if _left(node):
            # Not a failure: the node went away on purpose. The caller deletes the
            # record, and a replacement is placed elsewhere.
            return inst if inst.deleting else inst.model_copy(update={"deleting": True})
        if placed is not None and inst.state != _LOST:
            why = _lost_because(node, inst)
            if why is not None:
                lost = inst.transition(InstanceState.LOST, "NodeLost", f"node {inst.node} {why}")
                # Deleting: if the node comes back, its node loop stops the stale copy.
                lost = lost.model_copy(update={"deleting": True, "ready": False})
                note = Note(instance_ref(inst), "NodeLost", lost.message, EventType.WARNING)
                self.decision.ops[stored.key] = Write(stored, lost, note)
                return lost
        if inst.deleting:
            return inst
        if restarts and inst.state in _FINISHED and inst.node is not None:
            if should_restart(workload.spec.restart_policy, inst):
                restarted = restart(inst, now, backoff)
                self.decision.ops[stored.key] = Write(stored, restarted)
                return restarted
        return inst
