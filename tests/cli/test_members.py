"""`shoal members`: the real CLI, as a fresh process, against a live API on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, init_keypair
from shoal.cluster import StaticCluster, node_tags
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Capacity, Node, Role
from shoal.state import MemoryStore
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NODE_ID = "0123456789abcdef" * 4


@dataclass
class Agent:
    """A signed API over a one-node cluster manager, and the environment the CLI needs."""

    env: dict[str, str]

    async def shoal(self, *args: str) -> str:
        """Run `shoal ARGS` in a worker thread (the API answers on this loop); return stdout."""
        done = await anyio.to_thread.run_sync(lambda: run_shoal(self.env, *args))
        return done.stdout


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    home = tmp_path / "home"
    pair = init_keypair(home, "viewer@test")
    keys = AuthorizedKeys({pair.key_id: AuthorizedKey(Role.VIEWER, pair.key_id, pair.verify_key)})
    capacity = Capacity.model_validate({"cpu": "2", "memory": "1Gi"})
    node = Node(
        name="n1",
        node_id=NODE_ID,
        capacity=capacity,
        allocatable=capacity,
        addresses={"api": "127.0.0.1:7070", "grpc": "127.0.0.1:7947"},
    )
    clock = SystemClock()
    gossip = StaticCluster("n1", "127.0.0.1:7946", tags=node_tags(node))
    async with MemoryStore(clock=clock) as store, gossip, anyio.create_task_group() as tg:
        service = ShoalService(store, clock, members=gossip.members)
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_HOME=str(home), SHOAL_SERVER=f"http://127.0.0.1:{port}")
        yield Agent(env)
        tg.cancel_scope.cancel()


async def test_members_prints_one_row_per_member_with_its_tags(agent: Agent) -> None:
    header, row, *rest = (await agent.shoal("members")).splitlines()
    assert header.split() == ["NAME", "ADDRESS", "STATE", "ROLE", "ID", "GRPC"]
    assert row.split() == ["n1", "127.0.0.1:7946", "alive", "both", NODE_ID[:12], "127.0.0.1:7947"]
    assert rest == []


async def test_members_as_json_is_the_full_gossip_view(agent: Agent) -> None:
    (member,) = json.loads(await agent.shoal("members", "-o", "json"))
    assert (member["name"], member["address"], member["state"]) == ("n1", "127.0.0.1:7946", "alive")
    assert member["tags"]["id"] == NODE_ID
    assert member["tags"]["api"] == "127.0.0.1:7070"
