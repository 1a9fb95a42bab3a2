"""ASGI middleware that refuses request bodies over a size limit before reading them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.interfaces import RequestTooLarge

__all__ = ["MAX_BODY_BYTES", "BodyLimit", "body_too_large", "too_large_error"]

MAX_BODY_BYTES = 1 << 20
"""The largest request body the API accepts: 1 MiB."""


TOO_LARGE = "shoal.body_too_large"
"""Scope key set when a streamed body went over the limit (its rest was dropped)."""


def body_too_large(scope: Scope) -> bool:
    """Return whether :class:`BodyLimit` cut this request's body short."""
    return bool(scope.get(TOO_LARGE))


def too_large_error(limit: int = MAX_BODY_BYTES) -> RequestTooLarge:
    """Return the error for a body over ``limit``."""
    return RequestTooLarge(
        f"request body is over the {limit}-byte limit: split the request "
        "(e.g. apply fewer documents at once)",
        limit=limit,
    )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes.

    A Content-Length over the limit is answered 413 before the app runs. A
    streamed (chunked) body is cut off at the limit: the app sees its end
    early and the scope is flagged, so the handlers answer 413 instead of
    parsing a truncated body (see :func:`body_too_large`).
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if scope.get(TOO_LARGE):
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    scope[TOO_LARGE] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Send) -> None:
        error = too_large_error(self.limit)
        body = json.dumps({"error": error.to_body().model_dump()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.http_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
