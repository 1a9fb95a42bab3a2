"""Container logs from the shim's files: streams, tail, since, follow, rotation."""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio
import pytest

from shoal.interfaces import Container, LogLine
from shoal.runtime import OciCliRuntime
from tests.runtime.oci.harness import IMAGE, SLEEPER, RuntimeFactory, new_pod
from tests.runtime.oci.support import WAIT

pytestmark = pytest.mark.anyio


async def write(runtime: OciCliRuntime, uid: str, script: str) -> None:
    """Run ``script`` with its output going to the container's own stdout."""
    command = ["sh", "-c", f"exec >/proc/1/fd/1 2>/proc/1/fd/2; {script}"]
    result = await runtime.exec(uid, "main", command)
    assert result.exit_code == 0, result.stderr


async def history(
    runtime: OciCliRuntime, uid: str, *, tail: int | None = None, since: datetime | None = None
) -> list[LogLine]:
    with anyio.fail_after(WAIT):
        return [line async for line in runtime.logs(uid, "main", tail=tail, since=since)]


async def test_both_streams_with_tail_and_since(runtime: OciCliRuntime) -> None:
    script = "echo one; echo two >&2; printf 'no newline at the end'"
    spec = new_pod(Container(name="main", image=IMAGE, command=["sh", "-c", script]))
    await runtime.create(spec)
    await runtime.start(spec.uid)
    with anyio.fail_after(WAIT):
        async for _ in runtime.logs(spec.uid, "main", follow=True):
            pass

    every = await history(runtime, spec.uid)
    # Two pipes: each stream keeps its order, the two are not ordered with each other.
    assert [line.line for line in every if line.stream == "stdout"] == [
        "one",
        "no newline at the end",
    ]
    assert [line.line for line in every if line.stream == "stderr"] == ["two"]
    assert [line.line for line in await history(runtime, spec.uid, tail=1)] == [every[-1].line]
    assert await history(runtime, spec.uid, tail=0) == []
    later = every[-1].time + timedelta(microseconds=1)
    assert await history(runtime, spec.uid, since=later) == []
    assert await history(runtime, spec.uid, since=every[0].time) == every


async def test_follow_ends_when_the_container_exits(runtime: OciCliRuntime) -> None:
    spec = new_pod()
    await runtime.create(spec)
    await runtime.start(spec.uid)
    seen: list[str] = []

    async def follow() -> None:
        seen.extend([line.line async for line in runtime.logs(spec.uid, "main", follow=True)])

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await write(runtime, spec.uid, "echo before-stop")
            await runtime.stop(spec.uid, 5)
    assert seen == ["before-stop"]


async def test_rotation_keeps_the_newest_lines_and_followers_see_every_line(
    make_runtime: RuntimeFactory,
) -> None:
    async with make_runtime(log_max_bytes=4000, log_max_files=2) as runtime:
        spec = new_pod(Container(name="main", image=IMAGE, command=SLEEPER))
        await runtime.create(spec)
        await runtime.start(spec.uid)
        received = anyio.Event()
        seen: list[str] = []

        async def follow() -> None:
            async for line in runtime.logs(spec.uid, "main", follow=True):
                seen.append(line.line)
                if line.line.endswith("-19"):
                    received.set()

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as group:
                group.start_soon(follow)
                # Batches of 20 lines (about 1.6 kB): several rotations, each
                # batch followed before the next is written.
                for batch in range(6):
                    received = anyio.Event()
                    await write(
                        runtime, spec.uid, f"for i in $(seq 0 19); do echo {batch}-$i; done"
                    )
                    await received.wait()
                group.cancel_scope.cancel()

        expected = [f"{batch}-{i}" for batch in range(6) for i in range(20)]
        assert seen == expected
        kept = [line.line for line in await history(runtime, spec.uid)]
        assert kept == expected[len(expected) - len(kept) :]
        assert len(kept) < len(expected)
        directory = runtime.files.directory(spec.uid)
        assert sorted(p.name for p in directory.glob("main.log*")) == ["main.log", "main.log.1"]
