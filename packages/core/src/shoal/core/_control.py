"""The control loop: workloads → instances → placements, on the leader server.

It reads workloads, instances and nodes from caches fed by the store's watch
(:class:`~shoal.core._informer.Informer`: listed once when the term starts,
then followed), so a pass decodes nothing it has seen before; and before a
pass it waits until the caches reflect its own last writes, so it never acts
on a view older than what it wrote. A pass run outside :meth:`ControlLoop.run`
(tests drive passes one by one) lists the three prefixes first.

One pass goes over every workload with its instances and the nodes, then for
each workload:

* deletes it once all its instances are gone (``deleting`` set by the service);
* restarts finished instances on their node per restart policy, with
  exponential backoff (``not_before``), reported as ``CrashLoopBackOff``;
* marks instances of failed nodes ``lost`` (their replacement is created below),
  and deletes those of nodes that left the cluster (replaced the same way);
* replaces instances whose template is outdated (recreate; rollouts come later);
* keeps ``replicas`` healthy instances: creates the missing ones, removes
  surplus unplaced ones first, then the newest;
* moves instances off draining nodes: a replacement elsewhere first, the old
  one stopped only while the workload keeps enough running instances;
* places pending instances with the scheduler, recording per-node reasons
  for those that fit nowhere;
* writes the workload's observed status.

The pass writes only what differs from what it read, so a second pass over an
unchanged world writes nothing: the loop is level-triggered and idempotent.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from shoal.interfaces import (
    Actor,
    Clock,
    Compare,
    CompareTarget,
    EventType,
    GossipState,
    Instance,
    InstanceState,
    Node,
    ObjectRef,
    PlacementRequest,
    PutOp,
    RevisionConflict,
    ScheduleFailure,
    Scheduler,
    StateStore,
    Unavailable,
    Workload,
)

from ._informer import Informer
from ._placement import InstanceFactory, node_usage
from ._repo import (
    INSTANCES,
    NODES,
    WORKLOADS,
    Repository,
    Stored,
    decoder_of,
    heartbeat_only,
    instance_key,
    workload_key,
)
from ._restarts import restart, should_restart
from ._status import workload_status
from ._wake import run_woken_by

__all__ = ["ControlLoop"]

ACTOR = Actor(id="control-loop", via="control-loop")
TXN_OPS = 128
_NOT_PLACED = ScheduleFailure(message="the scheduler neither placed nor explained it")
_FINISHED = frozenset({InstanceState.STOPPED, InstanceState.FAILED})


def _lost_because(node: Node | None, inst: Instance) -> str | None:
    """Return why ``inst`` is lost with its node (which it is placed on), or None if it is not.

    An instance of a failed or vanished node is lost; so is one that a
    suspect node (silent, or unsure in gossip) has not even started: moving
    it costs nothing, and if that node starts it after all, the instance's
    record tells it to stop the copy.
    """
    if node is None:
        return "is gone"
    if node.state == GossipState.FAILED:
        return "failed"
    if node.state == GossipState.SUSPECT and inst.state == InstanceState.SCHEDULED:
        return "is suspect and has not started it"
    return None


class ControlLoop:
    """Turns desired state into placed instances. Run on exactly one server at a time."""

    def __init__(
        self,
        store: StateStore,
        scheduler: Scheduler,
        clock: Clock,
        *,
        resync: float = 5.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        keep_events: int = 5000,
        keep_events_for: float = 7 * 24 * 3600.0,
    ) -> None:
        self.repo = Repository(store, clock)
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        self.resync = resync
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.keep_events = keep_events
        self.keep_events_for = keep_events_for
        self.passes = 0
        self.workloads: Informer[Stored[Workload]] = Informer(
            store, WORKLOADS, decoder_of(Workload), clock
        )
        self.instances: Informer[Stored[Instance]] = Informer(
            store, INSTANCES, decoder_of(Instance), clock
        )
        self.nodes: Informer[Stored[Node]] = Informer(store, NODES, decoder_of(Node), clock)
        self._watching = False
        self.written: dict[str, int] = {}
        """The revision of this loop's last write, per prefix: the caches catch up to it."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile on every change of workloads, instances or nodes, and every ``resync`` s.

        The caches are listed before the first pass. A node's heartbeat alone
        wakes no pass.
        """
        async with anyio.create_task_group() as tg:
            await tg.start(self.follow)
            wakes = functools.partial(run_woken_by, self._wake_on_changes)
            await tg.start(wakes, self.store, self.clock, self.resync, self.reconcile_once)
            task_status.started()

    async def follow(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the caches current until cancelled; started once all three are listed.

        While it runs, passes read the caches instead of listing the store.
        """
        try:
            async with anyio.create_task_group() as tg:
                for informer in (self.workloads, self.instances, self.nodes):
                    await tg.start(informer.run)
                self._watching = True
                task_status.started()
        finally:
            self._watching = False

    async def _wake_on_changes(self, wake: Callable[[], None]) -> None:
        """Wake a pass on any change of the caches but a node's heartbeat."""

        def changed(key: str, old: Stored[Any] | None, new: Stored[Any] | None) -> None:
            del key
            before = None if old is None else old.value
            after = None if new is None else new.value
            if isinstance(before, Node) and isinstance(after, Node):
                if heartbeat_only(before, after):
                    return  # a heartbeat alone wakes no pass
            wake()

        for informer in (self.workloads, self.instances, self.nodes):
            informer.listen(changed)
        await anyio.sleep_forever()

    def wrote(self, key: str, revision: int) -> None:
        """Note a write of this loop: the next pass waits for the caches to show it."""
        for prefix in (WORKLOADS, INSTANCES, NODES):
            if key.startswith(prefix):
                self.written[prefix] = max(self.written.get(prefix, 0), revision)

    def backoff(self, restart_count: int) -> float:
        """Return the delay before restart number ``restart_count + 1``."""
        return float(min(self.backoff_base * 2**restart_count, self.backoff_cap))

    async def reconcile_once(self) -> float | None:
        """Run one pass; return 0 if another should follow at once, else None."""
        self.passes += 1
        caches = ((self.workloads, WORKLOADS), (self.instances, INSTANCES), (self.nodes, NODES))
        for informer, prefix in caches:
            if not self._watching:
                await informer.refresh()
            elif not informer.following:
                raise Unavailable(f"the cache of {prefix} lost the store; it lists again first")
            else:
                await informer.caught_up(self.written.get(prefix, 0))
        workloads = sorted(self.workloads.values(), key=lambda s: s.key)
        instances = sorted(self.instances.values(), key=lambda s: s.key)
        nodes = {s.value.name: s.value for s in sorted(self.nodes.values(), key=lambda s: s.key)}
        by_workload: dict[str, list[Stored[Instance]]] = defaultdict(list)
        for stored in instances:
            by_workload[f"{stored.value.namespace}/{stored.value.workload}"].append(stored)

        pass_ = _Pass(self, nodes)
        pass_.factory.taken.update(stored.value.key for stored in instances)
        for stored_workload in workloads:
            await pass_.workload(stored_workload, by_workload.pop(stored_workload.value.key, []))
        for orphans in by_workload.values():  # instances whose workload is gone
            for stored in orphans:
                await pass_.remove(stored, "WorkloadDeleted", "its workload no longer exists")
        await pass_.schedule(instances)
        for stored_workload in workloads:
            await pass_.write_status(stored_workload)
        if self.passes % 100 == 0:
            await self.repo.prune_events(self.keep_events, self.keep_events_for)
        return 0 if pass_.again else None


