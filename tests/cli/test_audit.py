"""`shoal audit list|verify`: the real CLI against a live API; a tampered row fails verify."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import Actor, AuditEntry, StateStore, Via, WorkloadSpec, audit_key
from tests.cli.support import live_api
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@dataclass
class Agent:
    env: dict[str, str]
    store: StateStore

    async def shoal(self, *args: str, check: bool = True) -> tuple[int, str]:
        """Run `shoal ARGS` in a worker thread (the API answers on this loop)."""
        done = await anyio.to_thread.run_sync(lambda: run_shoal(self.env, *args, check=check))
        return done.returncode, done.stdout


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with live_api(tmp_path / "home") as api:
        spec = WorkloadSpec.model_validate(
            {"name": "web", "template": {"containers": [{"name": "c", "image": "busybox"}]}}
        )
        ops = api.service.with_actor(Actor(id="ops@test", via=Via.MCP))
        await ops.apply([spec])
        await ops.scale("web", 2)
        yield Agent(api.env, api.store)


async def test_list_shows_the_entries_and_verify_passes_then_fails_once_a_row_is_edited(
    agent: Agent,
) -> None:
    code, listed = await agent.shoal("audit", "list")
    rows = [line.split() for line in listed.splitlines()]
    assert [(r[0], r[3], r[4], r[5], r[-1]) for r in rows] == [
        ("1", "ops@test", "mcp", "apply", "ok"),
        ("2", "ops@test", "mcp", "scale", "ok"),
    ]
    code, as_json = await agent.shoal("audit", "list", "-o", "json")
    entries = [AuditEntry.model_validate(e) for e in json.loads(as_json)]
    assert [(e.sequence, e.verb, e.door) for e in entries] == [
        (1, "apply", Via.MCP),
        (2, "scale", Via.MCP),
    ]
    assert entries[1].hash and entries[1].previous_hash == entries[0].hash
    code, verified = await agent.shoal("audit", "verify")
    assert code == 0
    assert verified.startswith("audit trail intact: 2 entries, head 2 ")

    kv = await agent.store.get(audit_key(1))
    assert kv is not None
    edited = AuditEntry.model_validate_json(kv.value).model_copy(update={"verb": "delete"})
    await agent.store.put(audit_key(1), edited.model_dump_json().encode())
    code, verified = await agent.shoal("audit", "verify", check=False)
    assert code == 1
    first, last = verified.splitlines()
    assert first.startswith("TAMPERED: entry 1 (delete Workload default/web by ops@test)")
    assert last.startswith("audit trail BROKEN: 2 entries")
