"""`shoal events --watch` follows the event stream through a restart of its server."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, init_keypair
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import ObjectRef, Role
from shoal.state import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WAIT = 20.0
"""Upper bound, in seconds, on any wait here (the follower waits 1 s before trying again)."""


class Output:
    """What a process wrote to one of its streams so far, read as it comes."""

    def __init__(self, stream: ByteReceiveStream) -> None:
        self.stream = stream
        self.text = ""

    async def until(self, wanted: str) -> None:
        """Read until ``wanted`` was written (within WAIT seconds)."""
        with anyio.fail_after(WAIT):
            while wanted not in self.text:
                self.text += (await self.stream.receive()).decode()


async def test_the_watch_follows_again_after_its_server_restarts_and_misses_nothing(
    tmp_path: Path,
) -> None:
    pair = init_keypair(tmp_path / "home", "admin@test")
    keys = AuthorizedKeys({pair.key_id: AuthorizedKey(Role.ADMIN, pair.key_id, pair.verify_key)})
    clock = SystemClock()
    ref = ObjectRef(kind="Workload", namespace="default", name="web")
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        app = create_app(service, RequestVerifier(keys.lookup))

        async def serve(port: int = 0) -> tuple[anyio.CancelScope, int]:
            scope = anyio.CancelScope()

            async def run(*, task_status: anyio.abc.TaskStatus[int]) -> None:
                with scope:
                    await serve_api(app, bind(f"127.0.0.1:{port}"), task_status=task_status)

            return scope, await tg.start(run)

        server, port = await serve()
        await service.record_event(ref, "Tested", "event-before")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_HOME=str(tmp_path / "home"), SHOAL_SERVER=f"http://127.0.0.1:{port}")
        command = [sys.executable, "-m", "shoal.cli", "events", "--watch"]
        async with await anyio.open_process(command, env=env) as watcher:
            assert watcher.stdout is not None and watcher.stderr is not None
            out, err = Output(watcher.stdout), Output(watcher.stderr)
            try:
                await out.until("event-before")
                await service.record_event(ref, "Tested", "event-streamed")
                await out.until("event-streamed")
                server.cancel()  # the server stops: the stream ends
                await err.until("following again in 1 s")
                await service.record_event(ref, "Tested", "event-while-down")
                server, _ = await serve(port)  # back, on the same address
                await service.record_event(ref, "Tested", "event-after")
                await out.until("event-after")
                await out.until("event-while-down")
                await err.until("events: following again\n")
            finally:
                watcher.send_signal(signal.SIGINT)
                with anyio.fail_after(WAIT):
                    await watcher.wait()
        server.cancel()
    for message in ("event-before", "event-streamed", "event-while-down", "event-after"):
        assert out.text.count(message) == 1, out.text
    assert "Traceback" not in err.text
