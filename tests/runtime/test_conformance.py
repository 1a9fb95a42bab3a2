"""ContainerRuntime conformance: what every runtime promises, written against the protocol only.

Each implementation contributes one entry to ``HARNESSES``: an async context
manager factory that yields a :class:`Harness` (the runtime, an image that
exists, one that does not, a long-running command, and a way to make a running
container write a line to its log). The factory receives the pytest request, so
a real runtime can ask for ``tmp_path`` or skip when its binary is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

import anyio
import pytest

from shoal.interfaces import (
    Conflict,
    Container,
    ContainerRuntime,
    ContainerState,
    Forbidden,
    HostPathVolume,
    ImageError,
    LogLine,
    NotFound,
    PodExits,
    PodSpec,
    Volume,
    VolumeMount,
)
from shoal.runtime import Fault, MockRuntime

pytestmark = pytest.mark.anyio

WAIT = 10.0
"""Upper bound, in seconds, on any wait in these tests."""
STARTED_BY: ContextVar[str | None] = ContextVar("started_by", default=None)
"""Set around a start: an exit's listener must not run in the context of its start."""
GRACE = 2.0
"""Grace period given to stop."""


@dataclass(frozen=True)
class Harness:
    """One runtime under test and what the suite needs to know to drive it."""

    runtime: ContainerRuntime
    image: str
    """An image that exists (ensure_image succeeds)."""
    missing_image: str
    """An image that does not exist (ensure_image raises ImageError)."""
    command: list[str] | None
    """A command that keeps the container running until it is stopped."""
    write_line: Callable[[str, str, str], Awaitable[None]]
    """``write_line(uid, container, text)``: make a running container log ``text``."""
    crash: Callable[[str, str], Awaitable[None]] | None = None
    """``crash(uid, container)``: end a running container from outside, as a crash does
    (for runtimes that announce exits, :class:`~shoal.interfaces.PodExits`)."""
    exits_at_once: list[str] | None = None
    """A command with which a container named ``quick`` exits 3 at once (the same)."""


@asynccontextmanager
async def mock_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    missing = "registry.test/missing:1"
    quick = Fault.exits(after=0, exit_code=3, container="quick")
    async with MockRuntime(faults=[Fault.image_missing(missing), quick]) as runtime:

        async def write_line(uid: str, container: str, text: str) -> None:
            runtime.write_log(uid, container, text)

        async def crash(uid: str, container: str) -> None:
            runtime.kill(uid, container)

        yield Harness(
            runtime, "busybox:1.36", missing, ["sleep", "3600"], write_line, crash, ["exit"]
        )


def runc_harness(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Harness]:
    from tests.runtime.oci.harness import runc_harness as harness

    return harness(request)


def cri_harness(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Harness]:
    from tests.runtime.cri.harness import cri_harness as harness

    return harness(request)


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Harness]]] = {
    "mock": mock_harness,
    "runc": runc_harness,
    "cri": cri_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Harness]:
    async with HARNESSES[request.param](request) as harness:
        await harness.runtime.ensure_image(harness.image)
        try:
            yield harness
        finally:
            for pod in await harness.runtime.list():
                await harness.runtime.remove(pod.uid)


def pod_spec(harness: Harness, *containers: str) -> PodSpec:
    """Return a pod with a fresh uid and the named long-running containers."""
    uid = uuid.uuid4().hex
    return PodSpec(
        uid=uid,
        name=f"web-{uid[:6]}",
        namespace="default",
        workload="web",
        containers=[
            Container(name=name, image=harness.image, command=harness.command)
            for name in containers or ("main",)
        ],
    )


async def collect(lines: AsyncIterator[LogLine]) -> list[str]:
    with anyio.fail_after(WAIT):
        return [line.line async for line in lines]


async def test_implements_the_protocol(harness: Harness) -> None:
    assert isinstance(harness.runtime, ContainerRuntime)
    assert harness.runtime.name


