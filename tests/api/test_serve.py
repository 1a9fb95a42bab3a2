"""serve_api: cancelling it closes what uvicorn had open, so a next server can serve."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from shoal.api import bind, serve_api

pytestmark = pytest.mark.anyio


async def forever(request: Request) -> Response:
    async def ticks() -> AsyncIterator[bytes]:
        while True:
            yield b"tick\n"
            await anyio.sleep(0.05)

    return StreamingResponse(ticks(), media_type="text/plain")


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/forever", forever), Route("/hello", hello)])


class Recorded(logging.Handler):
    """Keeps the records of a logger that does not propagate (uvicorn's own)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs as errors meanwhile."""
    handler, logger = Recorded(), logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


async def test_cancelling_the_server_ends_open_streams_and_frees_the_loop_for_the_next(
    uvicorn_errors: list[logging.LogRecord],
) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_api, APP, bind("127.0.0.1:0"))
            async with client.stream("GET", f"http://127.0.0.1:{port}/forever") as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == "tick"
                tg.cancel_scope.cancel()
                with anyio.fail_after(5), pytest.raises(httpx.HTTPError):
                    async for _ in lines:
                        pass  # the server closed the connection: reading fails

        # The same event loop serves again, on a fresh socket.
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_api, APP, bind("127.0.0.1:0"))
            reply = await client.get(f"http://127.0.0.1:{port}/hello")
            assert reply.text == "hello"
            tg.cancel_scope.cancel()
    # The stream ended as a client disconnect ends it: no error, no traceback.
    assert [r.getMessage() for r in uvicorn_errors if r.levelno >= logging.ERROR] == []
