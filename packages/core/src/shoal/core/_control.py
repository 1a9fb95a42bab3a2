"""The control loop: workloads → instances → placements, on the leader server.

It reconciles one workload at a time, in proportion to what changed, the way
Kubernetes controllers do with informers and work queues:

* **Caches.** Workloads, instances and nodes are read from caches fed by the
  store's watch (:class:`~shoal.core._informer.Informer`), listed once when
  the leader's term starts. Instances are indexed by workload and by node, and
  a :class:`~shoal.core._placement.UsageIndex` keeps every node's usage, so
  nothing is summed over the cluster per change.
* **A work queue of workload keys** (:class:`~shoal.core._workqueue.WorkQueue`).
  A change wakes only the workloads it affects: a workload's own change, a
  change of one of its instances (but its node's report that it began
  starting it, which no decision reads: :func:`~shoal.core._decision.starting_report`),
  a change of a node (but its heartbeat) for
  the workloads with instances there, and — for the workloads waiting for
  room — any node change or freed slot; a node that comes, goes, or changes
  its labels, state, cordon or capacity wakes every daemon workload. Every ``resync`` seconds every
  workload is queued again, a safety net that normally finds nothing to do.
  The loop's own writes that its pass accounted for in full — new instances,
  a workload's status — wake nothing when they come back
  (:meth:`ControlLoop.echo`).
* **Decide, then apply.** For each key the decision is a pure function of the
  workload's snapshot (:func:`~shoal.core._reconcile.decide`); the keys taken
  in one batch share one scheduler call and :func:`~shoal.core._reconcile.settle`
  turns its answer into writes. The applier (:mod:`shoal.core._applier`)
  writes only what differs, each a compare-and-swap on the revision read
  (fenced on the leader's term by the store it is given). A write that loses
  a race retries its key with a backoff; a store that cannot be reached puts
  the batch back and waits.
* **Freshness.** Before a batch it waits until the caches show its own last
  writes, so it never acts on a view older than what it wrote; it does not act
  while a cache's watch is down.

:meth:`ControlLoop.reconcile_once` reconciles every workload once (tests and
benches drive passes one by one with it; outside :meth:`run` it lists the
store first). The loop is level-triggered and idempotent: a second pass over
an unchanged world writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import anyio
from anyio.abc import TaskStatus

from shoal.interfaces import (
    NO_METRICS,
    Catalogue,
    Clock,
    Instance,
    Metrics,
    Node,
    ObjectRef,
    PlacementRequest,
    Placements,
    Sample,
    Scheduler,
    StateStore,
    Unavailable,
    Workload,
    WorkloadMode,
    WorkloadStatus,
)

from ._applier import ACTOR, Applier, BatchSpan, writes
from ._backoff import Backoff
from ._decision import starting_report
from ._fence import Deposed
from ._informer import Informer
from ._loopmetrics import ChangeMetrics, cluster_samples
from ._placement import InstanceFactory, UsageIndex
from ._reconcile import (
    Decision,
    Settled,
    decide,
    placement_requests,
    settle,
)
from ._repo import (
    INSTANCES,
    NODES,
    WORKLOADS,
    Repository,
    Stored,
    decoder_of,
    heartbeat_only,
    workload_key,
)
from ._tracing import serving, traced
from ._workqueue import WorkQueue

__all__ = ["ControlLoop"]

log = logging.getLogger(__name__)

MAX_ECHOES = 100_000
"""Most writes of this loop remembered as needing no pass of their own (see ControlLoop.echo)."""
BATCH = 256
"""The most workloads reconciled together (one scheduler call, one status sweep)."""


def _workload_of(stored: Stored[Instance]) -> str:
    return f"{stored.value.namespace}/{stored.value.workload}"


def _cause(decision: Decision) -> str | None:
    """The request a decision's writes serve: the one that last changed its workload."""
    return None if decision.workload is None else decision.workload.value.trace_context


def _offers_changed(old: Node, new: Node) -> bool:
    """Whether a node changed in a way that may change which daemons belong on it."""
    return (
        old.labels != new.labels
        or old.state != new.state
        or old.cordoned != new.cordoned
        or old.role != new.role
        or old.allocatable != new.allocatable
    )


