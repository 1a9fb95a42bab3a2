"""`shoal rollout status`: the real CLI, as a fresh process, against a live API."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, init_keypair
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Role
from shoal.state import MemoryStore
from tests.core.support import spec
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The CLI's environment, against an API whose store holds one job."""
    home = tmp_path / "home"
    pair = init_keypair(home, "operator@test")
    keys = AuthorizedKeys({pair.key_id: AuthorizedKey(Role.ADMIN, pair.key_id, pair.verify_key)})
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        await service.apply([spec("batch", replicas=1, mode="job", restart_policy="Never")])
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        shown = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        shown.update(SHOAL_HOME=str(home), SHOAL_SERVER=f"http://127.0.0.1:{port}")
        yield shown
        tg.cancel_scope.cancel()


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
