"""Live streams, read by the page with signed ``fetch`` (EventSource cannot sign).

* ``/ui/f/stream``: server-sent events. After each burst of events recorded
  in the cluster (collected for :data:`COALESCE` seconds) it sends one
  ``event: changed`` naming the objects; the parts of a page marked
  ``hx-trigger="shoal:changed from:body"`` re-fetch themselves. A comment line every
  :data:`HEARTBEAT` seconds keeps proxies from closing an idle stream. It ends
  after :data:`LIFETIME` seconds and the page opens a new one, signed anew:
  a revoked key is refused then.
* ``/ui/f/instances/{namespace}/{name}/logs``: an instance's log as JSON
  lines (``LogLine``), following new lines with ``follow=true``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from shoal.interfaces import Event, InvalidInput, LogLine

from ._auth import ActsAs, Authenticate, Call, signed

__all__ = ["COALESCE", "HEARTBEAT", "LIFETIME", "changes", "stream_routes"]

COALESCE = 0.1
"""Seconds to gather a burst of events into one ``changed`` message."""
HEARTBEAT = 15.0
"""Seconds between keep-alive comments on an idle stream."""
LIFETIME = 300.0
"""Seconds a change stream lasts before the page must open (and sign) another."""
MAX_TAIL = 10_000


async def changes(events: AsyncIterator[Event], lifetime: float = LIFETIME) -> AsyncIterator[bytes]:
    """Turn a stream of events into SSE bytes: one ``changed`` per burst, heartbeats between.

    The stream ends after ``lifetime`` seconds: the page opens another, signed
    anew, so a key revoked meanwhile stops seeing changes within that time.
    """
    yield b": connected\n\n"
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    ends = anyio.current_time() + lifetime

    async def pump() -> None:
        async with send:
            async for event in events:
                await send.send(event)

    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(pump)
        while anyio.current_time() < ends:
            burst: list[Event] = []
            with anyio.move_on_after(min(HEARTBEAT, ends - anyio.current_time())):
                burst.append(await receive.receive())
            if not burst:
                yield b": heartbeat\n\n"
                continue
            with anyio.move_on_after(COALESCE):
                # One at a time: a list built by a comprehension is lost when it is cancelled.
                async for event in receive:
                    burst.append(event)  # noqa: PERF401
            names = sorted({f"{e.object.kind}/{e.object.name}" for e in burst})
            yield f"event: changed\ndata: {json.dumps(names)}\n\n".encode()
        tg.cancel_scope.cancel()


async def _log_lines(first: LogLine | None, rest: AsyncIterator[LogLine]) -> AsyncIterator[bytes]:
    if first is not None:
        yield first.model_dump_json().encode() + b"\n"
    async for line in rest:
        yield line.model_dump_json().encode() + b"\n"


def _stream(body: AsyncIterator[bytes], media_type: str) -> StreamingResponse:
    # no-transform: a compressing proxy must not buffer the stream.
    headers = {"cache-control": "no-store, no-transform", "x-accel-buffering": "no"}
    return StreamingResponse(body, media_type=media_type, headers=headers)


def stream_routes(service: ActsAs, authenticate: Authenticate) -> list[Route]:
    """The live streams, for viewers and up."""
    viewer = signed(service, authenticate)

    @viewer
    async def stream(call: Call) -> Response:
        return _stream(changes(call.service.watch_events()), "text/event-stream")

    @viewer
    async def logs(call: Call) -> Response:
        namespace, name = call.request.path_params["namespace"], call.request.path_params["name"]
        query = call.request.query_params
        try:
            tail = int(query.get("tail", "1000"))
        except ValueError:
            raise InvalidInput("tail must be a whole number of lines", field="tail") from None
        if not 0 <= tail <= MAX_TAIL:
            raise InvalidInput(f"tail must be between 0 and {MAX_TAIL}", field="tail")
        lines = call.service.logs(
            name,
            namespace,
            container=query.get("container") or None,
            tail=tail,
            follow=query.get("follow") == "true",
            previous=query.get("previous") == "true",
        )
        # The first line is awaited here, so NotFound and friends become a JSON error.
        first = await anext(aiter(lines), None)
        return _stream(_log_lines(first, lines), "application/x-ndjson")

    return [
        Route("/ui/f/stream", stream),
        Route("/ui/f/instances/{namespace}/{name}/logs", logs),
    ]
