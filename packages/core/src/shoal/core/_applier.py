"""The control loop's writes: a batch's span, whether a batch writes, and the applier.

:class:`~shoal.core._control.ControlLoop` decides a batch of workloads as pure
functions (:mod:`shoal.core._reconcile`); what it decided is written here,
each write compare-and-swap on the revision the loop's cache held, so a write
that lost a race changes nothing and marks its workload for another pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from shoal.interfaces import (
    Actor,
    Compare,
    CompareTarget,
    EventType,
    Instance,
    KeyValue,
    PutOp,
    RevisionConflict,
    Via,
    Workload,
    WorkloadStatus,
)

from ._informer import Informer
from ._reconcile import Decision, Delete, Note, Settled, Write, workload_ref
from ._repo import INSTANCES, Stored, instance_key, workload_key
from ._revisions import revision_of, with_template
from ._tracing import MAX_LINKS, SpanAttributes, linked_span

if TYPE_CHECKING:
    from ._control import ControlLoop

__all__ = ["ACTOR", "TXN_OPS", "Applier", "BatchSpan", "writes"]

ACTOR = Actor(id="control-loop", via=Via.CONTROL_LOOP)
TXN_OPS = 128


class BatchSpan:
    """A batch's span: opened once the batch writes, as of when the batch began.

    A batch that writes nothing ends without a span; one that fails before it
    wrote gets its span then, marked failed.
    """

    def __init__(self, workloads: Informer[Stored[Workload]], keys: Sequence[str]) -> None:
        self._workloads = workloads
        self._keys = keys
        self._began = time.time_ns()
        self._scope = ExitStack()
        self._opened = False

    def open(self) -> None:
        """Open the span (once), linked to the requests that last changed the batch's workloads."""
        if self._opened:
            return
        self._opened = True
        causes = []
        for key in self._keys[: MAX_LINKS * 4]:
            namespace, name = key.split("/", 1)
            stored = self._workloads.get(workload_key(namespace, name))
            if stored is not None and stored.value.trace_context:
                causes.append(stored.value.trace_context)
        attributes: SpanAttributes = {"shoal.workloads": len(self._keys)}
        started = linked_span("shoal.reconcile", causes, attributes, start_time=self._began)
        self._scope.enter_context(started)

    def __enter__(self) -> BatchSpan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(error, Exception):
            self.open()  # a failed batch is worth a span: it says what failed
        self._scope.__exit__(kind, error, tb)


def writes(decisions: Iterable[tuple[str, Decision]], settled: Iterable[Settled]) -> bool:
    """Whether a batch with these decisions and settlements writes anything to the store.

    What :meth:`~shoal.core._control.ControlLoop._reconcile_batch` does with each field: a field
    that leads to a write there is named here (a batch that writes has a span).
    """
    for _, decision in decisions:
        if decision.ops:  # an instance of a workload gone too
            return True
        if decision.workload is None:
            continue
        if decision.delete_workload or decision.expire or decision.promote or decision.notes:
            return True
    return any(
        s.created or s.ops or s.notes or s.status is not None or s.revert_to is not None
        for s in settled
    )


