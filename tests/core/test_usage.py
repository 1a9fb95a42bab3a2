"""The usage sampler and history.

It fills at 10 s, rolls up to 1 min, prunes by age and stays under its cap;
the service reads it against the instance's limits.
"""

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from shoal.core import LocalNode, ManualClock, NodeLoop, ShoalService, UsageSampler
from shoal.interfaces import (
    USAGE_COARSE_KEEP,
    USAGE_FINE_KEEP,
    USAGE_FINE_STEP,
    USAGE_RANGES,
    ContainerStats,
    InstanceState,
    InvalidInput,
    Unavailable,
    UsageSample,
    WorkloadSpec,
    summarize_usage,
)
from shoal.runtime import Fault, MockRuntime
from shoal.state import SqliteUsageHistory
from tests.core.support import Cluster

pytestmark = pytest.mark.anyio

LIMITED = {
    "name": "web",
    "replicas": 2,
    "template": {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            }
        ]
    },
}


def sampler_for(loop: NodeLoop, history: SqliteUsageHistory, cluster: Cluster) -> UsageSampler:
    return UsageSampler(
        loop.name,
        cluster.runtimes[loop.name],
        history,
        cluster.clock,
        lambda: [s.value for s in loop.instances.by_index("node", loop.name)],
    )


async def running(cluster: Cluster) -> NodeLoop:
    loop = await cluster.add_node("n1")
    await cluster.service.apply([WorkloadSpec.model_validate(LIMITED)])
    await cluster.settle()
    return loop


async def rounds(sampler: UsageSampler, clock_advance: float, count: int) -> None:
    for _ in range(count):
        await sampler.sample_once()
        sampler.clock.advance(clock_advance)  # type: ignore[attr-defined]


async def test_sampler_fills_at_10s_and_rolls_whole_minutes_up(cluster: Cluster) -> None:
    loop = await running(cluster)
    runtime = cluster.runtimes["n1"]
    names = sorted(i.name for i in await cluster.service.list_instances())
    async with SqliteUsageHistory() as history:
        sampler = sampler_for(loop, history, cluster)
        runtime.set_stats("main", ContainerStats(name="main", cpu_millicores=100, memory_bytes=10))
        await rounds(sampler, USAGE_FINE_STEP, 3)  # 00:00:00 .. 00:00:20
        runtime.set_stats("main", ContainerStats(name="main", cpu_millicores=200, memory_bytes=30))
        await rounds(sampler, USAGE_FINE_STEP, 9)  # 00:00:30 .. 00:01:50

        step, fine = await history.query(
            "instance", f"default/{names[0]}", "15m", cluster.clock.now()
        )
        assert step == 10
        assert [p.cpu_millicores for p in fine] == [100] * 3 + [200] * 9
        assert fine[1].at - fine[0].at == timedelta(seconds=10)

        step, coarse = await history.query(
            "instance", f"default/{names[0]}", "6h", cluster.clock.now()
        )
        assert step == 60
        # the first minute rolled up (average of 3 x 100 and 3 x 200), the second from its samples
        assert [(p.cpu_millicores, p.memory_bytes) for p in coarse] == [(150, 20), (200, 30)]

        # the node's series sums its two instances
        _, node = await history.query("node", "n1", "15m", cluster.clock.now())
        assert [p.cpu_millicores for p in node][-1] == 400

        series = await ShoalService(
            cluster.store, cluster.clock, local=LocalNode("n1", runtime, None, history)
        ).usage("instance", names[0], range="1h")
        assert (series.node, series.cpu_limit_millicores, series.memory_limit_bytes) == (
            "n1",
            500,
            128 * 1024**2,
        )
        summary = summarize_usage(series)
        assert (summary.cpu_millicores.min, summary.cpu_millicores.max) == (100, 200)
        assert summary.cpu_peak_of_limit == 0.4
        assert summary.samples == 12


async def test_history_prunes_by_age(cluster: Cluster) -> None:
    loop = await running(cluster)
    cluster.runtimes["n1"].set_stats("main", ContainerStats(name="main", cpu_millicores=5))
    async with SqliteUsageHistory() as history:
        sampler = sampler_for(loop, history, cluster)
        # 90 minutes at one round a minute, then 70 minutes at 10 s: fine rows keep one hour
        await rounds(sampler, 60, 90)
        await rounds(sampler, USAGE_FINE_STEP, 6 * 70)
        now = cluster.clock.now()
        _, fine = await history.query("node", "n1", "1h", now)
        assert len(fine) <= USAGE_FINE_KEEP // USAGE_FINE_STEP
        assert fine[0].at >= now - timedelta(seconds=USAGE_FINE_KEEP)
        _, day = await history.query("node", "n1", "24h", now)
        assert len(day) == 90 + 70  # one point a minute for the whole 160 minutes

        cluster.clock.advance(USAGE_COARSE_KEEP)
        await sampler.sample_once()  # a day later: everything before is gone
        assert await history.rows() == 3  # this round's two instances and the node


async def test_history_stays_under_its_cap() -> None:
    cap = 1_000
    async with SqliteUsageHistory(cap=cap) as history:
        start = when = datetime(2026, 1, 1, tzinfo=UTC)
        for round_ in range(60):  # 50 instances x 60 rounds: 3,000 rows offered
            when = start + timedelta(seconds=USAGE_FINE_STEP * round_)
            await history.record(
                [
                    UsageSample(kind="instance", key=f"default/web-{i}", at=when, cpu_millicores=i)
                    for i in range(50)
                ]
            )
            assert await history.rows() <= cap
        assert await history.rows() > cap // 2  # pruned in batches to 95 %, not emptied
        # the newest samples are the ones kept
        _, points = await history.query("instance", "default/web-7", "15m", when)
        assert points[-1].at == when
        assert points[0].at > start  # the oldest went first


