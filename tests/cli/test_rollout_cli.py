"""`shoal rollout status`: the real CLI, as a fresh process, against a live API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from shoal.core import Repository
from shoal.core._repo import workload_key
from shoal.interfaces import Condition
from tests.cli.support import live_api
from tests.core.support import spec
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The CLI's environment, against an API whose store holds one job."""
    async with live_api(tmp_path / "home", "operator@test") as api:
        await api.service.apply([spec("batch", replicas=1, mode="job", restart_policy="Never")])
        yield api.env


@pytest.mark.parametrize("watch", ["--watch", "--no-watch"])
async def test_rollout_status_of_a_job_says_it_has_no_rollouts(
    env: dict[str, str], watch: str
) -> None:
    def status() -> subprocess.CompletedProcess[str]:
        return run_shoal(env, "rollout", "status", "batch", watch, check=False)

    with anyio.fail_after(60):  # it used to follow a rollout that never comes, forever
        done = await anyio.to_thread.run_sync(status)
    assert done.returncode == 1
    assert "default/batch is a job" in done.stderr
    assert "no rollouts" in done.stderr


async def test_a_piped_status_prints_a_line_per_change_as_it_goes(tmp_path: Path) -> None:
    """Not a progress bar drawn once the rollout ends: a log or a pipe sees it move."""
    async with live_api(tmp_path / "home", "operator@test") as api:
        await api.service.apply([spec("web", replicas=1)])
        argv = [sys.executable, "-m", "shoal.cli", "rollout", "status", "web"]
        process = await anyio.open_process(argv, env=api.env)
        try:
            assert process.stdout is not None
            lines = TextReceiveStream(process.stdout)
            with anyio.fail_after(30):
                first = await lines.receive()
            assert first.startswith("default/web revision 1: 0/1 updated")
            # The control loop (none runs here) would write this once the rollout ends.
            workload = await api.service.get_workload("web")
            done = Condition(type="Progressing", status=True, reason="RolloutComplete")
            status = workload.status.model_copy(
                update={
                    "observed_generation": workload.generation,
                    "revision": workload.revision,
                    "updated_replicas": 1,
                    "conditions": [done],
                }
            )
            finished = workload.model_copy(update={"status": status})
            await Repository(api.store, api.service.clock).put(
                workload_key("default", "web"), finished
            )
            with anyio.fail_after(30):
                rest = "".join([chunk async for chunk in lines])
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()
    assert code == 0
    last = rest.strip().splitlines()[-1]
    assert last.endswith("1/1 updated, 0/1 available, 0 total (RolloutComplete)")
