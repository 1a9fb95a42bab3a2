"""An apply that loses a race: tried again when no spec changed, refused when one did.

A rollout keeps the control loop writing the workload's status; a user's
apply of the same workload reads it, plans, and writes with a compare on
what it read. A status write in between must not fail the apply (found by a
soak run: two of 75 applies of a single client failed so); another writer's
change of the spec must.
"""

from collections.abc import Awaitable, Callable, Sequence

import pytest

from shoal.core import ManualClock, Repository, ShoalService
from shoal.core._service import APPLY_ATTEMPTS
from shoal.interfaces import (
    Compare,
    Conflict,
    DeleteOp,
    PutOp,
    TxnResult,
    WorkloadPhase,
)
from shoal.state import MemoryStore
from tests.core.support import spec

pytestmark = pytest.mark.anyio

KEY = "/workloads/default/web"


class RacedStore(MemoryStore):
    """A MemoryStore that runs ``before_txn`` ahead of each of its next ``times`` txns."""

    before_txn: Callable[[], Awaitable[None]] | None = None
    times = 1
    raced = 0
    """How many times ``before_txn`` ran."""

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        if self.before_txn is not None and self.raced < self.times:
            self.raced += 1
            await self.before_txn()
        return await super().txn(compares, success, failure)


async def status_written(repo: Repository, **fields: object) -> None:
    """Write the workload's status ``fields`` as the control loop does: its spec untouched."""
    stored = await repo.get_workload("default", "web")
    assert stored is not None
    status = stored.value.status.model_copy(update=fields)
    updated = stored.value.model_copy(update={"status": status})
    await repo.put(KEY, updated, expected_revision=stored.revision)


async def test_an_apply_raced_by_a_status_write_is_tried_again_and_keeps_the_status() -> None:
    clock = ManualClock()
    async with RacedStore(clock=clock) as store:
        service, repo = ShoalService(store, clock), Repository(store, clock)
        await service.apply([spec(replicas=2)])

        async def rollout_progress() -> None:
            await status_written(repo, phase=WorkloadPhase.PROGRESSING)

        store.before_txn = rollout_progress
        result = await service.apply([spec(replicas=2, image="busybox:2")])

    assert store.raced == 1
    (applied,) = result.workloads
    assert applied.spec.template.containers[0].image == "busybox:2"
    assert applied.generation == 2
    assert applied.status.phase == WorkloadPhase.PROGRESSING  # the loop's write is kept


async def test_a_daemon_whose_node_count_changed_under_an_apply_is_applied_all_the_same() -> None:
    clock = ManualClock()
    async with RacedStore(clock=clock) as store:
        service, repo = ShoalService(store, clock), Repository(store, clock)
        await service.apply([spec(mode="daemon")])

        async def a_node_joins() -> None:  # the control loop counts the eligible nodes again
            await status_written(repo, desired_replicas=3)

        store.before_txn = a_node_joins
        result = await service.apply([spec(mode="daemon", image="busybox:2")])

    assert store.raced == 1
    (applied,) = result.workloads
    assert applied.spec.template.containers[0].image == "busybox:2"
    assert applied.status.desired_replicas == 3


async def test_an_apply_raced_by_another_writers_change_is_refused_with_nothing_applied() -> None:
    clock = ManualClock()
    async with RacedStore(clock=clock) as store:
        service = ShoalService(store, clock)
        await service.apply([spec(replicas=2)])

        async def someone_scales() -> None:
            await service.scale("web", 5)

        store.before_txn = someone_scales
        with pytest.raises(Conflict, match="changed by another writer while it ran") as caught:
            await service.apply([spec(replicas=2, image="busybox:2")])
        assert "shoal diff" in caught.value.message
        stored = await Repository(store, clock).get_workload("default", "web")

    assert stored is not None
    assert stored.value.spec.replicas == 5  # the other writer's change stands
    assert stored.value.spec.template.containers[0].image == "busybox"  # this apply's does not


async def test_an_apply_that_loses_every_try_says_so_with_nothing_applied() -> None:
    clock = ManualClock()
    async with RacedStore(clock=clock) as store:
        service, repo = ShoalService(store, clock), Repository(store, clock)
        await service.apply([spec(replicas=2)])
        phases = [WorkloadPhase.PROGRESSING, WorkloadPhase.RUNNING] * APPLY_ATTEMPTS

        async def busy_loop() -> None:
            await status_written(repo, phase=phases.pop())

        store.before_txn, store.times = busy_loop, APPLY_ATTEMPTS
        with pytest.raises(Conflict, match=f"lost {APPLY_ATTEMPTS} races in a row"):
            await service.apply([spec(replicas=2, image="busybox:2")])
        stored = await repo.get_workload("default", "web")

    assert store.raced == APPLY_ATTEMPTS
    assert stored is not None and stored.value.generation == 1
    assert stored.value.spec.template.containers[0].image == "busybox"
