"""`shoal rollout status`: the real CLI, as a fresh process, against a live API."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

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