class ControlLoop:
    """Turns desired state into placed instances. Run on exactly one server at a time."""

    def __init__(
        self,
        store: StateStore,
        scheduler: Scheduler,
        clock: Clock,
        *,
        resync: float = 300.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        keep_events: int = 5000,
        keep_events_for: float = 7 * 24 * 3600.0,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.repo = Repository(store, clock)
        self.metrics = metrics
        self.changes = ChangeMetrics(clock, metrics)
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        self.resync = resync
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.keep_events = keep_events
        self.keep_events_for = keep_events_for
        self.passes = 0
        """Batches reconciled (a metric; tests wait on it)."""
        self.reconciled = 0
        """Workload keys reconciled (a metric)."""
        self.workloads: Informer[Stored[Workload]] = Informer(
            store, WORKLOADS, decoder_of(Workload), clock
        )
        self.instances: Informer[Stored[Instance]] = Informer(
            store, INSTANCES, decoder_of(Instance), clock
        )
        self.nodes: Informer[Stored[Node]] = Informer(store, NODES, decoder_of(Node), clock)
        self.instances.add_index("workload", lambda s: [_workload_of(s)])
        self.instances.add_index("node", lambda s: [] if s.value.node is None else [s.value.node])
        self.usage = UsageIndex()
        self.queue = WorkQueue(clock, first=0.05, cap=10.0, metrics=metrics, name="control")
        self.waiting: set[str] = set()
        """Workloads with an instance that fits nowhere: woken when room may have appeared."""
        self.daemons: set[str] = set()
        """Daemon workloads: woken when a node comes, goes or changes what it offers."""
        self.draining: set[str] = set()
        """Nodes being drained whose end (nothing but daemons' instances left) is not told yet."""
        self.workloads.listen(self._workload_changed)
        self.instances.listen(self._instance_changed)
        self.nodes.listen(self._node_changed)
        self._watching = False
        self.written: dict[str, int] = {}
        """The revision of this loop's last write, per prefix: the caches catch up to it."""
        self.echoes: dict[str, int] = {}
        """Writes of this loop that need no pass of their own when they come back, by key:
        a new instance, a workload's status (the pass that wrote them accounted for them)."""

    # --- what wakes which key -----------------------------------------------

    def _workload_changed(
        self, key: str, old: Stored[Workload] | None, new: Stored[Workload] | None
    ) -> None:
        stored = new if new is not None else old
        if stored is not None:
            if not self._is_echo(key, new):
                self.queue.add(stored.value.key)
            if new is None:
                self.changes.workload_gone(stored.value.key)
            if new is not None and new.value.spec.mode == WorkloadMode.DAEMON:
                self.daemons.add(new.value.key)
            else:
                self.daemons.discard(stored.value.key)

    def _instance_changed(
        self, key: str, old: Stored[Instance] | None, new: Stored[Instance] | None
    ) -> None:
        before = None if old is None else old.value
        after = None if new is None else new.value
        self.changes.instance_changed(before, after)
        stored = new if new is not None else old
        reported = before is not None and after is not None and starting_report(before, after)
        if stored is not None and not self._is_echo(key, new) and not reported:
            self.queue.add(_workload_of(stored))
        if self.usage.change(before, after):
            self._wake_waiting()

    def _node_changed(self, key: str, old: Stored[Node] | None, new: Stored[Node] | None) -> None:
        del key
        if old is not None and new is not None and heartbeat_only(old.value, new.value):
            return  # a heartbeat alone wakes nothing
        node = new if new is not None else old
        if node is None:
            return
        was = old is not None and old.value.draining
        if new is None or not new.value.draining:
            self.draining.discard(node.value.name)
        elif not was:  # a drain begins (a record listed draining: its end is told once more)
            self.draining.add(node.value.name)
        for stored in self.instances.by_index("node", node.value.name):
            self.queue.add(_workload_of(stored))
        self._wake_waiting()
        if old is None or new is None or _offers_changed(old.value, new.value):
            for daemon in self.daemons:  # a node to run on may have come or gone
                self.queue.add(daemon)

    def _is_echo(self, key: str, new: Stored[Workload] | Stored[Instance] | None) -> bool:
        """Whether this change is a write of this loop that needs no pass (see :meth:`echo`)."""
        noted = self.echoes.pop(key, None)
        return new is not None and noted == new.revision

    def echo(self, keys: list[str], revision: int) -> None:
        """Note that this loop's writes of ``keys`` at ``revision`` wake nothing when seen.

        Only for writes the pass that made them has accounted for in full (a
        new instance, a workload's status): the cache takes them, no pass
        follows. Hence the rule for :func:`~shoal.core._reconcile.decide`:
        what it would do differently once such a write is stored, it does in
        the pass that writes it, or asks for a recheck then (a finished job's
        time to live). The next change of the key, whatever it is, takes the
        note away. A note whose write was seen before it was made (a watch
        faster than this loop's return from the store) stays until MAX_ECHOES
        wait and all are dropped; it costs one pass, as before.
        """
        if len(self.echoes) + len(keys) > MAX_ECHOES:
            self.echoes.clear()
        self.echoes.update(dict.fromkeys(keys, revision))

    def _wake_waiting(self) -> None:
        for key in self.waiting:
            self.queue.add(key)

    def _all_keys(self) -> list[str]:
        keys = {stored.value.key for stored in self.workloads.values()}
        keys.update(_workload_of(stored) for stored in self.instances.values())
        return sorted(keys)

    # --- running ------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile the workloads woken by changes, and every workload each ``resync`` s.

        The caches are listed before the first batch, and every workload is
        queued once then.
        """
        remove_source = self.metrics.add_source(self._samples)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.follow)
                for key in self._all_keys():
                    self.queue.add(key)
                tg.start_soon(self._resync)
                task_status.started()
                await self._work()
        finally:
            remove_source()
            self.close()

    def close(self) -> None:
        """Drop the caches now, not at the garbage collector's next full pass.

        A term's loop holds the whole cluster in them. :meth:`run` ends with
        this; a caller that only calls :meth:`reconcile_once` calls it when done.
        """
        for informer in (self.workloads, self.instances, self.nodes):
            informer.close()

    def _samples(self) -> list[Sample]:
        """The leader's gauges, counted from the caches when the metrics are scraped."""
        return cluster_samples(
            [s.value for s in self.instances.values()],
            [s.value for s in self.nodes.values()],
            self.queue.depth,
        )

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

    async def _resync(self) -> None:
        while True:
            await self.clock.sleep(self.resync)
            for key in self._all_keys():
                self.queue.add(key)

    async def _work(self) -> None:
        """Take batches of keys off the queue and reconcile them, until cancelled.

        Raises:
            Deposed: the leader's term is over; the loop must stop.

        """
        backoff = Backoff(self.clock)
        while True:
            keys = await self.queue.get_many(BATCH)
            try:
                conflicted = await self.reconcile(keys)
            except Deposed:
                raise
            except Unavailable as exc:
                log.warning(
                    "the control loop could not reconcile %d workload(s) (%s); "
                    "they are tried again in %g s",
                    len(keys),
                    exc,
                    backoff.delay,
                )
                for key in keys:
                    self.queue.add(key)  # queued again once done below
                    self.queue.done(key)
                await backoff.wait()
                continue
            backoff.reset()
            for key in keys:
                # A write that lost a race is tried again after a backoff, unless the
                # change it lost to is queued already (a delete beating a status write):
                # that pass comes at once, and it reads the winner.
                if key in conflicted and not self.queue.queued(key):
                    self.queue.retry(key)
                else:
                    self.queue.forget(key)
                self.queue.done(key)

    def wrote(self, key: str, revision: int) -> None:
        """Note a write of this loop: the next batch waits for the caches to show it."""
        for prefix in (WORKLOADS, INSTANCES, NODES):
            if key.startswith(prefix):
                self.written[prefix] = max(self.written.get(prefix, 0), revision)

    def backoff(self, restart_count: int) -> float:
        """Return the delay before restart number ``restart_count + 1``."""
        return float(min(self.backoff_base * 2**restart_count, self.backoff_cap))

    async def reconcile_once(self) -> float | None:
        """Reconcile every workload once; return 0 if another pass should follow at once."""
        await self._fresh()
        return 0 if await self._reconcile(self._all_keys()) else None

    async def _fresh(self) -> None:
        """Make sure the caches are no older than this loop's writes (or list them).

        Raises:
            Unavailable: a cache's watch is down, or the store cannot be read.

        """
        caches = ((self.workloads, WORKLOADS), (self.instances, INSTANCES), (self.nodes, NODES))
        for informer, prefix in caches:
            if not self._watching:
                await informer.refresh()
            elif not informer.following:
                raise Unavailable(f"the cache of {prefix} lost the store; it lists again first")
            else:
                await informer.caught_up(self.written.get(prefix, 0))

    async def reconcile(self, keys: Sequence[str]) -> set[str]:
        """Reconcile the workloads ``namespace/name`` in ``keys``; return those that lost a race.

        Raises:
            Unavailable: the store could not be reached (some writes may have
                landed; a later pass finishes the job).

        """
        await self._fresh()
        return await self._reconcile(keys)

    async def _reconcile(self, keys: Sequence[str]) -> set[str]:
        """Reconcile ``keys`` against the caches as they are (see :meth:`reconcile`).

        A batch that writes something is one span, the root of its own trace,
        linked to the requests that last changed its workloads; each
        workload's writes and events are done on behalf of its request
        (:func:`serving`). A batch that finds nothing to do records no span: a
        trace shows the passes that acted on a request, not every pass that
        looked at its workload again (a status its node reported, a resync).
        """
        with BatchSpan(self.workloads, keys) as span:
            return await self._reconcile_batch(keys, span)

    async def _reconcile_batch(self, keys: Sequence[str], span: BatchSpan) -> set[str]:
        """Decide, place and write one batch; its span opens once it writes."""
        self.passes += 1
        self.reconciled += len(keys)
        nodes = {stored.value.name: stored.value for stored in self.nodes.values()}
        now = self.clock.now()

        factory = InstanceFactory(now, self.instances.keys())
        decisions: list[tuple[str, Decision]] = []
        for key in keys:
            namespace, name = key.split("/", 1)
            decision = decide(
                self.workloads.get(workload_key(namespace, name)),
                self.instances.by_index("workload", key),
                nodes,
                now=now,
                backoff=self.backoff,
                fresh_uid=factory.fresh_uid,
            )
            decisions.append((key, decision))

        requests = [
            request
            for _, decision in decisions
            if decision.workload is not None and decision.pending
            for request in placement_requests(decision.workload.value, decision.pending)
        ]
        if requests:  # the scheduler's span is the batch's child
            span.open()
        placements = self._place(requests, list(nodes.values())) if requests else Placements()

        apply = Applier(self)
        settled_of: dict[str, Settled] = {}
        for key, decision in decisions:
            stored_workload = decision.workload
            if stored_workload is None or decision.delete_workload or decision.expire:
                continue
            with serving(stored_workload.value.trace_context):
                new = factory.maker(stored_workload.value)
                settled_of[key] = settle(decision, placements, new, now)
        prune = self.passes % 100 == 0
        if prune or writes(decisions, settled_of.values()):
            span.open()
        # The new instances first: their nodes start them while this pass writes
        # the rest (a rolling step's old instances going, the events, statuses).
        created = [inst for settled in settled_of.values() for inst in settled.created]
        await apply.create(created, factory.encode)
        for key, decision in decisions:
            with serving(_cause(decision)):
                await apply.ops(key, decision.ops.values())
        statuses: list[tuple[str, Stored[Workload], WorkloadStatus]] = []
        for key, decision in decisions:
            stored_workload = decision.workload
            if stored_workload is None:
                self.waiting.discard(key)
                continue
            with serving(stored_workload.value.trace_context):
                if decision.delete_workload:
                    self.waiting.discard(key)
                    await apply.delete_workload(key, stored_workload)
                    continue
                if decision.expire:
                    await apply.expire(key, stored_workload)
                    continue
                settled = settled_of[key]
                await apply.ops(key, settled.ops)
                await apply.notes(decision.notes)
                if settled.recheck is not None:
                    self.queue.add_after(key, settled.recheck)
                await apply.notes(settled.notes)
                if settled.unschedulable is None:
                    self.waiting.discard(key)
                else:
                    self.waiting.add(key)
                if settled.revert_to is not None:
                    await apply.revert(key, stored_workload, settled.revert_to, now)
                elif decision.promote:
                    await apply.promote(key, stored_workload)
                elif settled.status is not None:
                    statuses.append((key, stored_workload, settled.status))
        for key, stored_workload, status in statuses:
            await apply.status(key, stored_workload, status)
        if prune:
            await self.repo.prune_events(self.keep_events, self.keep_events_for)
        await self._tell_drained()
        return apply.conflicted

    async def _tell_drained(self) -> None:
        """Record that a drain is over: its node holds nothing but daemons' instances.

        ``kubectl drain`` waits until then; `shoal drain` returns at once, so
        this event (on the Node) is how an operator learns it is done.
        """
        for name in sorted(self.draining):
            left = self.instances.by_index("node", name)
            if any(_workload_of(stored) not in self.daemons for stored in left):
                continue
            stay = f"; {len(left)} daemon instance(s) stay, serving the node" if left else ""
            await self.repo.record(
                ObjectRef(kind="Node", name=name),
                "DrainComplete",
                f"node {name} is drained: no instance but daemons' is left on it{stay}; "
                f"`shoal uncordon {name}` places instances there again",
                ACTOR,
            )
            self.draining.discard(name)  # told (a store that failed it: the next batch tells)

    def _place(self, requests: list[PlacementRequest], nodes: list[Node]) -> Placements:
        """Run the scheduler once, recording its duration and how many it placed."""
        began = time.perf_counter()
        with traced("shoal.schedule", {"shoal.requests": len(requests), "shoal.nodes": len(nodes)}):
            placements = self.scheduler.place(requests, nodes, self.usage)
        self.metrics.observe(Catalogue.SCHEDULING_DURATION, time.perf_counter() - began)
        if placements.assigned:
            self.metrics.inc(
                Catalogue.SCHEDULING_ATTEMPTS, "scheduled", amount=len(placements.assigned)
            )
        if placements.failed:
            self.metrics.inc(
                Catalogue.SCHEDULING_ATTEMPTS, "unschedulable", amount=len(placements.failed)
            )
        return placements
