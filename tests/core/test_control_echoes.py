"""The running control loop does not wake a workload for its own writes that need no pass.

A pass that creates instances or writes a workload's status has accounted for
them; when they come back through the watch, only the cache takes them. Any
other change (a node's report, an operator's change) still wakes the workload.
"""

from collections.abc import AsyncIterator

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from pydantic import BaseModel

from shoal.core._repo import Repository, instance_key
from shoal.interfaces import Instance, InstanceState, WorkloadPhase, WorkloadSpec
from tests.core.support import Cluster, eventually, make_node, spec

pytestmark = pytest.mark.anyio


@pytest.fixture
async def repo(cluster: Cluster) -> AsyncIterator[Repository]:
    """One node, n1, and the cluster's control loop running (not driven pass by pass)."""
    repo = Repository(cluster.store, cluster.clock)
    await repo.put("/nodes/n1", make_node("n1"))
    async with anyio.create_task_group() as tg:
        await tg.start(cluster.control.run)
        yield repo
        tg.cancel_scope.cancel()


async def test_the_loops_own_creates_and_status_wake_no_pass_a_nodes_report_does(
    cluster: Cluster, repo: Repository
) -> None:
    await cluster.service.apply([spec("web", replicas=3)])

    async def placed() -> bool:
        instances = await cluster.service.list_instances(workload="web")
        status = (await cluster.workload()).status
        return len(instances) == 3 and status.scheduled_replicas == 3

    await eventually(placed)
    await wait_all_tasks_blocked()
    assert cluster.control.reconciled == 1  # the apply's pass; its writes woke nothing
    assert cluster.control.echoes == {}  # each came back and was recognised

    # The node reports one instance running: that is news, and its workload is woken.
    first = (await cluster.service.list_instances(workload="web"))[0]
    running = first.model_copy(update={"state": InstanceState.RUNNING, "ready": True})
    await repo.put(instance_key("default", first.name), running)

    async def counted() -> bool:
        return (await cluster.workload()).status.running_replicas == 1

    await eventually(counted)
    await wait_all_tasks_blocked()
    assert cluster.control.reconciled == 2


async def test_a_job_that_finishes_expires_after_its_ttl_with_no_pass_between(
    cluster: Cluster, repo: Repository
) -> None:
    await cluster.service.apply(
        [
            spec(
                "once",
                1,
                "busybox",
                mode="job",
                restart_policy="Never",
                job={"ttl_seconds_after_finished": 30},
            )
        ]
    )

    async def one() -> Instance | None:
        instances = await cluster.service.list_instances(workload="once")
        return instances[0] if instances else None

    async def exists() -> bool:
        return await one() is not None

    await eventually(exists)
    inst = await one()
    assert inst is not None
    done = inst.model_copy(
        update={
            "state": InstanceState.STOPPED,
            "exit_code": 0,
            "finished_at": cluster.clock.now(),
        }
    )
    await repo.put(instance_key("default", inst.name), done)

    async def finished() -> bool:
        return (await cluster.workload("once")).status.finished_at is not None

    await eventually(finished)
    await wait_all_tasks_blocked()
    cluster.clock.advance(29)
    await wait_all_tasks_blocked()
    assert not (await cluster.workload("once")).deleting

    async def gone_or_going() -> bool:
        workloads = await cluster.service.list_workloads()
        return all(w.spec.name != "once" or w.deleting for w in workloads)

    cluster.clock.advance(1)  # its TTL is up (well before the loop's 300 s resync)
    await eventually(gone_or_going)


async def one_placed(cluster: Cluster) -> None:
    """Apply a one-replica ``web`` and wait until it is placed and the loop is idle."""
    await cluster.service.apply([spec("web", replicas=1)])

    async def placed() -> bool:
        return (await cluster.workload()).status.scheduled_replicas == 1

    await eventually(placed)
    await wait_all_tasks_blocked()