async def test_a_runtime_that_announces_exits_names_the_pod_whose_container_ended(
    harness: Harness,
) -> None:
    runtime = harness.runtime
    if not isinstance(runtime, PodExits):
        pytest.skip(f"{runtime.name} announces no exits: the node loop's passes find them")
    assert harness.crash is not None, "a runtime that announces exits needs a crash in its harness"
    heard: list[tuple[str, str | None]] = []
    told = anyio.Event()

    def broken(uid: str) -> None:
        raise RuntimeError("a listener's bug")  # logged; the others are told, the runtime runs

    def listener(uid: str) -> None:
        heard.append((uid, STARTED_BY.get()))  # not in the context of the start
        told.set()

    runtime.on_exit(broken)
    stop = runtime.on_exit(listener)
    crashing, running = pod_spec(harness), pod_spec(harness)
    token = STARTED_BY.set("the start's request")
    try:
        await runtime.run(crashing)
    finally:
        STARTED_BY.reset(token)
    await runtime.run(running)
    await harness.crash(crashing.uid, "main")
    with anyio.fail_after(WAIT):
        await told.wait()
    assert heard == [(crashing.uid, None)]
    pod = await runtime.inspect(crashing.uid)
    assert pod.containers[0].state == ContainerState.EXITED  # what the listener will find

    told = anyio.Event()  # restarted: its new run is watched too
    await runtime.start(crashing.uid)
    await harness.crash(crashing.uid, "main")
    with anyio.fail_after(WAIT):
        await told.wait()
    assert heard == [(crashing.uid, None)] * 2

    stop()  # no more calls to it once stopped; a listener added later is called
    later = anyio.Event()
    runtime.on_exit(lambda uid: later.set())
    await harness.crash(running.uid, "main")
    with anyio.fail_after(WAIT):
        await later.wait()
    assert heard == [(crashing.uid, None)] * 2


async def test_a_container_that_ends_as_it_starts_is_announced_too(harness: Harness) -> None:
    """Whether it ended before its start returned (nothing to watch then) or just after."""
    runtime = harness.runtime
    if not isinstance(runtime, PodExits):
        pytest.skip(f"{runtime.name} announces no exits: the node loop's passes find them")
    heard: list[str] = []
    told = anyio.Event()

    def listener(uid: str) -> None:
        heard.append(uid)
        told.set()

    runtime.on_exit(listener)
    uid = uuid.uuid4().hex
    quick = Container(name="quick", image=harness.image, command=harness.exits_at_once)
    spec = PodSpec(uid=uid, name="quick", namespace="default", workload="q", containers=[quick])
    await runtime.run(spec)
    with anyio.fail_after(WAIT):
        await told.wait()
    assert heard[0] == uid
    (container,) = (await runtime.inspect(uid)).containers
    assert (container.state, container.exit_code) == (ContainerState.EXITED, 3)


async def test_ensure_image_returns_its_reference_and_a_stable_digest(harness: Harness) -> None:
    first = await harness.runtime.ensure_image(harness.image)
    second = await harness.runtime.ensure_image(harness.image)
    assert first.reference == harness.image
    assert first.digest
    assert second.digest == first.digest


async def test_ensure_missing_image_raises_image_error_naming_it(harness: Harness) -> None:
    with pytest.raises(ImageError) as caught:
        await harness.runtime.ensure_image(harness.missing_image)
    assert harness.missing_image in str(caught.value)


async def test_pod_lifecycle(harness: Harness) -> None:
    runtime = harness.runtime
    spec = pod_spec(harness, "app", "sidecar")

    created = await runtime.create(spec)
    assert created.uid == spec.uid
    assert [c.name for c in created.containers] == ["app", "sidecar"]
    assert all(c.state == ContainerState.CREATED for c in created.containers)
    assert all(c.id for c in created.containers)
    assert len({c.id for c in created.containers}) == 2

    started = await runtime.start(spec.uid)
    assert started.running
    assert all(c.started_at is not None for c in started.containers)
    inspected = await runtime.inspect(spec.uid)
    assert inspected.running
    assert [c.id for c in inspected.containers] == [c.id for c in created.containers]

    stopped = await runtime.stop(spec.uid, GRACE)
    assert not stopped.running
    for container in stopped.containers:
        assert container.state == ContainerState.EXITED
        assert container.exit_code in (143, 137)  # SIGTERM, or SIGKILL after the grace
        assert container.finished_at is not None
    assert (await runtime.inspect(spec.uid)).exited

    await runtime.remove(spec.uid)
    with pytest.raises(NotFound):
        await runtime.inspect(spec.uid)


async def test_run_creates_and_starts_a_pod_in_one_call(harness: Harness) -> None:
    """``run`` is ``create`` then ``start``: every container running, stoppable, restartable."""
    runtime = harness.runtime
    spec = pod_spec(harness, "app", "sidecar")
    ran = await runtime.run(spec)
    assert ran.uid == spec.uid
    assert [c.name for c in ran.containers] == ["app", "sidecar"]
    assert ran.running
    assert all(c.started_at is not None and c.id for c in ran.containers)
    inspected = await runtime.inspect(spec.uid)
    assert inspected.running
    assert [c.id for c in inspected.containers] == [c.id for c in ran.containers]
    stopped = await runtime.stop(spec.uid, GRACE)
    assert all(c.exit_code in (143, 137) for c in stopped.containers)
    assert (await runtime.start(spec.uid)).running  # an exited pod of run starts again
    with pytest.raises(Conflict):
        await runtime.run(spec)
    await runtime.remove(spec.uid)


