"""MockRuntime beyond the protocol: its defaults, its faults and its test hooks.

Time-based faults run on :class:`ManualClock`, so every outcome follows from
``advance`` alone; no test sleeps to wait for something to happen.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest

from shoal.interfaces import (
    Clock,
    ConfigMapVolume,
    Conflict,
    Container,
    ContainerRuntime,
    ContainerState,
    ContainerStats,
    EmptyDirVolume,
    ExecResult,
    Forbidden,
    HostPathVolume,
    ImageError,
    InvalidInput,
    NotFound,
    PodSpec,
    PodStatus,
    ProjectedFile,
    RuntimeFailure,
    Volume,
    VolumeMount,
)
from shoal.runtime import Fault, FaultKind, Faults, MockRuntime

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=UTC)
WAIT = 5.0


class ManualClock:
    """A Clock that moves only when :meth:`advance` is called."""

    def __init__(self) -> None:
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()
        self._new_sleeper: anyio.Event | None = None

    def now(self) -> datetime:
        return START + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake))
        if self._new_sleeper is not None:
            self._new_sleeper.set()
        await wake.wait()

    def advance(self, seconds: float) -> None:
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            heapq.heappop(self._sleepers)[2].set()

    async def wait_for_sleeper(self) -> None:
        """Return once some task sleeps on this clock (bounded by the caller)."""
        while not self._sleepers:
            self._new_sleeper = anyio.Event()
            await self._new_sleeper.wait()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def runtime(clock: ManualClock, anyio_backend: str) -> AsyncIterator[MockRuntime]:
    async with MockRuntime(clock) as runtime:
        yield runtime


def spec(uid: str = "pod-1", *containers: tuple[str, str]) -> PodSpec:
    """Return a pod whose containers are (name, image) pairs; one 'main' by default."""
    pairs = containers or (("main", "app:1"),)
    return PodSpec(
        uid=uid,
        name=f"web-{uid}",
        namespace="default",
        workload="web",
        containers=[Container(name=name, image=image) for name, image in pairs],
    )


async def running_pod(runtime: MockRuntime, uid: str = "pod-1") -> PodStatus:
    await runtime.create(spec(uid))
    return await runtime.start(uid)


def main_state(pod: PodStatus) -> tuple[ContainerState, int | None]:
    return pod.containers[0].state, pod.containers[0].exit_code


def test_satisfies_the_protocols() -> None:
    assert isinstance(ManualClock(), Clock)
    assert isinstance(MockRuntime(), ContainerRuntime)
    assert MockRuntime.name == "mock"


async def test_container_ids_and_digests_are_deterministic(runtime: MockRuntime) -> None:
    other = MockRuntime()
    first = await runtime.create(spec("pod-1"))
    second = await other.create(spec("pod-1"))
    assert first.containers[0].id == second.containers[0].id == "mock-pod-1-main"
    assert (await runtime.ensure_image("app:1")) == (await other.ensure_image("app:1"))
    assert runtime.pulled_images == {"app:1"}


async def test_start_uses_the_clock_and_logs_a_start_line(
    runtime: MockRuntime, clock: ManualClock
) -> None:
    clock.advance(7)
    pod = await running_pod(runtime)
    assert pod.containers[0].started_at == START + timedelta(seconds=7)
    lines = [line async for line in runtime.logs("pod-1", "main")]
    assert [(line.line, line.stream, line.time) for line in lines] == [
        ("started main", "stdout", START + timedelta(seconds=7))
    ]


async def test_stop_of_a_created_pod_exits_it(
    runtime: MockRuntime,
) -> None:
    await runtime.create(spec())
    assert main_state(await runtime.stop("pod-1", 30)) == (ContainerState.EXITED, 143)


async def test_a_pod_naming_a_container_twice_is_refused(runtime: MockRuntime) -> None:
    with pytest.raises(RuntimeFailure, match="twice"):
        await runtime.create(spec("pod-1", ("main", "app:1"), ("main", "app:2")))
    assert await runtime.list() == []


async def test_volumes_are_accepted_and_host_paths_only_where_allowed() -> None:
    volumes = [
        Volume(name="scratch", empty_dir=EmptyDirVolume()),
        Volume(name="host", host_path=HostPathVolume(path="/no/such/path")),
    ]
    pod = spec().model_copy(update={"volumes": volumes})
    with pytest.raises(Forbidden, match="start the agent with --allow-host-paths"):
        await MockRuntime().create(pod)
    # Nothing is mounted, so a missing path is no reason to refuse.
    created = await MockRuntime(allow_host_paths=True).create(pod)
    assert created.containers[0].state == ContainerState.CREATED


async def test_stop_exits_with_sigterm_code_and_start_restarts(runtime: MockRuntime) -> None:
    await running_pod(runtime)
    assert main_state(await runtime.stop("pod-1", 30)) == (ContainerState.EXITED, 143)
    restarted = await runtime.start("pod-1")
    assert main_state(restarted) == (ContainerState.RUNNING, None)
    assert restarted.containers[0].finished_at is None


async def test_create_fails_fault_leaves_nothing_behind(runtime: MockRuntime) -> None:
    runtime.faults.add(Fault.create_fails(container="main", message="disk full", times=1))
    with pytest.raises(RuntimeFailure, match="disk full") as caught:
        await runtime.create(spec())
    assert caught.value.details == {"uid": "pod-1", "container": "main"}
    assert await runtime.list() == []
    assert len(runtime.faults) == 0  # used up
    await runtime.create(spec())


async def test_image_missing_fault_raises_image_error_naming_the_image(
    runtime: MockRuntime,
) -> None:
    runtime.faults.add(Fault.image_missing("ghost:1"))
    with pytest.raises(ImageError, match="'ghost:1' not found"):
        await runtime.ensure_image("ghost:1")
    with pytest.raises(ImageError, match="ghost:1"):
        await runtime.create(spec("pod-1", ("main", "app:1"), ("side", "ghost:1")))
    assert await runtime.list() == []
    assert (await runtime.ensure_image("app:1")).reference == "app:1"


async def test_exits_fault_fires_when_the_clock_passes_the_delay(
    runtime: MockRuntime, clock: ManualClock
) -> None:
    runtime.faults.add(Fault.exits(after=5, exit_code=3, image="app:1", message="boom"))
    await running_pod(runtime)
    clock.advance(4.9)
    assert main_state(await runtime.inspect("pod-1")) == (ContainerState.RUNNING, None)
    clock.advance(0.1)
    exited = (await runtime.inspect("pod-1")).containers[0]
    assert (exited.state, exited.exit_code, exited.message) == (ContainerState.EXITED, 3, "boom")
    assert exited.finished_at == START + timedelta(seconds=5)
    clock.advance(100)  # noticed late, still dated at the deadline
    assert (await runtime.list())[0].containers[0].finished_at == START + timedelta(seconds=5)


async def test_exits_fault_with_no_delay_crashes_at_once_as_many_times_as_asked(
    runtime: MockRuntime,
) -> None:
    runtime.faults.add(Fault.exits(after=0, exit_code=1, container="main", times=2))
    assert main_state(await running_pod(runtime)) == (ContainerState.EXITED, 1)
    assert main_state(await runtime.start("pod-1")) == (ContainerState.EXITED, 1)
    assert main_state(await runtime.start("pod-1")) == (ContainerState.RUNNING, None)


async def test_slow_start_fault_takes_its_time_on_the_clock(
    runtime: MockRuntime, clock: ManualClock
) -> None:
    runtime.faults.add(Fault.slow_start(seconds=3, container="main"))
    await runtime.create(spec())
    started: list[PodStatus] = []
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:

            async def start() -> None:
                started.append(await runtime.start("pod-1"))

            group.start_soon(start)
            await clock.wait_for_sleeper()
            assert main_state(await runtime.inspect("pod-1")) == (ContainerState.CREATED, None)
            clock.advance(3)
    assert started[0].running
    assert started[0].containers[0].started_at == START + timedelta(seconds=3)


async def test_ignores_sigterm_fault_makes_stop_wait_the_grace_then_kill(
    runtime: MockRuntime, clock: ManualClock
) -> None:
    runtime.faults.add(Fault.ignores_sigterm(image="app:1"))
    await running_pod(runtime)
    stopped: list[PodStatus] = []
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:

            async def stop() -> None:
                stopped.append(await runtime.stop("pod-1", 10))

            group.start_soon(stop)
            await clock.wait_for_sleeper()
            assert (await runtime.inspect("pod-1")).running
            clock.advance(10)
    container = stopped[0].containers[0]
    assert (container.state, container.exit_code) == (ContainerState.EXITED, 137)
    assert container.finished_at == START + timedelta(seconds=10)
    assert "grace" in container.message


async def test_faults_match_by_image_and_container_name(runtime: MockRuntime) -> None:
    runtime.faults.add(Fault.exits(after=0, exit_code=9, image="app:1", container="side"))
    await runtime.create(spec("pod-1", ("main", "app:1"), ("side", "app:1"), ("x", "other:1")))
    pod = await runtime.start("pod-1")
    assert [c.exit_code for c in pod.containers] == [None, 9, None]


def test_faults_set_can_be_added_to_removed_from_and_cleared() -> None:
    missing = Fault.image_missing("ghost:1")
    faults = Faults([missing])
    crash = faults.add(Fault(kind=FaultKind.EXITS, seconds=1))
    assert list(faults) == [missing, crash]
    assert faults.fire(FaultKind.EXITS, "any:1", "any") == crash
    assert faults.fire(FaultKind.CREATE_FAILS, "ghost:1", "main") is None
    faults.remove(Fault.image_missing("ghost:1"))
    assert list(faults) == [crash]
    faults.clear()
    assert len(faults) == 0
    with pytest.raises(ValueError, match="seconds"):
        Fault.slow_start(seconds=-1)
    with pytest.raises(ValueError, match="times"):
        Fault.image_missing("x", times=0)


async def test_kill_makes_a_running_container_exit_now(
    runtime: MockRuntime, clock: ManualClock
) -> None:
    await running_pod(runtime)
    clock.advance(2)
    runtime.kill("pod-1", "main", exit_code=137)
    container = (await runtime.inspect("pod-1")).containers[0]
    assert (container.state, container.exit_code) == (ContainerState.EXITED, 137)
    assert container.finished_at == START + timedelta(seconds=2)
    with pytest.raises(Conflict):
        runtime.kill("pod-1", "main", exit_code=1)
    with pytest.raises(NotFound):
        runtime.kill("pod-1", "nope", exit_code=1)


async def test_simulated_restart_keeps_or_loses_pods(runtime: MockRuntime) -> None:
    await running_pod(runtime, "kept")
    runtime.simulate_restart()
    assert [pod.running for pod in await runtime.list()] == [True]
    runtime.simulate_restart(keep_running=False)
    container = (await runtime.inspect("kept")).containers[0]
    assert (container.state, container.exit_code) == (ContainerState.EXITED, 137)
    runtime.simulate_restart(keep_pods=False)
    assert await runtime.list() == []
    with pytest.raises(NotFound):
        await runtime.inspect("kept")


async def test_logs_since_and_tail_use_the_clock(runtime: MockRuntime, clock: ManualClock) -> None:
    await running_pod(runtime)
    for second in range(1, 4):
        clock.advance(1)
        runtime.write_log("pod-1", "main", f"tick {second}\ntock {second}", stream="stderr")
    since = START + timedelta(seconds=2)
    lines = [line.line async for line in runtime.logs("pod-1", "main", since=since, tail=3)]
    assert lines == ["tock 2", "tick 3", "tock 3"]


async def test_follow_ends_when_an_injected_exit_falls_due(
    runtime: MockRuntime, clock: ManualClock
) -> None:
    runtime.faults.add(Fault.exits(after=5, container="main"))
    await running_pod(runtime)
    seen: list[str] = []
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:

            async def follow() -> None:
                seen.extend(
                    [line.line async for line in runtime.logs("pod-1", "main", follow=True)]
                )

            group.start_soon(follow)
            await clock.wait_for_sleeper()
            runtime.write_log("pod-1", "main", "working")
            clock.advance(5)
    assert seen == ["started main", "working"]


@pytest.mark.parametrize("how", ["remove", "kill", "close"])
async def test_follow_ends_when_the_pod_goes_away(runtime: MockRuntime, how: str) -> None:
    await running_pod(runtime)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            following, ended = anyio.Event(), anyio.Event()

            async def follow() -> None:
                async for _ in runtime.logs("pod-1", "main", follow=True):
                    following.set()
                ended.set()

            group.start_soon(follow)
            await following.wait()
            if how == "remove":
                await runtime.remove("pod-1")
            elif how == "kill":
                runtime.kill("pod-1", "main", exit_code=1)
            else:
                await runtime.aclose()
            await ended.wait()


async def test_exec_and_stats_return_configured_values(runtime: MockRuntime) -> None:
    await running_pod(runtime)
    assert await runtime.exec("pod-1", "main", ["cat", "/ready"]) == ExecResult(
        exit_code=0, stdout="cat /ready"
    )
    runtime.set_exec_result("main", ExecResult(exit_code=1, stderr="not ready"))
    assert (await runtime.exec("pod-1", "main", ["cat", "/ready"])).exit_code == 1
    runtime.set_exec_result("main", None)
    assert (await runtime.exec("pod-1", "main", ["true"])).exit_code == 0

    assert await runtime.stats("pod-1") == [ContainerStats(name="main")]
    runtime.set_stats("main", ContainerStats(name="ignored", cpu_millicores=250, pids=3))
    assert await runtime.stats("pod-1") == [ContainerStats(name="main", cpu_millicores=250, pids=3)]
    await runtime.stop("pod-1", 1)
    assert await runtime.stats("pod-1") == [ContainerStats(name="main")]


async def test_list_holds_thousands_of_pods(runtime: MockRuntime) -> None:
    for index in range(2000):
        await runtime.create(spec(f"pod-{index}"))
        await runtime.start(f"pod-{index}")
    pods = await runtime.list()
    assert len(pods) == 2000
    assert all(pod.running for pod in pods)


def with_init(uid: str, *names: str) -> PodSpec:
    """Return the default pod with init containers of these names (image 'tool:1')."""
    return spec(uid).model_copy(
        update={"init_containers": [Container(name=name, image="tool:1") for name in names]}
    )


async def test_init_fails_fault_fails_start_and_a_new_start_runs_only_what_failed(
    runtime: MockRuntime,
) -> None:
    runtime.faults.add(Fault.init_fails(container="migrate", exit_code=2, message="no db", times=1))
    pod = with_init("pod-1", "fetch", "migrate")
    with pytest.raises(RuntimeFailure) as caught:
        await runtime.run(pod)
    assert caught.value.message == (
        "init container 'migrate' of pod 'pod-1' exited with code 2; its last log lines: "
        "started migrate | no db (the pod's containers were not started)"
    )
    assert main_state(await runtime.inspect("pod-1")) == (ContainerState.CREATED, None)

    assert (await runtime.start("pod-1")).running
    fetch = [line.line async for line in runtime.logs("pod-1", "fetch")]
    migrate = [line.line async for line in runtime.logs("pod-1", "migrate")]
    assert fetch == ["started fetch"]  # succeeded the first time: not run again
    assert migrate == ["started migrate", "no db", "started migrate"]


async def test_init_containers_share_names_and_faults_with_the_containers(
    runtime: MockRuntime,
) -> None:
    with pytest.raises(RuntimeFailure, match="twice"):
        await runtime.create(with_init("pod-1", "main"))
    runtime.faults.add(Fault.image_missing("tool:1"))
    with pytest.raises(ImageError, match="tool:1"):
        await runtime.create(with_init("pod-2", "fetch"))
    assert await runtime.list() == []


async def test_file_reads_follow_updates_except_through_a_sub_path(runtime: MockRuntime) -> None:
    mounts = [
        VolumeMount(name="config", mount_path="/cfg"),
        VolumeMount(name="config", mount_path="/etc/app.conf", sub_path="app.conf"),
    ]
    pod = spec("pod-1").model_copy(
        update={
            "containers": [Container(name="main", image="app:1", volume_mounts=mounts)],
            "volumes": [Volume(name="config", config_map=ConfigMapVolume(name="app"))],
            "files": {"config": [ProjectedFile(path="app.conf", data=b"v1", mode=0o600)]},
        }
    )
    await runtime.run(pod)
    await runtime.update_files("pod-1", "config", [ProjectedFile(path="app.conf", data=b"v2")])

    assert runtime.file("pod-1", "main", "/cfg/app.conf") == ProjectedFile(
        path="app.conf", data=b"v2"
    )
    pinned = runtime.file("pod-1", "main", "/etc/app.conf")
    assert (pinned.data, pinned.mode) == (b"v1", 0o600)
    with pytest.raises(NotFound):
        runtime.file("pod-1", "main", "/cfg/other")
    with pytest.raises(InvalidInput, match="given twice"):
        await runtime.update_files(
            "pod-1",
            "config",
            [ProjectedFile(path="a", data=b""), ProjectedFile(path="a", data=b"")],
        )


async def test_a_sub_path_missing_from_its_file_volume_is_refused(runtime: MockRuntime) -> None:
    mount = VolumeMount(name="config", mount_path="/etc/app.conf", sub_path="app.conf")
    pod = spec("pod-1").model_copy(
        update={
            "containers": [Container(name="main", image="app:1", volume_mounts=[mount])],
            "volumes": [Volume(name="config", config_map=ConfigMapVolume(name="app"))],
        }
    )
    with pytest.raises(RuntimeFailure, match=r"sub_path 'app\.conf' does not exist in volume"):
        await runtime.create(pod)