async def test_sampler_runs_on_the_clock_and_the_file_survives_a_reopen(
    cluster: Cluster, tmp_path: Path
) -> None:
    loop = await running(cluster)
    path = tmp_path / "usage.db"
    async with SqliteUsageHistory(path) as history:
        sampler = sampler_for(loop, history, cluster)
        async with anyio.create_task_group() as tg:
            await tg.start(sampler.run)
            for expected in (1, 2, 3):
                await wait_all_tasks_blocked()
                cluster.clock.advance(USAGE_FINE_STEP)
                with anyio.fail_after(10):
                    while sampler.rounds < expected:
                        await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    async with SqliteUsageHistory(path) as reopened:
        _, points = await reopened.query("node", "n1", "15m", cluster.clock.now())
        assert len(points) == 3


class StatsFailOnce(MockRuntime):
    """A runtime whose first stats call fails as a cgroup file that vanished mid-read does."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.failed = anyio.Event()

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        if not self.failed.is_set():
            self.failed.set()
            raise FileNotFoundError(f"/sys/fs/cgroup/shoal/{uid}/cpu.stat")
        return await super().stats(uid)


async def test_sampler_keeps_sampling_after_a_round_fails(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = StatsFailOnce(cluster.clock)
    loop = await cluster.add_node("n1", runtime)
    await cluster.service.apply([WorkloadSpec.model_validate(LIMITED)])
    await cluster.settle()
    runtime.set_stats("main", ContainerStats(name="main", cpu_millicores=100))
    async with SqliteUsageHistory() as history:
        sampler = sampler_for(loop, history, cluster)
        async with anyio.create_task_group() as tg:
            await tg.start(sampler.run)
            await wait_all_tasks_blocked()
            cluster.clock.advance(USAGE_FINE_STEP)
            with anyio.fail_after(10):
                await runtime.failed.wait()
            for expected in (1, 2):
                await wait_all_tasks_blocked()
                cluster.clock.advance(USAGE_FINE_STEP)
                with anyio.fail_after(10):
                    while sampler.rounds < expected:
                        await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        _, points = await history.query("node", "n1", "15m", cluster.clock.now())
    assert [p.cpu_millicores for p in points] == [200, 200]  # the failed round is a gap
    assert "usage sampling of node n1 failed" in caplog.text


async def test_service_refuses_a_bad_range_and_another_nodes_history(cluster: Cluster) -> None:
    await running(cluster)
    await cluster.add_node("n2")
    async with SqliteUsageHistory() as history:
        service = ShoalService(
            cluster.store,
            cluster.clock,
            local=LocalNode("n2", cluster.runtimes["n2"], None, history),
        )
        with pytest.raises(InvalidInput) as bad:
            await service.usage("node", "n2", range="2h")
        assert all(r in str(bad.value) for r in USAGE_RANGES)
        with pytest.raises(Unavailable, match="node n1"):
            await service.usage("node", "n1")
        node = await service.usage("node", "n2", range="24h")
        assert (node.step_seconds, node.points, node.cpu_limit_millicores) == (60, [], 4000)


class _CommitFails:
    """A connection whose next COMMIT fails as SQLITE_BUSY does: the transaction stays open."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.failures = 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, parameters)


async def test_history_stays_usable_after_a_commit_fails(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def round_at(seconds: int) -> list[UsageSample]:
        at = start + timedelta(seconds=seconds)
        return [UsageSample(kind="node", key="n1", at=at, cpu_millicores=seconds)]

    async with SqliteUsageHistory(path) as history:
        await history.record(round_at(0))
        table = history._table
        assert table is not None
        table.conn = _CommitFails(table.conn)  # type: ignore[assignment]
        with pytest.raises(Unavailable, match="database is locked"):
            await history.record(round_at(70))  # would roll the first minute up
        assert not table.conn.in_transaction
        assert table.rolled_until == int(start.timestamp())  # not ahead of the file

        for seconds in (80, 90, 130):  # later rounds write, and roll up, again
            await history.record(round_at(seconds))
        _, points = await history.query("node", "n1", "15m", start + timedelta(seconds=130))
        assert [p.cpu_millicores for p in points] == [0, 80, 90, 130]  # 70 was rolled back
        with sqlite3.connect(path) as other:
            (rows,) = other.execute("SELECT count(*) FROM usage").fetchone()
        assert await history.rows() == rows == 4 + 2  # four fine rows, minutes 0 and 1


async def test_an_instance_that_does_not_run_is_sampled_with_its_restarts(
    cluster: Cluster,
) -> None:
    """Sampled only while running, a crash loop showed no restarts, and `top --range` lost it."""
    runtime = MockRuntime(cluster.clock, faults=[Fault.exits(after=0, exit_code=1, image="crash")])
    loop = await cluster.add_node("n1", runtime)
    crashing = dict(LIMITED, replicas=1)
    crashing["template"] = {"containers": [{"name": "main", "image": "crash"}]}
    await cluster.service.apply([WorkloadSpec.model_validate(crashing)])
    async with SqliteUsageHistory() as history:
        sampler = sampler_for(loop, history, cluster)
        for _ in range(4):
            await cluster.settle()
            await sampler.sample_once()
            cluster.clock.advance(USAGE_FINE_STEP)
        (inst,) = await cluster.service.list_instances()
        assert inst.state != InstanceState.RUNNING and inst.restart_count >= 3
        _, points = await history.query(
            "instance", f"default/{inst.name}", "15m", cluster.clock.now()
        )
        assert len(points) == 4 and {p.cpu_millicores for p in points} == {0}
        assert points[-1].restarts == inst.restart_count
        assert points[-1].restarts - points[0].restarts >= 2