class _Pass:
    """The state of one reconcile pass."""

    def __init__(self, loop: ControlLoop, nodes: dict[str, Node]) -> None:
        self.loop = loop
        self.repo = loop.repo
        self.nodes = nodes
        self.now = loop.clock.now()
        self.again = False
        # (workload, stored instance or None for a new one, instance key, uid)
        self.pending: list[tuple[Workload, Stored[Instance] | None, str, str]] = []
        self.current: dict[str, dict[str, Instance]] = {}
        self.unschedulable: dict[str, str] = {}
        self.factory = InstanceFactory(self.now)

    async def _write(self, stored: Stored[Instance], updated: Instance) -> bool:
        if updated == stored.value:
            return True
        try:
            revision = await self.repo.put(stored.key, updated, expected_revision=stored.revision)
        except RevisionConflict:
            self.again = True
            return False
        self.loop.wrote(stored.key, revision)
        return True

    def _node_left(self, inst: Instance) -> bool:
        node = self.nodes.get(inst.node or "")
        return node is not None and node.state == GossipState.LEFT

    async def remove(self, stored: Stored[Instance], reason: str, message: str) -> None:
        """Ask an instance to go: placed ones are stopped by their node, others deleted.

        Deleted at once are unplaced instances, instances of a node that left
        (nobody is there to stop them), and lost instances of a failed node.
        """
        inst = stored.value
        node = self.nodes.get(inst.node or "")
        gone_node = node is None or node.state in (GossipState.FAILED, GossipState.LEFT)
        if (
            inst.node is None
            or self._node_left(inst)
            or (inst.state == InstanceState.LOST and gone_node)
        ):
            try:
                revision = await self.loop.store.delete(
                    stored.key, expected_revision=stored.revision
                )
            except RevisionConflict:
                self.again = True
                return
            if revision is not None:
                self.loop.wrote(stored.key, revision)
            if inst.node is not None:
                await self.repo.record(_ref(inst), reason, f"removed: {message}", ACTOR)
            return
        if not inst.deleting:
            updated = inst.model_copy(
                update={"deleting": True, "reason": reason, "message": message}
            )
            await self._write(stored, updated)

    async def workload(
        self, stored_workload: Stored[Workload], owned: list[Stored[Instance]]
    ) -> None:
        workload = stored_workload.value
        if workload.deleting:
            for stored in owned:
                await self.remove(stored, "WorkloadDeleting", "its workload is being deleted")
            if not owned:
                await self._delete_workload(stored_workload)
            return

        live: list[Stored[Instance]] = []
        for stored in owned:
            inst = await self._lifecycle(workload, stored)
            if inst.deleting:
                if self._node_left(inst):
                    await self.remove(stored, "NodeLeft", f"node {inst.node} left the cluster")
                elif inst.state == InstanceState.LOST and inst.node not in self.nodes:
                    await self.remove(stored, "NodeLost", f"node {inst.node} is gone")
                continue
            if inst.template != workload.spec.template:
                await self.remove(stored, "TemplateChanged", "replaced by the current template")
                continue
            live.append(Stored(inst, stored.key, stored.revision, stored.created))

        draining = {n for n, node in self.nodes.items() if node.draining}
        healthy = [s for s in live if s.value.node not in draining]
        evicting = [s for s in live if s.value.node in draining]
        want = workload.spec.replicas

        for _ in range(want - len(healthy)):
            uid = self.factory.fresh_uid(workload)
            key = f"{workload.namespace}/{workload.name}-{uid[:5]}"
            self.pending.append((workload, None, key, uid))
        if len(healthy) > want:
            # Unplaced first, then newest first.
            surplus = sorted(healthy, key=lambda s: (s.value.node is not None, -s.created))
            for stored in surplus[: len(healthy) - want]:
                await self.remove(stored, "ScaledDown", f"replicas lowered to {want}")
            healthy = surplus[len(healthy) - want :]
        for stored in healthy:
            if stored.value.node is None:
                self.pending.append((workload, stored, stored.value.key, stored.value.uid))

        running = sum(1 for s in healthy if s.value.state == InstanceState.RUNNING)
        running_evicting = sum(1 for s in evicting if s.value.state == InstanceState.RUNNING)
        for stored in sorted(evicting, key=lambda s: s.created):
            is_running = stored.value.state == InstanceState.RUNNING
            if running + running_evicting - (1 if is_running else 0) >= want or not is_running:
                await self.remove(stored, "Drained", f"moved off draining node {stored.value.node}")
                running_evicting -= 1 if is_running else 0
        self.current[workload.key] = {s.value.name: s.value for s in live}

    async def _lifecycle(self, workload: Workload, stored: Stored[Instance]) -> Instance:
        """Apply node loss and restart policy to one instance; return it as it now stands."""
        inst = stored.value
        if inst.deleting:
            return inst
        if self._node_left(inst):
            # Not a failure: the node went away on purpose. The caller deletes the
            # record, and a replacement is placed elsewhere.
            return inst.model_copy(update={"deleting": True})
        node = self.nodes.get(inst.node or "")
        if inst.node is not None and inst.state != InstanceState.LOST:
            why = _lost_because(node, inst)
            if why is not None:
                lost = inst.transition(InstanceState.LOST, "NodeLost", f"node {inst.node} {why}")
                # Deleting: if the node comes back, its node loop stops the stale copy.
                lost = lost.model_copy(update={"deleting": True, "ready": False})
                if await self._write(stored, lost):
                    await self.repo.record(
                        _ref(inst), "NodeLost", lost.message, ACTOR, event_type=EventType.WARNING
                    )
                return lost
        if inst.state in _FINISHED and inst.node is not None:
            if should_restart(workload.spec.restart_policy, inst):
                restarted = restart(inst, self.now, self.loop.backoff)
                # A lost race keeps the instance as read: it still counts
                # as a replica (no replacement), and the next pass retries.
                return restarted if await self._write(stored, restarted) else inst
        return inst

    async def schedule(self, instances: list[Stored[Instance]]) -> None:
        """Place every pending instance collected by the workload passes."""
        if not self.pending:
            return
        usage = node_usage(stored.value for stored in instances)
        shapes: dict[str, tuple[int, int, frozenset[tuple[int, str]]]] = {}
        requests: list[PlacementRequest] = []
        for workload, _, key, _ in self.pending:
            if workload.key not in shapes:
                need = workload.spec.template.requests()
                ports = frozenset(workload.spec.template.host_ports())
                shapes[workload.key] = (need.cpu, need.memory, ports)
            cpu, memory, ports = shapes[workload.key]
            requests.append(
                PlacementRequest(
                    instance=key,
                    group=workload.key,
                    cpu=cpu,
                    memory=memory,
                    host_ports=ports,
                    constraints=workload.spec.placement.constraints,
                    strategy=workload.spec.placement.strategy,
                )
            )
        result = self.loop.scheduler.place(requests, list(self.nodes.values()), usage)

        placed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        unplaced: dict[str, tuple[Workload, str]] = {}
        created: list[Instance] = []
        for workload, existing, key, uid in self.pending:
            node = result.assigned.get(key)
            failure = None if node is not None else result.failed.get(key, _NOT_PLACED)
            if node is not None:
                placed[workload.key][node] += 1
                status: dict[str, Any] = {
                    "state": InstanceState.SCHEDULED,
                    "node": node,
                    "reason": "Scheduled",
                    "message": f"placed on {node}",
                    "schedule_failure": None,
                }
            else:
                assert failure is not None
                unplaced[workload.key] = (workload, failure.message)
                status = {
                    "reason": "Unschedulable",
                    "message": failure.message,
                    "schedule_failure": failure,
                }
            if existing is None:
                updated = self.factory.new(workload, uid, **status)
                self.current.setdefault(workload.key, {})[updated.name] = updated
                created.append(updated)
            else:
                if node is not None:
                    updated = existing.value.transition(
                        InstanceState.SCHEDULED, "Scheduled", f"placed on {node}"
                    ).model_copy(update={"node": node, "schedule_failure": None})
                else:
                    updated = existing.value.model_copy(update=status)
                self.current.setdefault(workload.key, {})[updated.name] = updated
                await self._write(existing, updated)

        await self._create(created)

        for workload_ref, per_node in placed.items():
            namespace, name = workload_ref.split("/", 1)
            total = sum(per_node.values())
            where = ", ".join(f"{n} ({count})" for n, count in sorted(per_node.items()))
            await self.repo.record(
                ObjectRef(kind="Workload", namespace=namespace, name=name),
                "Scheduled",
                f"placed {total} instance(s) on {where}",
                ACTOR,
            )
        for workload, message in unplaced.values():
            self.unschedulable[workload.key] = message
            reported = any(
                c.type == "Scheduled" and not c.status and c.message == message
                for c in workload.status.conditions
            )
            if reported:
                continue  # said already: do not repeat the event every pass
            await self.repo.record(
                ObjectRef(kind="Workload", namespace=workload.namespace, name=workload.name),
                "FailedScheduling",
                message,
                ACTOR,
                event_type=EventType.WARNING,
            )

    async def _create(self, instances: list[Instance]) -> None:
        """Write new instances in create-only transactions of at most TXN_OPS each.

        Batching makes placing thousands of instances cost a few transactions
        rather than thousands of round trips; TXN_OPS stays within etcd's
        default limit of operations per transaction.
        """
        for start in range(0, len(instances), TXN_OPS):
            chunk = instances[start : start + TXN_OPS]
            keys = [instance_key(i.namespace, i.name) for i in chunk]
            outcome = await self.loop.store.txn(
                [Compare(key, CompareTarget.MOD_REVISION, 0) for key in keys],
                [
                    PutOp(key, i.model_dump_json().encode())
                    for key, i in zip(keys, chunk, strict=True)
                ],
            )
            if not outcome.succeeded:  # a clash of random names: the next pass makes new ones
                self.again = True
            else:
                self.loop.wrote(INSTANCES, outcome.revision)

    async def write_status(self, stored_workload: Stored[Workload]) -> None:
        workload = stored_workload.value
        instances = list(self.current.get(workload.key, {}).values())
        status = workload_status(workload, instances, self.unschedulable.get(workload.key))
        if status == workload.status:
            return
        updated = workload.model_copy(update={"status": status})
        try:
            revision = await self.repo.put(
                stored_workload.key, updated, expected_revision=stored_workload.revision
            )
        except RevisionConflict:
            self.again = True
            return
        self.loop.wrote(stored_workload.key, revision)

    async def _delete_workload(self, stored_workload: Stored[Workload]) -> None:
        workload = stored_workload.value
        try:
            revision = await self.loop.store.delete(
                workload_key(workload.namespace, workload.name),
                expected_revision=stored_workload.revision,
            )
        except RevisionConflict:
            self.again = True
            return
        if revision is not None:
            self.loop.wrote(stored_workload.key, revision)
        await self.repo.record(
            ObjectRef(kind="Workload", namespace=workload.namespace, name=workload.name),
            "Deleted",
            "all instances stopped; workload removed",
            ACTOR,
        )


def _ref(inst: Instance) -> ObjectRef:
    return ObjectRef(kind="Instance", namespace=inst.namespace, name=inst.name)
