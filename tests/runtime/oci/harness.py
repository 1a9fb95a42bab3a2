"""Real runc runtimes for tests: the conformance entry and the fixtures' factory.

:func:`oci_runtime` builds an :class:`~shoal.runtime.OciCliRuntime` with its
root and runc state root in the test's temporary directory and removes
everything it left afterwards, whatever happened. :func:`runc_harness` is the
``"runc"`` entry of the conformance suite.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from shoal.interfaces import Container, PodSpec
from shoal.runtime import ImageConfig, OciCliRuntime
from shoal.runtime.oci._ocifiles import PodFiles
from tests.runtime.oci.support import (
    DirectoryImageSource,
    build_busybox_layer,
    force_cleanup,
    missing_requirement,
)
from tests.runtime.test_conformance import Harness

IMAGE = "busybox:test"
"""An image with ``sh`` as its Cmd."""
ENTRY_IMAGE = "busybox:entry"
"""An image with an Entrypoint, a Cmd, a WorkingDir and a named User."""
MISSING_IMAGE = "registry.test/missing:1"
SLEEPER = ["sh", "-c", "trap 'exit 143' TERM; sleep 3600 & wait"]
"""Runs until stopped, and ends at once on SIGTERM (as PID 1, sh needs the trap)."""

RuntimeFactory = Callable[..., AbstractAsyncContextManager[OciCliRuntime]]
"""``make_runtime(**options)``: an OciCliRuntime that cleans up after itself."""

_layers: dict[str, Path] = {}


def new_pod(*containers: Container, name: str = "web") -> PodSpec:
    """Return a pod with a fresh uid; by default one long-running container 'main'."""
    uid = uuid.uuid4().hex
    chosen = list(containers) or [Container(name="main", image=IMAGE, command=SLEEPER)]
    return PodSpec(
        uid=uid, name=f"{name}-{uid[:6]}", namespace="default", workload=name, containers=chosen
    )


def busybox_layer(request: pytest.FixtureRequest) -> Path:
    """Return the session's busybox layer directory, building it on first use."""
    if "busybox" not in _layers:
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        _layers["busybox"] = build_busybox_layer(factory.mktemp("busybox-layer"))
    return _layers["busybox"]


def image_source(layer: Path) -> DirectoryImageSource:
    """Return the test images, all on the busybox layer."""
    return DirectoryImageSource(
        {
            IMAGE: ([layer], ImageConfig(cmd=["sh"], env=["PATH=/bin", "IMAGE_VAR=image"])),
            ENTRY_IMAGE: (
                [layer],
                ImageConfig(
                    entrypoint=["echo", "entry"],
                    cmd=["default-arg"],
                    env=["PATH=/bin", "IMAGE_VAR=image", "SHARED=image"],
                    working_dir="/tmp",
                    user="guest",
                ),
            ),
        }
    )


@asynccontextmanager
async def oci_runtime(
    request: pytest.FixtureRequest, directory: Path, **options: Any
) -> AsyncIterator[OciCliRuntime]:
    """Yield an OciCliRuntime under ``directory``; remove every trace of it afterwards."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    root, state = directory / "root", directory / "state"
    images = image_source(busybox_layer(request))
    try:
        async with OciCliRuntime(images, root, state_root=state, **options) as runtime:
            yield runtime
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(force_cleanup, root, state)


@asynccontextmanager
async def runc_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The conformance suite's entry for real runc containers."""
    directory: Path = request.getfixturevalue("tmp_path")
    async with oci_runtime(request, directory) as runtime:

        async def write_line(uid: str, container: str, text: str) -> None:
            # /proc/1/fd/1 is the container's stdout: the pipe its shim reads.
            command = ["sh", "-c", 'echo "$1" > /proc/1/fd/1', "sh", text]
            result = await runtime.exec(uid, container, command)
            assert result.exit_code == 0, result.stderr

        async def crash(uid: str, container: str) -> None:
            await runtime.runc.kill(PodFiles.container_id(uid, container), "KILL")

        quick = ["sh", "-c", "exit 3"]
        yield Harness(runtime, IMAGE, MISSING_IMAGE, SLEEPER, write_line, crash, quick)