async def test_create_with_an_existing_uid_raises_conflict(harness: Harness) -> None:
    spec = pod_spec(harness)
    await harness.runtime.create(spec)
    await harness.runtime.start(spec.uid)
    with pytest.raises(Conflict):
        await harness.runtime.create(spec)
    assert (await harness.runtime.inspect(spec.uid)).running


async def test_list_sees_every_pod_until_removed(harness: Harness) -> None:
    first, second = pod_spec(harness), pod_spec(harness)
    await harness.runtime.create(first)
    await harness.runtime.create(second)
    await harness.runtime.start(second.uid)

    listed = {pod.uid: pod for pod in await harness.runtime.list()}
    assert {first.uid, second.uid} <= set(listed)
    assert listed[first.uid].name == first.name
    assert listed[first.uid].namespace == "default"
    assert listed[second.uid].running

    await harness.runtime.remove(first.uid)
    assert first.uid not in {pod.uid for pod in await harness.runtime.list()}


async def test_remove_of_a_missing_pod_is_a_no_op(harness: Harness) -> None:
    await harness.runtime.remove("no-such-pod")
    spec = pod_spec(harness)
    await harness.runtime.create(spec)
    await harness.runtime.remove(spec.uid)
    await harness.runtime.remove(spec.uid)


async def test_operations_on_a_missing_pod_raise_not_found(harness: Harness) -> None:
    runtime = harness.runtime
    with pytest.raises(NotFound):
        await runtime.start("no-such-pod")
    with pytest.raises(NotFound):
        await runtime.stop("no-such-pod", GRACE)
    with pytest.raises(NotFound):
        await runtime.stats("no-such-pod")
    with pytest.raises(NotFound):
        await runtime.exec("no-such-pod", "main", ["true"])


async def test_logs_honour_tail_since_and_follow(harness: Harness) -> None:
    runtime = harness.runtime
    spec = pod_spec(harness)
    await runtime.create(spec)
    await runtime.start(spec.uid)
    await harness.write_line(spec.uid, "main", "first-line")
    await harness.write_line(spec.uid, "main", "second-line")

    everything = await collect(runtime.logs(spec.uid, "main"))
    assert everything.index("first-line") < everything.index("second-line")
    assert await collect(runtime.logs(spec.uid, "main", tail=1)) == ["second-line"]
    assert await collect(runtime.logs(spec.uid, "main", tail=0)) == []
    future = (await runtime.inspect(spec.uid)).containers[0].started_at
    assert future is not None
    assert await collect(runtime.logs(spec.uid, "main", since=future + timedelta(days=1))) == []

    send, receive = anyio.create_memory_object_stream[str](100)
    async with anyio.create_task_group() as group:

        async def follow() -> None:
            async with send:
                async for line in runtime.logs(spec.uid, "main", follow=True):
                    await send.send(line.line)

        group.start_soon(follow)
        await harness.write_line(spec.uid, "main", "followed-line")
        # Written while the follower starts: it comes as history or as a new line.
        with anyio.fail_after(WAIT), receive:
            while await receive.receive() != "followed-line":
                pass
            # Now the follower is past its history: this line can only be followed.
            await harness.write_line(spec.uid, "main", "later-line")
            assert await receive.receive() == "later-line"
        group.cancel_scope.cancel()


async def test_logs_of_a_missing_container_raise_not_found(harness: Harness) -> None:
    spec = pod_spec(harness)
    await harness.runtime.create(spec)
    with pytest.raises(NotFound):
        await collect(harness.runtime.logs(spec.uid, "no-such-container"))
    with pytest.raises(NotFound):
        await collect(harness.runtime.logs("no-such-pod", "main"))


