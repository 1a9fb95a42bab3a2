"""`shoal top --range`: the real CLI, as a fresh process, charting a live node's usage history."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from shoal.client import AuthorizedKey, AuthorizedKeys, ShoalClient, init_keypair
from shoal.core import UsageSampler
from shoal.interfaces import Capacity, ContainerStats, InstanceState, Role
from shoal.runtime import Fault, MockRuntime
from tests.shoal_cli import run_shoal
from tests.usage_node import running, usage_node

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LIMITED = {
    "name": "web",
    "replicas": 1,
    "template": {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            }
        ]
    },
}


@dataclass
class Agent:
    env: dict[str, str]
    client: ShoalClient
    runtime: MockRuntime
    sampler: UsageSampler

    async def shoal(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        done = await anyio.to_thread.run_sync(lambda: run_shoal(self.env, *args, check=check))
        return done.returncode, done.stdout, done.stderr


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    home = tmp_path / "home"
    pair = init_keypair(home, "operator@test")
    keys = AuthorizedKeys({pair.key_id: AuthorizedKey(Role.OPERATOR, pair.key_id, pair.verify_key)})
    capacity = Capacity.model_validate({"cpu": "2", "memory": "1Gi"})
    async with usage_node(keys, capacity) as node:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_HOME=str(home), SHOAL_SERVER=node.url)
        async with ShoalClient(node.url, pair) as client:
            yield Agent(env, client, node.runtime, node.sampler)


async def test_top_range_charts_each_instance_against_its_limits(agent: Agent) -> None:
    await agent.client.apply_documents([LIMITED])
    instances = await running(agent.client)
    agent.runtime.set_stats("main", ContainerStats(name="main", cpu_millicores=250))
    await agent.sampler.sample_once()

    _, stdout, _ = await agent.shoal("top", "--range", "15m")
    header, row = stdout.splitlines()
    assert header.split()[:3] == ["NAMESPACE", "INSTANCE", "CPU"]
    assert row.split()[:2] == ["default", instances[0].name]
    assert "250m/250m/250m / 500m" in row  # min/avg/max against the limit
    assert "█" not in row and "▄" in row  # half the limit: a half-height bar

    _, stdout, _ = await agent.shoal("top", "--node", "n1", "--range", "1h")
    assert "n1" in stdout and "/ 2" in stdout  # against the node's 2 CPUs

    code, _, stderr = await agent.shoal("top", "--range", "2d", check=False)
    assert code != 0
    assert "15m, 1h, 6h, 24h" in stderr
    assert "Traceback" not in stderr


async def test_top_range_shows_an_instance_that_does_not_run_with_its_restarts(
    agent: Agent,
) -> None:
    agent.runtime.faults.add(Fault.exits(after=0, exit_code=1, image="crash"))
    crashing = dict(LIMITED, name="crash")
    crashing["template"] = {"containers": [{"name": "main", "image": "crash"}]}
    await agent.client.apply_documents([crashing])
    with anyio.fail_after(10):  # polled: the node loop writes the restarts, no event to wait on
        while True:
            (inst,) = await agent.client.list_instances()
            if inst.restart_count >= 1 and inst.state != InstanceState.RUNNING:
                break
            await anyio.sleep(0.05)
    await agent.sampler.sample_once()
    _, stdout, _ = await agent.shoal("top", "--range", "15m")
    _, row = stdout.splitlines()
    assert row.split()[:2] == ["default", inst.name]  # not left out: it was not running
