"""Exits announced by the runc runtime in the cases a running container's pidfd cannot cover.

The watch itself (a shim's pidfd turning readable) is in the conformance suite
(tests/runtime/test_conformance.py) and the adoption tests; here, a container
that ended during its own start, before there was anything to watch.
"""

from __future__ import annotations

import pytest

from shoal.interfaces import ContainerState, ContainerStatus, PodStatus
from shoal.runtime import OciCliRuntime
from shoal.runtime.oci._ocifiles import PodFiles

pytestmark = pytest.mark.anyio


def status(uid: str, state: ContainerState) -> PodStatus:
    container = ContainerStatus(name="main", id=PodFiles.container_id(uid, "main"), state=state)
    return PodStatus(uid=uid, name="quick", namespace="default", containers=[container])


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (ContainerState.EXITED, "its exit was recorded before the start returned"),
        (ContainerState.RUNNING, "its shim is gone already: no pidfd to watch"),
    ],
)
async def test_a_container_that_ended_during_its_start_is_announced_at_once(
    runtime: OciCliRuntime, state: ContainerState, why: str
) -> None:
    heard: list[str] = []
    runtime.on_exit(heard.append)
    runtime._watch(status("p1", state), started=True)  # the start's last step
    assert heard == ["p1"], why


async def test_a_listed_container_whose_shim_is_gone_is_not_announced_nor_tried_again(
    runtime: OciCliRuntime,
) -> None:
    heard: list[str] = []
    runtime.on_exit(heard.append)
    listed = status("p2", ContainerState.RUNNING)  # the shim was killed; the container runs on
    runtime._watch(listed)  # what list does for each pod
    runtime._watch(listed)
    assert heard == []
    assert runtime._unwatchable == {PodFiles.container_id("p2", "main")}
