"""`shoal logs`: the real CLI, as a fresh process, passes its flags to a live API."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.cli.support import live_api
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_previous_reaches_the_server_which_refuses_it_with_follow(tmp_path: Path) -> None:
    async with live_api(tmp_path / "home") as api:

        def shoal(*args: str) -> tuple[int, str]:
            done = run_shoal(api.env, "logs", *args, check=False)
            return done.returncode, done.stderr

        code, said = await anyio.to_thread.run_sync(shoal, "web-1", "--previous", "--follow")
        assert code != 0 and "previous cannot be combined with follow" in said
        assert "Traceback" not in said
        code, said = await anyio.to_thread.run_sync(shoal, "web-1", "-p")
        assert code != 0 and "web-1" in said and "not found" in said.lower()
