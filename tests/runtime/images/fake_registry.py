"""A registry test double: a real HTTP server on 127.0.0.1 that misbehaves on request.

It serves the images of an OCI layout (manifests by tag or digest, blobs with
Range support) over the distribution API v2, as a small Starlette app under
uvicorn in the test's own event loop, and records every request. Knobs make
it demand a bearer token or basic auth, cut a blob download midway (once or
always), ignore Range, serve a blob with a flipped byte, answer manifests
with HTML, or serve an extra index. It is a double of a *remote*, so the
store is tested through its real HTTP client.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Seen:
    """One request the fake registry answered."""

    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeRegistry:
    """Knobs, state and request log of one fake registry."""

    layout: Path
    host: str = ""
    """``127.0.0.1:<port>``, set once it listens."""
    token: str | None = None
    """Demand ``Authorization: Bearer <token>``, handed out by ``/token``."""
    token_credentials: tuple[str, str] | None = None
    """Basic credentials the token service demands (None: anonymous tokens)."""
    basic: tuple[str, str] | None = None
    """Demand these basic credentials on every request."""
    cut_once: set[str] = field(default_factory=set)
    """Blob digests whose next download stops halfway (then the knob clears)."""
    cut_always: set[str] = field(default_factory=set)
    """Blob digests whose every download stops halfway."""
    corrupt: set[str] = field(default_factory=set)
    """Blob digests served with one byte flipped."""
    ignore_range: bool = False
    """Answer Range requests with the whole blob (200)."""
    garbage: bool = False
    """Answer manifest requests with an HTML page."""
    extra: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    """Tags or digests to serve instead of the layout: raw bytes and media type."""
    seen: list[Seen] = field(default_factory=list)

    def blob_gets(self, digest: str | None = None) -> list[Seen]:
        """Return the blob requests answered (for ``digest`` only, if given)."""
        return [
            s
            for s in self.seen
            if "/blobs/" in s.path and (digest is None or s.path.endswith(digest))
        ]

    def manifest_gets(self) -> list[Seen]:
        return [s for s in self.seen if "/manifests/" in s.path]

    def token_gets(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/token"]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token),
                Route("/v2/", self._base),
                Route("/v2/{name:path}/manifests/{reference}", self._manifest),
                Route("/v2/{name:path}/blobs/{digest}", self._blob),
            ]
        )

    def _record(self, request: Request) -> None:
        self.seen.append(
            Seen(
                request.url.path, request.headers.get("range"), request.headers.get("authorization")
            )
        )

    def _refused(self, request: Request) -> Response | None:
        authorization = request.headers.get("authorization")
        if self.basic is not None and authorization != _basic(self.basic):
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if self.token is not None and authorization != f"Bearer {self.token}":
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="fake-registry",'
                'scope="repository:busybox:pull"'
            )
            return JSONResponse(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status_code=401,
                headers={"WWW-Authenticate": challenge},
            )
        return None

    async def _token(self, request: Request) -> Response:
        self._record(request)
        if self.token_credentials is not None and request.headers.get("authorization") != _basic(
            self.token_credentials
        ):
            return Response(status_code=401)
        assert request.query_params.get("service") == "fake-registry"
        return JSONResponse({"token": self.token})

    async def _base(self, request: Request) -> Response:
        self._record(request)
        return self._refused(request) or JSONResponse({})

    async def _manifest(self, request: Request) -> Response:
        self._record(request)
        if refused := self._refused(request):
            return refused
        if self.garbage:
            return Response("<html><body>It works!</body></html>", media_type="text/html")
        reference = request.path_params["reference"]
        found = self.extra.get(reference) or self._from_layout(reference)
        if found is None:
            body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            return JSONResponse(body, status_code=404)
        data, media_type = found
        return Response(data, media_type=media_type)

    def _from_layout(self, reference: str) -> tuple[bytes, str] | None:
        index = json.loads((self.layout / "index.json").read_text())
        for entry in index["manifests"]:
            if reference in (entry["digest"], entry.get("annotations", {}).get(_REF_NAME)):
                path = self.layout / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
                return path.read_bytes(), entry["mediaType"]
        path = self.layout / "blobs" / "sha256" / reference.removeprefix("sha256:")
        if reference.startswith("sha256:") and path.is_file():
            data = path.read_bytes()
            return data, json.loads(data).get("mediaType", "")
        return None

    async def _blob(self, request: Request) -> Response:
        self._record(request)
        if refused := self._refused(request):
            return refused
        digest = request.path_params["digest"]
        path = self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
        if digest in self.extra:
            data = self.extra[digest][0]
        elif path.is_file():
            data = path.read_bytes()
        else:
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN"}]}, status_code=404)
        if digest in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        requested = request.headers.get("range")
        if requested and not self.ignore_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
        headers = {"Content-Length": str(len(data) - start)}
        status = 200
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if digest in self.cut_once or digest in self.cut_always:
            self.cut_once.discard(digest)
            return StreamingResponse(_cut(data[start:]), status_code=status, headers=headers)
        return Response(data[start:], status_code=status, headers=headers)


async def _cut(data: bytes) -> AsyncIterator[bytes]:
    yield data[: len(data) // 2]
    raise ConnectionAbortedError("the fake registry cuts this download")


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


@asynccontextmanager
async def serving(registry: FakeRegistry) -> AsyncIterator[FakeRegistry]:
    """Run ``registry`` on 127.0.0.1 (a port of its own) for the duration of the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue here until uvicorn accepts them: no readiness wait
    registry.host = f"127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        registry.app(),
        log_level="critical",
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        try:
            yield registry
        finally:
            server.should_exit = True
    sock.close()


@asynccontextmanager
async def junk_server() -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that answers every connection with bytes that are not HTTP."""

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"\x00\x01SSH-2.0-not-a-registry\r\n\xff\xfe")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, answer)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            group.cancel_scope.cancel()
