"""Streaming responses of the REST API: server-sent events, log lines, pull progress.

Each is a Response whose ``__call__`` owns its task group (an async generator
cannot safely hold one across ``yield``) and drops the Content-Length header
a plain Response would declare for an empty body.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from shoal.core import ShoalService
from shoal.interfaces import (
    ImageProgress,
    LogLine,
    ShoalError,
)

__all__ = ["EventStream", "JsonLines", "LogStream", "pull_lines"]


async def pull_lines(svc: ShoalService, reference: str) -> AsyncIterator[bytes]:
    """Run a pull, yielding each progress step and then the result as JSON lines."""
    send, receive = anyio.create_memory_object_stream[bytes](1000)

    def progress(step: ImageProgress) -> None:
        with contextlib.suppress(anyio.WouldBlock):  # a slow reader loses steps, not the pull
            send.send_nowait(b'{"progress":' + step.model_dump_json().encode() + b"}\n")

    async def pull() -> None:
        async with send:
            try:
                info = await svc.pull_image(reference, progress=progress)
                await send.send(b'{"image":' + info.model_dump_json().encode() + b"}\n")
            except ShoalError as exc:
                body = exc.to_body().model_dump_json().encode()
                await send.send(b'{"error":' + body + b"}\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(pull)
        async with receive:
            async for line in receive:
                yield line


class _Stream(Response):
    """A Response whose body is streamed by ``__call__``: it declares no length."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        super().__init__(media_type=self.media_type, headers=headers)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]


class JsonLines(_Stream):
    """A stream of JSON lines from an async iterator of encoded lines."""

    media_type = "application/x-ndjson"

    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        super().__init__()
        self.lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for line in self.lines:
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class LogStream(_Stream):
    """Log lines as JSON lines, streamed as the runtime yields them."""

    media_type = "application/x-ndjson"

    def __init__(self, first: LogLine | None, rest: AsyncIterator[LogLine]) -> None:
        super().__init__()
        self.first = first
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def line(item: LogLine) -> None:
            data = item.model_dump_json().encode() + b"\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(until_disconnect)
            if self.first is not None:
                await line(self.first)
                async for item in self.rest:
                    await line(item)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()


class EventStream(_Stream):
    """Server-sent events of the event log, with comment heartbeats.

    A Response whose ``__call__`` owns its task group (rather than an async
    generator, which cannot safely hold one across ``yield``): one task relays
    events, one sends heartbeats, one ends everything when the client leaves.
    """

    media_type = "text/event-stream"

    def __init__(self, service: ShoalService, heartbeat: float) -> None:
        super().__init__(headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.service = service
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        lock = anyio.Lock()

        async def chunk(text: str) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            async def beat() -> None:
                while True:
                    await anyio.sleep(self.heartbeat)
                    await chunk(": heartbeat\n\n")

            async def relay() -> None:
                async for event in self.service.watch_events():
                    data = event.model_dump_json()
                    await chunk(f"id: {event.id}\nevent: shoal-event\ndata: {data}\n\n")

            tg.start_soon(until_disconnect)
            tg.start_soon(beat)
            tg.start_soon(relay)
            await chunk(": connected\n\n")
