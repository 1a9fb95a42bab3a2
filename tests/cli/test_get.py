"""`shoal get workloads|instances`: the real CLI, as a fresh process, against a live API.

The command prints the server's JSON objects without building models, so
these check that what it prints is what the models say, and that the
successful path (not only the unreachable one) imports no pydantic.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from shoal.cli._output import _workloads
from shoal.interfaces import Workload
from tests.cli.support import live_api
from tests.cli.test_imports import SERVER_SIDE, imported, loaded
from tests.core.support import spec
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@dataclass
class Agent:
    """A signed API over a store holding two workloads, and the environment the CLI needs."""

    env: dict[str, str]
    home: Path
    workloads: list[Workload]

    async def shoal(self, *args: str) -> str:
        """Run `shoal ARGS` in a worker thread (the API answers on this loop); return stdout."""
        done = await anyio.to_thread.run_sync(lambda: run_shoal(self.env, *args))
        return done.stdout


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with live_api(tmp_path / "home", "viewer@test") as api:
        await api.service.apply(
            [spec("web", replicas=2), spec("batch", replicas=1, namespace="jobs")]
        )
        yield Agent(api.env, api.home, await api.service.list_workloads())


async def test_get_workloads_prints_one_row_per_workload(agent: Agent) -> None:
    header, *rows = (await agent.shoal("get", "workloads")).splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "READY", "PHASE", "GENERATION", "AGE"]
    table = sorted(row.split()[:5] for row in rows)
    assert table == [
        ["default", "web", "0/2", "pending", "1"],
        ["jobs", "batch", "0/1", "pending", "1"],
    ]
    assert all(row.split()[5].endswith("s") for row in rows)  # applied seconds ago


async def test_get_workloads_as_json_is_what_the_models_dump(agent: Agent) -> None:
    printed = json.loads(await agent.shoal("get", "workloads", "-o", "json"))
    assert printed == [w.model_dump(mode="json") for w in agent.workloads]
    only_jobs = json.loads(await agent.shoal("get", "workloads", "-n", "jobs", "-o", "json"))
    assert [w["spec"]["name"] for w in only_jobs] == ["batch"]


async def test_get_instances_with_none_placed_says_so(agent: Agent) -> None:
    assert (await agent.shoal("get", "instances")).strip() == "no instances found"
    of_web = await agent.shoal("get", "instances", "--workload", "web")
    assert of_web.strip() == "no instances found"  # it exists: it has none yet


async def test_get_instances_of_a_node_or_workload_that_does_not_exist_says_so(
    agent: Agent,
) -> None:
    """It said "no instances found" of a typo."""
    for flag, name, said in (
        ("--node", "worker9", "node 'worker9' not found"),
        ("--workload", "nosuch", "nosuch"),
    ):
        args = ("get", "instances", flag, name)
        done = await anyio.to_thread.run_sync(
            functools.partial(run_shoal, agent.env, *args, check=False)
        )
        assert done.returncode == 1 and said in done.stderr, done
        assert "Traceback" not in done.stderr


async def test_a_listing_imports_no_pydantic_no_rich_and_nothing_of_the_server(
    agent: Agent, tmp_path: Path
) -> None:
    server = agent.env["SHOAL_SERVER"]
    modules, done = await anyio.to_thread.run_sync(
        lambda: imported(tmp_path, "get", "workloads", home=agent.home, server=server)
    )
    assert "web" in done.stdout, done.stderr
    assert loaded(modules, SERVER_SIDE) == []
    assert loaded(modules, ("pydantic", "pydantic_core", "annotated_types")) == []
    assert loaded(modules, ("rich",)) == []  # a table is plain text


def test_ready_counts_what_a_daemon_or_a_job_wants_not_its_replicas() -> None:
    """A daemon on three nodes read 3/1 (its spec's replicas, which it does not use)."""
    rows = _workloads(
        [
            {
                "spec": {"namespace": "default", "name": name, "replicas": 1, "mode": mode},
                "status": {"ready_replicas": 3, "desired_replicas": 3, "phase": "running"},
                "generation": 1,
                "created_at": "2026-12-07T00:00:00Z",
            }
            for name, mode in (("exporter", "daemon"), ("batch", "job"), ("web", "replicas"))
        ]
    )
    assert [row[2] for row in rows[1:]] == ["3/3", "3/3", "3/1"]
