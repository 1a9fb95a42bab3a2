"""The node loop: this node's assigned instances → pods in the container runtime.

The loop reaches the cluster state through a
:class:`~shoal.interfaces.NodeState`: its own node record, the instances
placed on it, their status reports, its events and the configuration its pods
use, and nothing else (over the local store on a server or a single machine,
:class:`~shoal.core.LocalNodeState`; through a server on a worker,
``shoal.cluster.RemoteNodeState``). Every pass takes the instances placed on
this node from a cache fed by the node's assignment stream
(:class:`~shoal.core._informer.Informer`, so a pass costs this node's
instances, never the cluster's) and the pods the runtime holds, matched by
instance uid, and moves each pair one step towards what the instance record
asks for:

* ``scheduled`` (and its restart time reached): pull images, create and start
  the pod, report ``starting`` then ``running``;
* ``running`` whose pod exited: report ``stopped`` (all exit codes 0) or
  ``failed``; whose pod vanished: report ``failed`` (ContainerMissing);
* ``deleting`` or ``lost``: stop and remove the pod, then delete the record;
  a removal that fails is retried with a backoff (2 s doubling to 5 min),
  logged in one line and recorded as a ``TeardownFailed`` event on the
  instance (which ``explain`` shows) once per kind of failure, not per try;
* a pod that no instance claims (an orphan): stop and remove it.

Beside the passes, a probe task checks liveness and readiness probes of the
running instances (see :mod:`shoal.core._probes`): readiness flips the
instance's ``ready`` flag; a failed liveness probe stops the pod and reports
the instance ``failed`` (LivenessProbeFailed), so the control loop restarts it
per its restart policy. It sleeps until the earliest check is due, not a
fixed tick: an instance's first check runs ``initial_delay_seconds`` after it
started, and each instance's checks run in a task of their own.

In :meth:`NodeLoop.run`, a change of an instance on this node syncs that
instance alone, at once, in a task of its own (one sync per instance at a
time; a change during its sync syncs it again after): a start never waits for
another instance's sync, nor for a pass over the node's instances. Changes
elsewhere, and the loop's own writes coming back, sync nothing. A runtime
that says when a container exits (:class:`~shoal.interfaces.PodExits`:
runc's shims do) has that instance synced at once too. Whole passes (every
``resync`` s, and when the store comes back) catch what no change told:
orphan pods, adoption after a restart; they start their syncs the same way
and do not wait for them. A sync first waits for the cache to show this
loop's own last write (so it never acts on an older view), and every write is
compare-and-swap on the revision the cache holds, made before any side effect
on a pod. A pass run outside :meth:`NodeLoop.run` (tests drive passes one by
one) lists the instances first, since no watch feeds the cache then, and
waits for its syncs.

So after a restart of the agent the first pass *adopts* every pod the runtime
still runs (no second copy is started) and removes the ones nobody wants.
Restart decisions belong to the control loop; this loop only reports.

With ``metrics``, the loop counts what it does (``shoal_node_loop_actions_total``
by action and outcome), times its runtime calls (through
:class:`~shoal.core._metered.MeteredRuntime`), counts OOM kills, and observes
the start SLI: an instance's creation to its pod running, minus the time its
image pulls took, for first starts (a restart waits out its backoff on purpose).

While the cluster state (the store, or a worker's server) cannot be
reached, passes fail before they act and are retried with a backoff: containers keep running,
and nothing is torn down because it could not be read.
Registering waits for it the same way; a refused join token or role
(Unauthenticated, Forbidden) stops the loop with the server's message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus

from shoal.interfaces import (
    NO_METRICS,
    Actor,
    Catalogue,
    Clock,
    ContainerRuntime,
    EventType,
    Forbidden,
    ImageError,
    Instance,
    InstanceState,
    ListResult,
    Metrics,
    Node,
    NodeState,
    NotFound,
    ObjectRef,
    PodExits,
    PodStatus,
    Probe,
    RevisionConflict,
    ShoalError,
    Unauthenticated,
    Unavailable,
    Via,
    WatchEvent,
)

from ._backoff import Backoff
from ._informer import Informer
from ._metered import MeteredRuntime
from ._podspec import (
    Configs,
    MissingConfig,
    PodFacts,
    build_pod,
    files_digest,
    pull_credentials,
    volume_files,
)
from ._probes import ProbeTracker, run_check
from ._repo import INSTANCES, Stored, decoder_of, instance_key, new_event
from ._restarts import IMAGE_PULL_FAILED
from ._tracing import SpanAttributes, current_trace_id, linked_span, serving
from ._wake import run_woken_by

__all__ = ["NodeLoop"]

log = logging.getLogger(__name__)

_TEARDOWN_RETRY_FIRST = 2.0
"""Seconds before the first retry of a failed pod removal; doubles per failure."""
_TEARDOWN_RETRY_CAP = 300.0
"""The longest wait between two tries of a failed pod removal."""


@dataclass
class _StuckTeardown:
    """A pod whose removal keeps failing: when to try again, and what failed last."""

    failures: int
    retry_at: float
    """On the loop's monotonic clock."""
    failure: str
    """The last error, to log and record each kind of failure once."""