class Applier:
    """Writes one batch's decisions, noting the keys whose writes lost a race."""

    def __init__(self, loop: ControlLoop) -> None:
        self.loop = loop
        self.repo = loop.repo
        self.conflicted: set[str] = set()

    async def ops(self, key: str, ops: Iterable[Write | Delete]) -> None:
        for op in ops:
            try:
                if isinstance(op, Write):
                    revision: int | None = await self.repo.put(
                        op.stored.key, op.value, expected_revision=op.stored.revision
                    )
                else:
                    revision = await self.loop.store.delete(
                        op.stored.key, expected_revision=op.stored.revision
                    )
            except RevisionConflict:
                self.conflicted.add(key)
                continue
            if revision is not None:
                self.loop.wrote(op.stored.key, revision)
            if op.note is not None:
                await self.notes([op.note])

    async def notes(self, notes: Iterable[Note]) -> None:
        for note in notes:
            await self.repo.record(note.obj, note.reason, note.message, ACTOR, event_type=note.type)

    async def create(self, created: list[Instance], encode: Callable[[Instance], bytes]) -> None:
        """Write new instances (``encode`` makes their JSON) in create-only transactions.

        Batching makes placing thousands of instances cost a few transactions
        rather than thousands of round trips; TXN_OPS stays within etcd's
        default limit of operations per transaction.
        """
        expect = self.loop.instances.expect
        written: dict[str, Instance] = {}

        def stored(kv: KeyValue) -> Stored[Instance]:
            """The cache's entry for a new instance, once its write comes back."""
            return Stored(written.pop(kv.key), kv.key, kv.mod_revision, kv.create_revision)

        for start in range(0, len(created), TXN_OPS):
            chunk = created[start : start + TXN_OPS]
            compares: list[Compare] = []
            puts: list[PutOp] = []
            for inst in chunk:
                key, value = instance_key(inst.namespace, inst.name), encode(inst)
                compares.append(Compare(key, CompareTarget.MOD_REVISION, 0))
                puts.append(PutOp(key, value))
                written[key] = inst
            expect(puts, stored)  # one function for all: no closure per instance
            outcome = await self.loop.store.txn(compares, puts)
            if not outcome.succeeded:  # a clash of random names: the next pass makes new ones
                self.conflicted.update(f"{inst.namespace}/{inst.workload}" for inst in chunk)
            else:
                self.loop.wrote(INSTANCES, outcome.revision)
                self.loop.echo([put.key for put in puts], outcome.revision)

    async def status(self, key: str, stored: Stored[Workload], status: WorkloadStatus) -> None:
        updated = stored.value.model_copy(update={"status": status})
        revision = await self._replace(key, stored, updated)
        if revision is not None:
            self.loop.echo([stored.key], revision)

    async def _replace(self, key: str, stored: Stored[Workload], updated: Workload) -> int | None:
        """Write ``updated`` over ``stored`` (compare-and-swap); None if it lost a race (noted)."""
        try:
            revision = await self.repo.put(stored.key, updated, expected_revision=stored.revision)
        except RevisionConflict:
            self.conflicted.add(key)
            return None
        self.loop.wrote(stored.key, revision)
        return revision

    async def revert(self, key: str, stored: Stored[Workload], number: int, now: datetime) -> None:
        """Put the template of revision ``number`` back: the failed rollout is undone."""
        workload = stored.value
        target = revision_of(workload, number)
        failed = workload.revision
        spec = workload.spec.model_copy(update={"template": target.template})
        cause = f"auto-revert: revision {failed} made no progress"
        updated = with_template(workload, spec, now, cause)
        if await self._replace(key, stored, updated) is None:
            return
        message = (
            f"revision {failed} made no progress for "
            f"{workload.spec.update.progress_deadline_seconds} s: rolling back to the template "
            f"of revision {number} (now revision {updated.revision})"
        )
        await self.notes([Note(workload_ref(workload), "RolledBack", message, EventType.WARNING)])

    async def promote(self, key: str, stored: Stored[Workload]) -> None:
        """Promote the current revision's canaries, which are all available (auto_promote)."""
        workload = stored.value
        updated = workload.model_copy(update={"promoted_revision": workload.revision})
        if await self._replace(key, stored, updated) is None:
            return
        message = (
            f"the {workload.spec.update.canary} canaries of revision {workload.revision} are "
            "available: promoted automatically (update.auto_promote); the rollout replaces the rest"
        )
        await self.notes([Note(workload_ref(workload), "Promoted", message)])

    async def expire(self, key: str, stored: Stored[Workload]) -> None:
        """Mark a finished job deleting: its ttl_seconds_after_finished has passed."""
        workload = stored.value
        updated = workload.model_copy(update={"deleting": True})
        if await self._replace(key, stored, updated) is None:
            return
        ttl = workload.spec.job_spec.ttl_seconds_after_finished
        message = f"finished {ttl} s ago (ttl_seconds_after_finished): deleting it"
        await self.notes([Note(workload_ref(workload), "Expired", message)])

    async def delete_workload(self, key: str, stored: Stored[Workload]) -> None:
        workload = stored.value
        try:
            revision = await self.loop.store.delete(stored.key, expected_revision=stored.revision)
        except RevisionConflict:
            self.conflicted.add(key)
            return
        if revision is not None:
            self.loop.wrote(stored.key, revision)
        await self.notes(
            [
                Note(
                    workload_ref(workload),
                    "Deleted",
                    "all instances stopped; workload removed",
                )
            ]
        )
