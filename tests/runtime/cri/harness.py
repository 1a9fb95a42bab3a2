"""CRI runtimes for tests: the conformance entry, on the session's private containerd.

Each runtime gets an owner of its own (the label its pods carry), so a test
sees only its own pods, and its root (pod directories, CRI logs) under the
containerd instance's directory. Whatever happens, its pods are removed afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from shoal.runtime.cri import CriRuntime
from tests.runtime.cri.support import IMAGE, MISSING_IMAGE, PrivateContainerd
from tests.runtime.test_conformance import Harness

WAIT = 10.0
SLEEPER = ["sh", "-c", "trap 'exit 143' TERM; sleep 3600 & wait"]
"""Runs until stopped, and ends at once on SIGTERM (as PID 1, sh needs the trap)."""


@asynccontextmanager
async def cri_runtime(
    containerd: PrivateContainerd, *, owner: str | None = None, **options: Any
) -> AsyncIterator[CriRuntime]:
    """Yield a CriRuntime on ``containerd``; remove its pods afterwards.

    Its root is under the instance's shared mount (see
    :meth:`~tests.runtime.cri.support.PrivateContainerd.pods_root`).
    """
    owner = owner or f"test-{uuid.uuid4().hex[:12]}"
    directory = containerd.pods_root(owner)
    runtime = CriRuntime(
        directory,
        endpoint=containerd.endpoint,
        owner=owner,
        cgroup_parent=containerd.cgroup_parent,
        **options,
    )
    try:
        async with runtime:
            yield runtime
    finally:
        with anyio.CancelScope(shield=True):
            cleaner = CriRuntime(
                directory,
                endpoint=containerd.endpoint,
                owner=runtime.owner,
                cgroup_parent=containerd.cgroup_parent,
            )
            try:
                for pod in await cleaner.list():
                    await cleaner.remove(pod.uid)
            finally:
                await cleaner.aclose()


async def write_line_with(runtime: CriRuntime, uid: str, container: str, text: str) -> None:
    """Make the container print ``text`` on its stdout; return once its log file has it.

    containerd copies the container's stdout fifo into the CRI log on its own
    time, after the exec has returned: wait for the line (a file another
    process appends to has no event to wait on, so poll, bounded).
    """
    command = ["sh", "-c", 'echo "$1" > /proc/1/fd/1', "sh", text]
    result = await runtime.exec(uid, container, command)
    assert result.exit_code == 0, result.stderr
    with anyio.fail_after(WAIT):
        while True:
            if text in [line.line async for line in runtime.logs(uid, container)]:
                return
            await anyio.sleep(0.02)


@asynccontextmanager
async def cri_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The conformance suite's entry for containerd through CRI."""
    containerd: PrivateContainerd = request.getfixturevalue("private_containerd")
    async with cri_runtime(containerd) as runtime:

        async def write_line(uid: str, container: str, text: str) -> None:
            await write_line_with(runtime, uid, container, text)

        yield Harness(runtime, IMAGE, MISSING_IMAGE, SLEEPER, write_line)
