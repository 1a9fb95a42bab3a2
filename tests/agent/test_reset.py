"""`shoal node reset` stops a data dir's pods all at once, not one grace period after another."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import cast

import anyio
import pytest

from shoal.agent._reset import RESET_CONCURRENCY, ResetReport, _stop_and_remove
from shoal.interfaces import ContainerRuntime, PodStatus, Unavailable

pytestmark = pytest.mark.anyio


class Stubborn:
    """The part of a runtime a reset uses; each stop lasts until every pod's stop began."""

    def __init__(self, names: list[str]) -> None:
        self.pods = [
            PodStatus(uid=f"uid-{name}", name=name, namespace="default", containers=[])
            for name in names
        ]
        self.stopping = 0
        self.all_stopping = anyio.Event()
        self.removed: list[str] = []

    async def list(self) -> list[PodStatus]:
        return list(self.pods)

    async def stop(self, uid: str, grace: float) -> None:
        self.stopping += 1
        if self.stopping == len(self.pods):
            self.all_stopping.set()
        await self.all_stopping.wait()  # a pod that ignores SIGTERM, until grace runs out
        if uid == "uid-b":
            raise Unavailable("it exited meanwhile")

    async def remove(self, uid: str) -> None:
        self.removed.append(uid)

    async def prune_logs(self, keep: Collection[str]) -> Sequence[str]:
        return ["uid-left-before"]  # a pod removed earlier, its previous run's logs kept


async def test_every_pod_is_stopped_at_once_and_removed_even_if_its_stop_fails(
    tmp_path: Path,
) -> None:
    runtime = Stubborn(["c", "a", "b"])
    report = ResetReport(tmp_path)
    with anyio.fail_after(5):  # one after another, the first stop would wait forever
        await _stop_and_remove(cast("ContainerRuntime", runtime), 10.0, report)
    assert report.pods == ["a", "b", "c"]
    assert sorted(runtime.removed) == ["uid-a", "uid-b", "uid-c"]
    assert report.leftovers == ["the previous run's logs of pod uid-left-before"]
    assert RESET_CONCURRENCY >= 3
