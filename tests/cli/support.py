"""A live signed API for CLI tests: a service over a MemoryStore, served on a free loopback port."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, init_keypair
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Role
from shoal.state import MemoryStore


@dataclass
class LiveApi:
    """What a CLI test reaches: the service behind the API, and the CLI's environment."""

    service: ShoalService
    store: MemoryStore
    home: Path
    env: dict[str, str]
    """SHOAL_HOME holds an admin key the API trusts; SHOAL_SERVER is the API's address."""


@asynccontextmanager
async def live_api(home: Path, key_name: str = "admin@test") -> AsyncIterator[LiveApi]:
    """Serve a fresh service's signed API until the block ends; its key lives in ``home``."""
    pair = init_keypair(home, key_name)
    keys = AuthorizedKeys({pair.key_id: AuthorizedKey(Role.ADMIN, pair.key_id, pair.verify_key)})
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_HOME=str(home), SHOAL_SERVER=f"http://127.0.0.1:{port}")
        yield LiveApi(service, store, home, env)
        tg.cancel_scope.cancel()
