"""`shoal delete node NAME`: the real CLI, as a fresh process, against a live API."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from shoal.interfaces import Capacity, GossipState, Node, node_key
from tests.cli.support import live_api
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_delete_node_forgets_a_failed_node_and_refuses_an_alive_one(tmp_path: Path) -> None:
    capacity = Capacity.model_validate({"cpu": "2", "memory": "2Gi"})
    async with live_api(tmp_path / "home") as api:
        for name, state in (("gone", GossipState.FAILED), ("up", GossipState.ALIVE)):
            node = Node(name=name, capacity=capacity, allocatable=capacity, state=state)
            await api.store.put(node_key(name), node.model_dump_json().encode())

        def shoal(*args: str) -> tuple[int, str, str]:
            done = run_shoal(api.env, *args, check=False)
            return done.returncode, done.stdout, done.stderr

        deleted = await anyio.to_thread.run_sync(lambda: shoal("delete", "node", "gone"))
        refused = await anyio.to_thread.run_sync(lambda: shoal("delete", "node", "up"))
        left = [n.name for n in await api.service.list_nodes()]
    assert deleted[0] == 0, deleted
    assert (
        deleted[1].strip()
        == "node gone (failed) deleted: its lost instances go, and its name is free"
    )
    assert refused[0] == 1 and "node up is alive: only a node that failed or left" in refused[2]
    assert "Traceback" not in refused[2]
    assert left == ["up"]