class NodeLoop:
    """Runs the instances the control loop placed on this node."""

    def __init__(
        self,
        node: Node,
        state: NodeState,
        runtime: ContainerRuntime,
        clock: Clock,
        *,
        resync: float = 2.0,
        heartbeat: float = 10.0,
        stop_grace: float = 10.0,
        concurrency: int = 8,
        probe_tick: float = 1.0,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.node = node
        self.name = node.name
        self.state = state
        """This node's view of the cluster state: all the loop reads and writes there."""
        self.metrics = metrics
        self.runtime: ContainerRuntime = (
            runtime if metrics is NO_METRICS else MeteredRuntime(runtime, metrics)
        )
        self._exits = runtime if isinstance(runtime, PodExits) else None
        """The runtime, if it says when a container exits (its instance is then synced at once)."""
        self.clock = clock
        self.resync = resync
        self.heartbeat = heartbeat
        self.stop_grace = stop_grace
        self.actor = Actor(id=node.name, via=Via.NODE_LOOP)
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._again = False
        self._adopting = True
        self.passes = 0
        self.probe_tick = probe_tick
        self.probes = ProbeTracker()
        self._running: dict[str, Stored[Instance]] = {}
        self._killed: dict[str, str] = {}
        """Why each pod stopped for a failed liveness probe was stopped, by uid, until its
        instance is reported failed for it: its exit is no crash of its own."""
        self._files: dict[str, str] = {}
        """Digest of the file volumes each running pod was last given, by uid."""
        self._stuck: dict[str, _StuckTeardown] = {}
        """Instances whose pod removal failed, by uid."""
        self.instances: Informer[Stored[Instance]] = Informer(
            _Assigned(state), INSTANCES, decoder_of(Instance), clock
        )
        """The instances placed on this node, indexed by ``node``: what each pass reads."""
        self.instances.add_index("node", lambda s: [s.value.node] if s.value.node else [])
        self.instances.add_index("uid", lambda s: [s.value.uid])
        self._watching = False
        self._tasks: TaskGroup | None = None
        """Where :meth:`run`'s passes start their syncs and probes, without waiting for them."""
        self._wake: Callable[[], None] = _nothing
        """Wakes the next pass (set once :meth:`run` follows the cache)."""
        self._syncing: set[str] = set()
        """Instances (uids) whose sync, or orphan pod removal, is under way."""
        self._stale: set[str] = set()
        """Instances whose sync was under way when a pass came: a pass follows when it ends."""
        self._own: dict[str, int] = {}
        """The revision of this loop's last write of each instance, by key."""
        self._later: dict[str, float] = {}
        """When instances waiting out a backoff are synced again (monotonic), by uid."""
        self._probing: set[str] = set()
        """Instances (uids) whose probes are under way."""
        self._probe_limiter = anyio.CapacityLimiter(concurrency)
        self._probe_due = anyio.Event()
        """Set when an instance starts running: the probe task looks at its schedule again."""
        self._written = 0
        """Revision of this loop's last instance write: a pass waits for its cache to show it."""
        self.refused: ShoalError | None = None
        """Why the cluster refused to register this node (Unauthenticated, Forbidden), if it did."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register the node, then reconcile on every instance change and every ``resync`` s.

        Registering is retried while the cluster state is unreachable; the loop
        is started once the node is registered.

        Raises:
            Unauthenticated: the server refused this node's credentials (join token).
            Forbidden: the server does not let this node register.

        """
        await self.register_when_reachable()
        unlisten = _nothing if self._exits is None else self._exits.on_exit(self.pod_exited)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.instances.run)
                self._watching = True
                self._tasks = tg
                wakes = functools.partial(run_woken_by, self._wake_on_my_instances)
                await tg.start(wakes, self.clock, self.resync, self.reconcile_once)
                tg.start_soon(self._heartbeat)
                tg.start_soon(self._probe_loop)
                task_status.started()
        finally:
            unlisten()

    async def register(self) -> Node:
        """Create or refresh this node's record, keeping operator flags (cordon, drain).

        A refresh also keeps the record's gossip state: only the leader's
        membership sync moves it (a failed node is alive again once gossip says so).
        Returns the record as this node sent it.
        """
        fresh = self.node.model_copy(update={"heartbeat_at": self.clock.now()})
        if await self.state.register(fresh):
            await self._record(_node_ref(self.name), "Registered", "node joined", self.actor)
        return fresh

    async def _record(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        actor: Actor,
        *,
        event_type: EventType = EventType.NORMAL,
    ) -> None:
        """Record an event; one that cannot be written is logged and dropped, never fatal.

        Events are the audit trail, not the state: a store that refuses one
        (a server's cap on events per node) or is down must not stop the loop.
        A warning (a crash, a failed pull, a failed probe) is logged too: the
        agent's log says what went wrong on its node, as a kubelet's does.
        """
        if event_type == EventType.WARNING:
            where = f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name
            log.warning("%s %s: %s: %s", obj.kind.lower(), where, reason, message)
        try:
            event = new_event(self.clock, obj, reason, message, actor, event_type=event_type)
            await self.state.record(event)
        except ShoalError as exc:
            log.warning("node loop: event %s about %s dropped: %s", reason, obj.name, exc)

    async def register_when_reachable(self) -> None:
        """Register, waiting out an unreachable cluster state with a backoff; others propagate.

        A refusal (Unauthenticated, Forbidden) is also kept in :attr:`refused`.
        """
        backoff = Backoff(self.clock)
        while True:
            try:
                await self.register()
                return
            except (Unauthenticated, Forbidden) as exc:
                self.refused = exc
                raise
            except Unavailable as exc:
                log.warning(
                    "node loop: cannot register node %s yet (%s); retrying in %g s",
                    self.name,
                    exc,
                    backoff.delay,
                )
            await backoff.wait()

    async def _heartbeat(self) -> None:
        """Refresh ``heartbeat_at`` every ``heartbeat`` s; a failed beat is logged, not fatal."""
        while True:
            await self.clock.sleep(self.heartbeat)
            try:
                await self.state.heartbeat(self.clock.now())
            except ShoalError as exc:
                log.warning(
                    "node loop: heartbeat of node %s failed (%s); the next one is in %g s",
                    self.name,
                    exc,
                    self.heartbeat,
                )

    async def _report(self, instance: Instance, expected_revision: int) -> int:
        """Report ``instance``'s status (CAS); later passes wait for the cache to show it."""
        revision = await self.state.report(instance, expected_revision)
        self._written = max(self._written, revision)
        self._own[instance_key(instance.namespace, instance.name)] = revision
        return revision

    async def _update(
        self, stored: Stored[Instance], change: Callable[[Instance], Instance | None]
    ) -> None:
        """Report ``change`` of the instance as the cache holds it now (not as ``stored`` was).

        Nothing is written when it is gone or ``change`` returns None; a lost
        race raises RevisionConflict (the caller's next round reads again).
        """
        if self._watching:
            await self.instances.caught_up(self._written)
        else:
            await self.instances.refresh()
        current = self.instances.get(stored.key)
        if current is None:
            return
        updated = change(current.value)
        if updated is not None and updated != current.value:
            await self._report(updated, current.revision)

    async def _wake_on_my_instances(self, wake: Callable[[], None]) -> None:
        """Sync an instance of this node as soon as it changes (it is added, updated or goes).

        Only that instance: a change costs one sync, not a pass over the
        node's instances, and waits for no other instance's sync. ``wake``
        brings a whole pass when a sync needs one (the store went away).
        """

        def changed(key: str, old: Stored[Instance] | None, new: Stored[Instance] | None) -> None:
            if new is not None and new.value.node == self.name:
                if self._own.get(key) != new.revision:  # its own write: acted on already
                    self._sync_soon(key)
            elif old is not None and old.value.node == self.name:
                self._own.pop(key, None)
                self._gone(old.value)

        self._wake = wake
        self.instances.listen(changed)
        await anyio.sleep_forever()

    def pod_exited(self, uid: str) -> None:
        """Sync the instance of pod ``uid`` now: a container of it exited (see PodExits).

        Not at the next pass: a crash is reported (and restarted by the control
        loop), a job's end counted, as soon as the runtime tells.
        """
        for stored in self.instances.by_index("uid", uid):
            if stored.value.node == self.name:
                self._sync_soon(stored.key)

    async def reconcile_once(self) -> float | None:
        """Run one pass; return seconds until the next one it needs, or None.

        0 means at once (a write lost a race; outside :meth:`run`, where no
        watch brings the change); a positive delay is the end of the earliest
        restart or teardown backoff among this node's instances.
        """
        self.passes += 1
        self._again = False
        now = self.clock.now()
        if not self._watching:
            await self.instances.refresh()
        elif not self.instances.following:
            raise Unavailable("the cache of this node's assignments lost them: it lists them again")
        else:  # never act on a view older than this loop's own last write
            await self.instances.caught_up(self._written)
        mine = self.instances.by_index("node", self.name)
        self._running = {s.value.uid: s for s in mine if s.value.state == InstanceState.RUNNING}
        self.probes.forget(set(self._running))
        for uid in set(self._killed) - set(self._running):  # reported, or gone
            del self._killed[uid]
        for uid in set(self._files) - set(self._running):
            del self._files[uid]
        for uid in set(self._stuck) - {s.value.uid for s in mine}:
            del self._stuck[uid]
        pods = {pod.uid: pod for pod in await self._list_pods()}
        adopted = sum(  # not those whose pod is there but ended meanwhile: they restart
            1
            for s in mine
            if s.value.state == InstanceState.RUNNING
            and (pod := pods.get(s.value.uid)) is not None
            and pod.running
        )
        if self._tasks is None:  # passes driven one by one: each waits for its syncs
            async with anyio.create_task_group() as tg:
                for stored in mine:
                    tg.start_soon(self._guarded_sync, stored, pods.pop(stored.value.uid, None))
                for orphan in pods.values():
                    tg.start_soon(self._remove_orphan, orphan)
        else:
            self._dispatch(self._tasks, mine, pods)
        await self._prune_logs({s.value.uid for s in mine} | self._syncing)
        if self._adopting:
            self._adopting = False
            if adopted:
                await self._record(
                    _node_ref(self.name),
                    "Adopted",
                    f"adopted {adopted} running instance(s) after restart",
                    self.actor,
                )
        if self._again:
            # A write lost a race with a newer record: the watch brings it and
            # wakes the next pass; outside run() nothing would, so go at once.
            return _RACE_RETRY if self._watching else 0
        waits = [
            (s.value.not_before - now).total_seconds()
            for s in mine
            if s.value.state == InstanceState.SCHEDULED
            and s.value.not_before is not None
            and s.value.not_before > now
        ]
        mono = self.clock.monotonic()
        waits += [max(stuck.retry_at - mono, 0.0) for stuck in self._stuck.values()]
        return min(waits) if waits else None

    async def _prune_logs(self, keep: set[str]) -> None:
        """Remove the previous runs' logs kept of instances that left this node without a pod."""
        try:
            pruned = await self.runtime.prune_logs(keep)
        except ShoalError as exc:
            log.warning("node loop: cannot remove the logs kept of gone instances: %s", exc)
            return
        if pruned:
            log.info("node loop: removed the logs kept of %d gone instance(s)", len(pruned))

    def _dispatch(
        self, tg: TaskGroup, mine: list[Stored[Instance]], pods: dict[str, PodStatus]
    ) -> None:
        """Start a sync of each instance, and a removal of each orphan, that is not under way.

        The pass does not wait for them: an instance placed now starts at
        once, whatever another instance's sync is waiting for (a pull, a stop's
        grace period). An instance whose sync is still under way is synced by
        the pass that follows it (see :meth:`_sync_alone`).
        """
        for stored in mine:
            uid = stored.value.uid
            pod = pods.pop(uid, None)
            if uid in self._syncing:
                self._stale.add(uid)
                continue
            self._syncing.add(uid)
            tg.start_soon(self._sync_alone, uid, stored.key, self._guarded_sync, stored, pod)
        for orphan in pods.values():
            if orphan.uid in self._syncing:
                continue  # its instance's own sync (a start, a teardown) holds it
            self._syncing.add(orphan.uid)
            tg.start_soon(self._sync_alone, orphan.uid, None, self._remove_orphan, orphan)

    def _sync_soon(self, key: str) -> None:
        """Sync the instance at ``key`` in a task of its own (after its sync under way, if any)."""
        stored = self.instances.get(key)
        if self._tasks is None or stored is None:
            return
        uid = stored.value.uid
        if uid in self._syncing:
            self._stale.add(uid)
            return
        self._syncing.add(uid)
        self._tasks.start_soon(self._sync_alone, uid, key, self._sync_key, key, uid)

    async def _sync_key(self, key: str, uid: str) -> _Outcome:
        """Sync the instance at ``key`` as the cache holds it once it shows this loop's writes."""
        try:
            await self.instances.caught_up(self._written)
            stored = self.instances.get(key)
            if stored is None or stored.value.uid != uid or stored.value.node != self.name:
                return None
            if stored.value.state == InstanceState.RUNNING:
                self._running[uid] = stored
                self._probe_due.set()
            elif self._running.pop(uid, None) is not None:
                self.probes.forget(set(self._running))
            try:
                pod: PodStatus | None = await self.runtime.inspect(uid)
            except NotFound:
                pod = None
        except Unavailable:
            return "unavailable"
        except ShoalError as exc:  # the runtime cannot say: a pass tries again later
            log.warning("node loop: cannot inspect the pod of %s: %s", key, exc)
            return "unavailable"
        return await self._guarded_sync(stored, pod)

    def _gone(self, inst: Instance) -> None:
        """Forget an instance that left this node; remove its pod if one is left."""
        uid = inst.uid
        self._files.pop(uid, None)
        self._stuck.pop(uid, None)
        if self._running.pop(uid, None) is not None:
            self.probes.forget(set(self._running))
        if self._tasks is None or uid in self._syncing:
            return  # its sync under way (a teardown, usually) deals with its pod
        self._syncing.add(uid)
        self._tasks.start_soon(self._sync_alone, uid, None, self._remove_if_orphan, uid)

    async def _remove_if_orphan(self, uid: str) -> _Outcome:
        """Remove the pod of ``uid``, whose record is gone, if the runtime still has it."""
        try:
            pod = await self.runtime.inspect(uid)
        except NotFound:
            return None
        except ShoalError as exc:
            log.warning("node loop: cannot inspect pod %s: %s; a later pass removes it", uid, exc)
            return None
        return await self._remove_orphan(pod)

    async def _sync_alone(
        self,
        uid: str,
        key: str | None,
        sync: Callable[..., Awaitable[_Outcome]],
        *args: object,
    ) -> None:
        """Run one dispatched sync, then what it leaves to do.

        A change that came during the sync syncs the instance again; a lost
        race needs nothing (the watch brings the newer record, which syncs
        it); a store that went away brings a pass after a while; a restart or
        a teardown retry that waits out a backoff is synced when it ends; an
        error the sync did not expect is left to the next periodic pass.
        """
        try:
            outcome = await sync(*args)
        except Exception:
            # Outside _guarded_sync (the runtime's inspect, an orphan's removal):
            # one pod's failure must not end the loop's task group with it.
            # As _guarded_sync does: counted, logged, and the next pass tries again.
            self._did("sync", "error")
            log.exception("node loop: syncing pod %s failed", uid)
            outcome = None
        finally:
            self._syncing.discard(uid)
        if outcome == "unavailable":
            self._stale.discard(uid)  # the pass this wakes syncs it as it is then
            await self.clock.sleep(_RACE_RETRY)  # as a pass would wait before trying again
            self._wake()
            return
        if key is None:
            self._stale.discard(uid)
            return
        if uid in self._stale:
            self._stale.discard(uid)
            self._sync_soon(key)
            return
        stored = self.instances.get(key)
        if stored is None or stored.value.uid != uid or stored.value.node != self.name:
            # Its record went (or moved) while the sync ran, a start maybe: no
            # pod may stay behind until the next whole pass.
            if self._tasks is not None and uid not in self._syncing:
                self._syncing.add(uid)
                self._tasks.start_soon(self._sync_alone, uid, None, self._remove_if_orphan, uid)
            return
        delay: float | None = None
        inst = stored.value
        if inst.state == InstanceState.SCHEDULED and inst.not_before is not None:
            delay = (inst.not_before - self.clock.now()).total_seconds()
        stuck = self._stuck.get(uid)
        if stuck is not None:
            delay = stuck.retry_at - self.clock.monotonic()
        if delay is not None and delay > 0:
            self._sync_at(key, uid, self.clock.monotonic() + delay)

    def _sync_at(self, key: str, uid: str, at: float) -> None:
        """Sync ``key`` again at ``at`` (monotonic), unless a sync is due by then already."""
        if self._tasks is None or self._later.get(uid, math.inf) <= at:
            return
        self._later[uid] = at

        async def later() -> None:
            await self.clock.sleep(max(at - self.clock.monotonic(), 0.0))
            if self._later.get(uid) == at:
                del self._later[uid]
                self._sync_soon(key)

        self._tasks.start_soon(later)

    async def _list_pods(self) -> list[PodStatus]:
        """Return the runtime's pods; a runtime that cannot say fails the pass, not the loop.

        A pass that does not know what runs can start, stop or remove nothing
        safely, so it changes nothing: :func:`run_woken_by` logs the reason
        and runs it again after a backoff, as when the store is away.

        Raises:
            Unavailable: the runtime could not list its pods.

        """
        try:
            return list(await self.runtime.list())
        except Unavailable:
            raise
        except ShoalError as exc:
            raise Unavailable(
                f"the container runtime could not list its pods: {exc}",
                node=self.name,
            ) from exc

    async def _guarded_sync(self, stored: Stored[Instance], pod: PodStatus | None) -> _Outcome:
        """Sync one instance; return why another pass should come soon, if it should."""
        async with self._limiter:
            try:
                await self._sync(stored, pod)
            except RevisionConflict:
                self._again = True  # the record changed under us: the next pass re-reads it
                return "conflict"
            except Unavailable as exc:  # the store went away mid-pass: no traceback per instance
                log.warning("node loop: syncing instance %s stopped: %s", stored.value.key, exc)
                self._again = True
                return "unavailable"
            except Exception:
                self._did("sync", "error")
                log.exception("node loop: syncing instance %s failed", stored.value.key)
        return None

    def _did(self, action: str, outcome: str = "ok") -> None:
        self.metrics.inc(Catalogue.NODE_LOOP_ACTIONS, action, outcome)

    async def _sync(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        with serving(stored.value.trace_context):  # its events name the request behind it
            await self._sync_instance(stored, pod)

    async def _sync_instance(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        inst = stored.value
        if inst.deleting or inst.state == InstanceState.LOST:
            stuck = self._stuck.get(inst.uid)
            if stuck is not None and self.clock.monotonic() < stuck.retry_at:
                return  # backing off; the pass's delay brings the next try
            await self._teardown(stored, pod)
        elif inst.state == InstanceState.SCHEDULED:
            if inst.not_before is not None and self.clock.now() < inst.not_before:
                return  # backing off; a later pass starts it
            await self._start(stored, pod)
        elif inst.state == InstanceState.STARTING:
            if pod is not None and pod.running:
                await self._report_running(stored, pod)
            else:
                await self._start(stored, pod)
        elif inst.state == InstanceState.RUNNING:
            await self._watch_running(stored, pod)
        elif inst.state == InstanceState.STOPPING:
            if pod is not None:
                await self.runtime.stop(inst.uid, self._grace(inst))
                self._did("stop")
            else:  # nothing left to stop
                stopped = inst.transition(InstanceState.STOPPED, "Stopped", "its pod is gone")
                await self._report(stopped, stored.revision)

    async def _start(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        inst = stored.value
        attributes: SpanAttributes = {"shoal.instance": inst.key, "shoal.node": self.name}
        with linked_span("shoal.start", [inst.trace_context], attributes):
            await self._start_pod(stored, pod)

    async def _start_pod(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        inst = stored.value
        configs = await self._configs(inst)
        try:
            spec = build_pod(inst, configs, self._facts())
        except MissingConfig as exc:
            await self._wait_for_config(stored, exc.message)
            return
        images = ", ".join(sorted({c.image for c in inst.template.containers}))
        starting = inst.transition(InstanceState.STARTING, "Starting", f"preparing {images}")
        starting = starting.model_copy(update={"start_trace_id": current_trace_id()})
        # The record first: a pass on a stale view loses this race before it touches a pod.
        revision = await self._report(starting, stored.revision)
        if pod is not None:  # an earlier run: its logs stay readable (`logs --previous`)
            await self.runtime.remove(inst.uid, keep_logs=True)
        pulling = 0.0
        try:
            credentials = pull_credentials(inst, configs)
            began = time.perf_counter()
            for container in [*inst.template.init_containers, *inst.template.containers]:
                await self.runtime.ensure_image(container.image, credentials or None)
            pulling = time.perf_counter() - began
            status = await self.runtime.run(spec)
        except ShoalError as exc:
            self._did("start", "error")
            await self.runtime.remove(inst.uid, keep_logs=True)  # what it said, if it ran
            reason = IMAGE_PULL_FAILED if isinstance(exc, ImageError) else "StartFailed"
            failed = starting.transition(InstanceState.FAILED, reason, exc.message)
            failed = failed.model_copy(update={"finished_at": self.clock.now(), "ready": False})
            await self._report(failed, revision)
            await self._record(
                _ref(inst), reason, exc.message, self.actor, event_type=EventType.WARNING
            )
            return
        self._files[inst.uid] = files_digest(spec.files)
        await self._report_running(Stored(starting, stored.key, revision, stored.created), status)
        self._did("start")
        if inst.restart_count == 0:  # from placement, for one that waited for room
            since = inst.placed_at or inst.created_at
            took = (self.clock.now() - since).total_seconds() - pulling
            self.metrics.observe(Catalogue.INSTANCE_START_DURATION, max(took, 0.0))

    async def _configs(self, inst: Instance) -> Configs:
        """Read the ConfigMaps and Secrets the instance's pod uses (None for a missing one)."""
        return {
            (kind, name): await self.state.config(kind, inst.namespace, name)
            for kind, name in sorted(inst.template.config_refs())
        }

    def _facts(self) -> PodFacts:
        addresses = self.node.addresses
        host = next(iter(addresses.values()), "") if addresses else ""
        return PodFacts(
            host_ip=host.rsplit(":", 1)[0] if ":" in host else host,
            node_cpu=self.node.allocatable.cpu or self.node.capacity.cpu,
            node_memory=self.node.allocatable.memory or self.node.capacity.memory,
        )

    async def _wait_for_config(self, stored: Stored[Instance], message: str) -> None:
        """Keep the instance waiting for its configuration; say why once (as an event)."""
        inst = stored.value
        reason = "CreateContainerConfigError"
        if inst.reason == reason and inst.message == message:
            return  # said already; a later pass starts it once the object exists
        waiting = inst.model_copy(update={"reason": reason, "message": message})
        await self._report(waiting, stored.revision)
        self._did("wait_for_config")
        await self._record(_ref(inst), reason, message, self.actor, event_type=EventType.WARNING)

    async def _refresh_files(self, inst: Instance) -> None:
        """Bring a running pod's file volumes up to date with its ConfigMaps and Secrets."""
        volumes = [v for v in inst.template.volumes if v.files]
        if not volumes:
            return
        try:
            configs = await self._configs(inst)
            files = {v.name: volume_files(v, inst, configs, self._facts()) for v in volumes}
        except MissingConfig:
            return  # a deleted object: the pod keeps what it has, as in Kubernetes
        digest = files_digest(files)
        if self._files.get(inst.uid) == digest:
            return
        for volume, content in files.items():
            await self.runtime.update_files(inst.uid, volume, content)
        self._did("update_files")
        if inst.uid in self._files:  # not just adopted: the content changed
            await self._record(
                _ref(inst), "FilesUpdated", "configuration files updated", self.actor
            )
        self._files[inst.uid] = digest

    async def _report_running(self, stored: Stored[Instance], pod: PodStatus) -> None:
        inst = stored.value
        ready = not any(c.readiness_probe for c in inst.template.containers)
        running = inst.transition(InstanceState.RUNNING, "Started", "all containers running")
        running = running.model_copy(
            update={
                "container_ids": {c.name: c.id for c in pod.containers},
                "started_at": self.clock.now(),
                "finished_at": None,
                "exit_code": None,
                "not_before": None,
                # With readiness probes, ready waits for them to pass.
                "ready": ready,
                "ready_since": self.clock.now() if ready else None,
            }
        )
        revision = await self._report(running, stored.revision)
        # Probed from now on, not once a pass or the watch brings the record back.
        self._running[inst.uid] = Stored(running, stored.key, revision, stored.created)
        self._probe_due.set()
        await self._record(_ref(inst), "Started", f"started on {self.name}", self.actor)

    async def _watch_running(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        inst = stored.value
        if pod is not None and not pod.exited:
            await self._refresh_files(inst)
            return
        ended = self.clock.now()
        killed = self._killed.pop(inst.uid, None)
        if killed is not None:  # stopped for a failed liveness probe: no crash of its own
            finished = inst.transition(InstanceState.FAILED, "LivenessProbeFailed", killed)
        elif pod is None:
            message = "its containers are gone from the runtime (was the node restarted?)"
            finished = inst.transition(InstanceState.FAILED, "ContainerMissing", message)
        elif pod.exited:
            for container in pod.containers:  # a pod finishes as a whole
                if container.state != "exited":
                    await self.runtime.stop(inst.uid, self._grace(inst))
                    break
            codes = {c.name: c.exit_code for c in pod.containers if c.exit_code is not None}
            worst = next((code for code in codes.values() if code != 0), 0)
            # The runtime's note adds what the code alone does not say (OOMKilled, a
            # lost exit code); notes that only restate the exit are left out.
            notes = {
                c.name: c.message
                for c in pod.containers
                if c.message and not c.message.startswith("exited")
            }
            shown = ", ".join(
                f"{name} exited {code}" + (f": {notes[name]}" if name in notes else "")
                for name, code in codes.items()
            )
            if worst == 0:
                finished = inst.transition(InstanceState.STOPPED, "Completed", shown)
            else:
                finished = inst.transition(InstanceState.FAILED, "Error", shown)
            finished = finished.model_copy(update={"exit_code": worst})
            exits = [c.finished_at for c in pod.containers if c.finished_at is not None]
            if exits:  # when it ended, not when this pass saw it (the agent may have been down)
                ended = min(max(exits), ended)
        else:
            return
        finished = finished.model_copy(update={"finished_at": ended, "ready": False})
        await self._report(finished, stored.revision)
        self._did("report_exit")
        if pod is not None:
            oom = sum(1 for c in pod.containers if c.message.startswith("OOMKilled"))
            if oom:
                self.metrics.inc(Catalogue.INSTANCE_OOM_KILLS, amount=oom)
        kind = EventType.NORMAL if finished.state == InstanceState.STOPPED else EventType.WARNING
        await self._record(
            _ref(inst), finished.reason, finished.message, self.actor, event_type=kind
        )

    async def _teardown(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        inst = stored.value
        attributes: SpanAttributes = {"shoal.instance": inst.key, "shoal.node": self.name}
        with linked_span("shoal.stop", [inst.trace_context], attributes):
            await self._stop_and_remove(stored, pod)

    async def _stop_and_remove(self, stored: Stored[Instance], pod: PodStatus | None) -> None:
        inst = stored.value
        try:
            if pod is not None:
                with contextlib.suppress(NotFound):
                    await self.runtime.stop(inst.uid, self._grace(inst))
            # Without a pod too: the logs kept of its previous run go with it.
            await self.runtime.remove(inst.uid)
        except (RevisionConflict, Unavailable):
            raise
        except ShoalError as exc:
            self._did("teardown", "error")
            await self._teardown_failed(inst, exc)
            return
        self._stuck.pop(inst.uid, None)
        try:
            removed = await self.state.remove(inst, stored.revision)
        except RevisionConflict:
            self._again = True
            return
        if removed is not None:
            self._written = max(self._written, removed)
        self._did("teardown")
        why = f": {inst.message}" if inst.message else ""
        await self._record(_ref(inst), "Removed", f"stopped and removed{why}", self.actor)

    async def _teardown_failed(self, inst: Instance, exc: ShoalError) -> None:
        """Back off before the next try; say what is stuck once per kind of failure."""
        previous = self._stuck.get(inst.uid)
        failures = 1 if previous is None else previous.failures + 1
        delay = min(_TEARDOWN_RETRY_FIRST * 2 ** (failures - 1), _TEARDOWN_RETRY_CAP)
        failure = f"{type(exc).__name__}: {exc.message}"
        self._stuck[inst.uid] = _StuckTeardown(failures, self.clock.monotonic() + delay, failure)
        if previous is not None and previous.failure == failure:
            log.debug("node loop: removing %s failed again (%d times)", inst.key, failures)
            return
        log.warning(
            "node loop: cannot remove the pod of %s (retrying in %g s, then less often): %s",
            inst.key,
            delay,
            exc.message,
        )
        message = (
            f"cannot remove its pod on {self.name}: {exc.message}. Retrying with a backoff; "
            f"if it stays stuck, stop the agent on {self.name} and run `shoal node reset "
            "--data-dir DIR` there, which removes what that node left running"
        )
        await self._record(
            _ref(inst), "TeardownFailed", message, self.actor, event_type=EventType.WARNING
        )

    async def _probe_loop(self) -> None:
        """Probe each running instance as soon as one of its checks is due.

        It sleeps until the earliest check is due (at most ``probe_tick``), or
        until an instance starts running or a check ends; each instance's
        checks run in a task of their own, so a slow check (an HTTP probe
        waiting out its timeout) delays no other instance's.
        """
        assert self._tasks is not None
        while True:
            self._probe_due = anyio.Event()
            now, mono = self.clock.now(), self.clock.monotonic()
            wait = self.probe_tick
            for stored in list(self._running.values()):
                uid = stored.value.uid
                if uid in self._probing:
                    continue
                due = self.probes.due(stored.value, now, mono)
                if due:
                    self._probing.add(uid)
                    self._tasks.start_soon(self._probe_alone, stored, due, mono)
                    continue
                later = self.probes.next_due_in(stored.value, now, mono)
                if later is not None:
                    wait = min(wait, later)
            await _wait_either(self._probe_due, self.clock, wait)

    async def _probe_alone(
        self, stored: Stored[Instance], due: list[tuple[str, str, Probe]], mono: float
    ) -> None:
        try:
            await self._probe_instance(stored, due, mono)
        finally:
            self._probing.discard(stored.value.uid)
            self._probe_due.set()  # its next check is due later: the schedule changed

    async def probe_once(self) -> None:
        """Run every due probe of this node's running instances and act on the verdicts."""
        now, mono = self.clock.now(), self.clock.monotonic()
        async with anyio.create_task_group() as tg:
            for stored in list(self._running.values()):
                due = self.probes.due(stored.value, now, mono)
                if due:
                    tg.start_soon(self._probe_instance, stored, due, mono)

    async def _probe_instance(
        self, stored: Stored[Instance], due: list[tuple[str, str, Probe]], mono: float
    ) -> None:
        try:
            await self._probe_and_act(stored, due, mono)
        except RevisionConflict:
            pass  # the record changed under us: the next round probes what it is now
        except Exception:  # a probe must never take the node loop down with it
            log.exception("node loop: probing instance %s failed", stored.value.key)

    async def _probe_and_act(
        self, stored: Stored[Instance], due: list[tuple[str, str, Probe]], mono: float
    ) -> None:
        inst = stored.value
        async with self._probe_limiter:
            try:
                pod = await self.runtime.inspect(inst.uid)
            except NotFound:
                return  # the next reconcile pass reports the missing pod
            unready: tuple[str, str] | None = None
            """The container and message of a readiness probe this round made fail."""
            for container, kind, probe in due:
                ok, message = await run_check(probe, self.runtime, pod, container)
                failed = self.probes.observe(inst.uid, container, kind, probe, ok, message, mono)
                if failed and kind == "readiness" and unready is None:
                    unready = container, message
        failing = self.probes.failing_liveness(inst)
        ready = self.probes.ready(inst)
        if failing is not None:
            if inst.ready and not ready:  # unready at once, not only once the stop is over
                await self._set_ready(stored, ready, unready)
            await self._kill_unhealthy(stored, *failing)
        elif ready != inst.ready:
            await self._set_ready(stored, ready, unready)
        elif unready is not None:  # not ready from its start: say why once, not every period
            message = _not_ready(unready)
            await self._record(
                _ref(inst), "NotReady", message, self.actor, event_type=EventType.WARNING
            )

    async def _set_ready(
        self, stored: Stored[Instance], ready: bool, unready: tuple[str, str] | None = None
    ) -> None:
        inst = stored.value

        def change(current: Instance) -> Instance | None:
            if current.uid != inst.uid or current.state != InstanceState.RUNNING:
                return None
            if current.ready == ready:  # written already; this loop's view was older
                return None
            since = self.clock.now() if ready else None
            return current.model_copy(update={"ready": ready, "ready_since": since})

        await self._update(stored, change)
        if inst.uid in self._running:  # the next check compares with what was written
            self._running[inst.uid] = replace(
                stored, value=inst.model_copy(update={"ready": ready})
            )
        self._did("set_ready")
        verb = "passes its readiness probes" if ready else _not_ready(unready)
        kind = EventType.NORMAL if ready else EventType.WARNING
        await self._record(
            _ref(inst), "Ready" if ready else "NotReady", verb, self.actor, event_type=kind
        )

    async def _kill_unhealthy(self, stored: Stored[Instance], container: str, message: str) -> None:
        """Stop a pod whose liveness probe failed, and report it failed for that reason.

        The event comes first (the stop may take the whole grace period), once
        however often the stop is tried. Whichever reports the exit, this method
        or a pass that sees it first (:meth:`_watch_running`), reports it as
        ``LivenessProbeFailed``, never the kill's SIGTERM or SIGKILL as a crash.
        """
        inst = stored.value
        why = f"liveness probe of {container} failed: {message}"
        if inst.uid not in self._killed:
            await self._record(
                _ref(inst),
                "Unhealthy",
                f"{why}; stopping it (grace {self._grace(inst):g} s)",
                self.actor,
                event_type=EventType.WARNING,
            )
        self._killed[inst.uid] = why
        with contextlib.suppress(NotFound):  # it may have exited meanwhile
            await self.runtime.stop(inst.uid, self._grace(inst))
        await self._report_killed(stored, why)

    async def _report_killed(self, stored: Stored[Instance], why: str) -> None:
        inst = stored.value

        def change(current: Instance) -> Instance | None:
            if current.uid != inst.uid or current.state != InstanceState.RUNNING:
                return None
            failed = current.transition(InstanceState.FAILED, "LivenessProbeFailed", why)
            return failed.model_copy(update={"finished_at": self.clock.now(), "ready": False})

        await self._update(stored, change)
        self._killed.pop(inst.uid, None)
        self._did("kill_unhealthy")
        self._running.pop(inst.uid, None)
        self.probes.forget(set(self._running))

    def _grace(self, inst: Instance) -> float:
        """Seconds from SIGTERM to SIGKILL when ``inst`` stops: its template's, else the node's."""
        own = inst.template.termination_grace_period_seconds
        return self.stop_grace if own is None else float(own)

    async def _remove_orphan(self, pod: PodStatus) -> _Outcome:
        async with self._limiter:
            try:
                await self.runtime.stop(pod.uid, self.stop_grace)
                await self.runtime.remove(pod.uid)
            except ShoalError:
                self._did("remove_orphan", "error")
                log.exception("node loop: removing orphan pod %s failed", pod.name)
                return None
        self._did("remove_orphan")
        await self._record(
            ObjectRef(kind="Instance", namespace=pod.namespace, name=pod.name),
            "OrphanRemoved",
            f"pod {pod.name} had no instance record on {self.name}; removed it",
            self.actor,
        )
        return None


class _Assigned:
    """The node's assignments as its informer reads them: a list, then a watch."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    async def list(self, prefix: str) -> ListResult:
        return await self.state.assignments()

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        assert start_revision is not None, "an informer watches from the revision it listed"
        return self.state.watch_assignments(start_revision)


_RACE_RETRY = 1.0
"""Seconds a pass that lost a write race waits at most for the watch to bring the change."""

_Outcome = Literal["conflict", "unavailable"] | None
"""Why a sync wants another pass soon: it lost a write race, or the store went away."""


def _nothing() -> None:
    """Do nothing: no pass runs by itself outside :meth:`NodeLoop.run`; no listener to end."""


async def _wait_either(changed: anyio.Event, clock: Clock, delay: float) -> None:
    """Return once ``changed`` is set or ``delay`` seconds of ``clock`` have passed."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as waiter:

            async def timer() -> None:
                await clock.sleep(delay)
                scope.cancel()

            waiter.start_soon(timer)
            await changed.wait()
            scope.cancel()


def _ref(inst: Instance) -> ObjectRef:
    return ObjectRef(kind="Instance", namespace=inst.namespace, name=inst.name)


def _node_ref(name: str) -> ObjectRef:
    return ObjectRef(kind="Node", name=name)


def _not_ready(unready: tuple[str, str] | None) -> str:
    """Say which readiness probe failed and how (``unready``: its container and message)."""
    if unready is None:
        return "failed its readiness probe"
    container, message = unready
    return f"failed its readiness probe (container {container}: {message})"
