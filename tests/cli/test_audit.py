"""`shoal audit list|verify`: the real CLI against a live API; a tampered row fails verify."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, init_keypair
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Actor, AuditEntry, Role, StateStore, Via, WorkloadSpec, audit_key
from shoal.state import MemoryStore
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
    home = tmp_path / "home"
    pair = init_keypair(home, "admin@test")
    keys = AuthorizedKeys({pair.key_id: AuthorizedKey(Role.ADMIN, pair.key_id, pair.verify_key)})
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        spec = WorkloadSpec.model_validate(
            {"name": "web", "template": {"containers": [{"name": "c", "image": "busybox"}]}}
        )
        ops = service.with_actor(Actor(id="ops@test", via=Via.MCP))
        await ops.apply([spec])
        await ops.scale("web", 2)
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_HOME=str(home), SHOAL_SERVER=f"http://127.0.0.1:{port}")
        yield Agent(env, store)
        tg.cancel_scope.cancel()


async def test_list_shows_the_entries_and_verify_passes_then_fails_once_a_row_is_edited(
    agent: Agent,
) -> None:
    code, listed = await agent.shoal("audit", "list")
    rows = [line.split() for line in listed.splitlines()]
    assert [(r[0], r[3], r[4], r[5], r[-1]) for r in rows] == [
        ("1", "ops@test", "mcp", "apply", "ok"),
        ("2", "ops@test", "mcp", "scale", "ok"),
    ]
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