async def test_a_write_that_loses_to_a_change_already_queued_is_not_retried_later(
    cluster: Cluster, repo: Repository
) -> None:
    """The pass that follows at once reads the winner: no backoff retry on top of it."""
    await one_placed(cluster)
    control = cluster.control
    retried: list[str] = []
    retry = control.queue.retry

    def counted_retry(key: str) -> float:
        retried.append(key)
        return retry(key)

    control.queue.retry = counted_retry  # type: ignore[method-assign]
    put = control.repo.put
    raced: list[str] = []

    async def racing_put(key: str, value: BaseModel, expected_revision: int | None = None) -> int:
        if key == "/workloads/default/web" and not raced:  # the pass's status write
            raced.append(key)
            await cluster.service.scale("web", 2)  # an operator's change lands first
            await wait_all_tasks_blocked()  # its watch event queues the workload again
        return await put(key, value, expected_revision)

    control.repo.put = racing_put  # type: ignore[method-assign]
    # The node reports the instance running: the pass that follows writes the status.
    (first,) = await cluster.service.list_instances(workload="web")
    running = first.model_copy(update={"state": InstanceState.RUNNING, "ready": True})
    await repo.put(instance_key("default", first.name), running)

    async def scaled() -> bool:
        return len(await cluster.service.list_instances(workload="web")) == 2

    await eventually(scaled)
    await wait_all_tasks_blocked()
    assert raced  # the status write did lose its race
    assert retried == []


async def test_a_nodes_starting_report_wakes_no_pass_unless_it_ends_a_crash_loop(
    cluster: Cluster, repo: Repository
) -> None:
    """Scheduled and starting read alike; a crash-looping instance's start changes the status."""
    await one_placed(cluster)
    passes = cluster.control.reconciled
    (first,) = await cluster.service.list_instances(workload="web")
    key = instance_key("default", first.name)
    starting = first.transition(InstanceState.STARTING, "Starting", "preparing busybox")
    await repo.put(key, starting.model_copy(update={"start_trace_id": "a" * 32}))
    await wait_all_tasks_blocked()
    assert cluster.control.reconciled == passes

    # Crashed, and restarting after its backoff: the status says degraded until it starts.
    crashed = starting.model_copy(update={"state": InstanceState.SCHEDULED})
    crashed = crashed.model_copy(update={"reason": "CrashLoopBackOff", "restart_count": 2})
    await repo.put(key, crashed)

    async def degraded() -> bool:
        return (await cluster.workload()).status.phase == WorkloadPhase.DEGRADED

    await eventually(degraded)
    await wait_all_tasks_blocked()
    passes = cluster.control.reconciled
    await repo.put(key, crashed.transition(InstanceState.STARTING, "Starting", "again"))

    async def progressing() -> bool:
        return (await cluster.workload()).status.phase == WorkloadPhase.PROGRESSING

    await eventually(progressing)
    assert cluster.control.reconciled == passes + 1


async def test_a_surge_that_fits_nowhere_is_seen_at_once_not_at_the_next_resync(
    cluster: Cluster, repo: Repository
) -> None:
    """The README's httpd: one replica on a host port, max_surge 1 (the default update)."""

    def httpd(image: str) -> WorkloadSpec:
        ports = [{"container_port": 80, "host_port": 8080}]
        return spec(
            "web",
            replicas=1,
            template={"containers": [{"name": "main", "image": image, "ports": ports}]},
        )

    await cluster.service.apply([httpd("busybox")])

    async def placed() -> bool:
        return len(await cluster.service.list_instances(workload="web")) == 1

    await eventually(placed)
    (old,) = await cluster.service.list_instances(workload="web")
    running = old.model_copy(update={"state": InstanceState.RUNNING, "ready": True})
    await repo.put(instance_key("default", old.name), running)

    # The new template's surge instance fits nowhere: its port is the old one's.
    await cluster.service.apply([httpd("busybox:2")])

    async def old_one_makes_room() -> bool:
        instances = {i.name: i for i in await cluster.service.list_instances(workload="web")}
        return instances[old.name].deleting and len(instances) == 2

    await eventually(old_one_makes_room)  # without a resync: the loop's own clock stands still
    events = await cluster.service.list_events(kind="Workload", name="web")
    assert "SurgeUnplaceable" in {e.reason for e in events}