async def test_a_pod_removed_to_start_again_keeps_its_logs_as_its_previous_runs(
    harness: Harness,
) -> None:
    runtime = harness.runtime
    spec = pod_spec(harness)
    with pytest.raises(NotFound, match="no previous run's logs"):
        await collect(runtime.logs(spec.uid, "main", previous=True))

    async def one_run(text: str | None, *, keep_logs: bool = True) -> None:
        await runtime.create(spec)
        await runtime.start(spec.uid)
        if text is not None:
            await harness.write_line(spec.uid, "main", text)
        await runtime.stop(spec.uid, GRACE)
        await runtime.remove(spec.uid, keep_logs=keep_logs)

    async def previous() -> list[str]:
        try:
            return await collect(runtime.logs(spec.uid, "main", previous=True))
        except NotFound as exc:  # a runtime whose logs are files: none was written
            assert "previous run wrote no log" in exc.message
            return []

    await one_run("first-run")
    assert "first-run" in await previous()
    await runtime.remove(spec.uid, keep_logs=True)  # no pod: what was kept stays
    assert "first-run" in await previous()
    await one_run("second-run")  # one run deep
    kept = await previous()
    assert "second-run" in kept and "first-run" not in kept
    assert await collect(runtime.logs(spec.uid, "main", previous=True, tail=1)) == ["second-run"]
    assert await collect(runtime.logs(spec.uid, "main", previous=True, tail=0)) == []
    with pytest.raises(NotFound, match="not of 'other'"):
        await collect(runtime.logs(spec.uid, "other", previous=True))

    await runtime.create(spec)  # the run after: its own log, the previous one beside it
    await runtime.start(spec.uid)
    await harness.write_line(spec.uid, "main", "third-run")
    assert "second-run" not in await collect(runtime.logs(spec.uid, "main"))
    assert "second-run" in await previous()
    assert await runtime.prune_logs([]) == []  # its pod exists: its own removal decides
    await runtime.stop(spec.uid, GRACE)
    await runtime.remove(spec.uid, keep_logs=True)

    await runtime.create(spec)  # a run none of whose containers started (a failed pull)
    await runtime.remove(spec.uid, keep_logs=True)
    assert "third-run" in await previous()  # keeps the last run that ran
    await one_run(None)  # a run that printed nothing shows nothing, never an older run
    assert "third-run" not in await previous()
    assert await runtime.prune_logs([spec.uid]) == []  # its instance is still there
    assert await runtime.prune_logs([]) == [spec.uid]  # gone: so are its logs
    with pytest.raises(NotFound, match="no previous run's logs"):
        await collect(runtime.logs(spec.uid, "main", previous=True))

    await one_run("fourth-run")
    await runtime.remove(spec.uid)  # for good: the kept logs go too
    with pytest.raises(NotFound, match="no previous run's logs"):
        await collect(runtime.logs(spec.uid, "main", previous=True))


async def test_exec_runs_in_a_running_container(harness: Harness) -> None:
    spec = pod_spec(harness)
    await harness.runtime.create(spec)
    await harness.runtime.start(spec.uid)
    result = await harness.runtime.exec(spec.uid, "main", ["echo", "hello-exec"])
    assert result.exit_code == 0
    assert "hello-exec" in result.stdout


async def test_exec_in_a_container_that_is_not_running_raises_conflict(harness: Harness) -> None:
    spec = pod_spec(harness)
    await harness.runtime.create(spec)
    with pytest.raises(Conflict):
        await harness.runtime.exec(spec.uid, "main", ["true"])
    await harness.runtime.start(spec.uid)
    await harness.runtime.stop(spec.uid, GRACE)
    with pytest.raises(Conflict):
        await harness.runtime.exec(spec.uid, "main", ["true"])


async def test_exec_in_a_missing_container_raises_not_found(harness: Harness) -> None:
    spec = pod_spec(harness)
    await harness.runtime.create(spec)
    await harness.runtime.start(spec.uid)
    with pytest.raises(NotFound):
        await harness.runtime.exec(spec.uid, "no-such-container", ["true"])


async def test_stats_report_every_container(harness: Harness) -> None:
    spec = pod_spec(harness, "app", "sidecar")
    await harness.runtime.create(spec)
    await harness.runtime.start(spec.uid)
    stats = await harness.runtime.stats(spec.uid)
    assert [s.name for s in stats] == ["app", "sidecar"]
    for entry in stats:
        assert entry.cpu_millicores >= 0
        assert entry.memory_bytes >= 0
        assert entry.pids >= 0


async def test_a_host_path_volume_is_refused_by_default_and_nothing_is_created(
    harness: Harness,
) -> None:
    spec = pod_spec(harness)
    mount = VolumeMount(name="host", mount_path="/host")
    spec = PodSpec(
        uid=spec.uid,
        name=spec.name,
        namespace=spec.namespace,
        workload=spec.workload,
        containers=[spec.containers[0].model_copy(update={"volume_mounts": [mount]})],
        volumes=[Volume(name="host", host_path=HostPathVolume(path="/"))],
    )
    with pytest.raises(Forbidden, match="host path volumes are disabled on this node: start the"):
        await harness.runtime.create(spec)
    with pytest.raises(NotFound):
        await harness.runtime.inspect(spec.uid)
    assert spec.uid not in {pod.uid for pod in await harness.runtime.list()}
