"""The dashboard's static files: compressed once, versioned by content, cached by browsers.

Everything under ``static/`` is read and gzip-compressed (level 9) the first
time an asset is asked for, then kept in memory: the scripts are served
compressed to every browser that accepts gzip (``Content-Encoding: gzip``,
``Vary: Accept-Encoding``), so a page transfers about a third of the
JavaScript it runs (docs/ui.md, "Assets and their limits").

Pages link assets through :func:`static_url`, which adds the first hex
digits of the file's SHA-256 (``/ui/static/app.js?v=3f2a…``). A request
carrying the current version is cached for a year (``immutable``): a new
release changes the URL, not the cached file. Any other request (an old or
no version) is served with ``no-cache`` and an ``ETag``, so the browser
revalidates it (``304 Not Modified``).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["STATIC_DIR", "Asset", "StaticAssets", "asset", "static_url"]

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/ui/static/"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_COMPRESSIBLE = {".js", ".css", ".svg", ".txt", ".map"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    """One static file as served: its bytes, their gzip form and its version."""

    raw: bytes
    compressed: bytes | None
    """The gzip form, or ``None`` when the file does not shrink (images, licences)."""
    version: str
    """The first 16 hex digits of the SHA-256 of ``raw``."""
    media_type: str

    def etag(self, gzipped: bool) -> str:
        """A strong ETag: one for the raw bytes, another for their gzip form."""
        return f'"{self.version}-gz"' if gzipped else f'"{self.version}"'


def _load(path: Path) -> Asset:
    raw = path.read_bytes()
    compressed: bytes | None = None
    if path.suffix in _COMPRESSIBLE or path.name.startswith("LICENSE"):
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        compressed = packed if len(packed) < len(raw) else None
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
    if media_type.startswith("text/") and "charset" not in media_type:
        media_type += "; charset=utf-8"
    return Asset(raw, compressed, hashlib.sha256(raw).hexdigest()[:16], media_type)


@cache
def _assets() -> dict[str, Asset]:
    return {
        path.relative_to(STATIC_DIR).as_posix(): _load(path)
        for path in sorted(STATIC_DIR.rglob("*"))
        if path.is_file()
    }


def asset(name: str) -> Asset:
    """Return the static file ``name`` (a path under ``static/``, e.g. ``vendor/x.js``).

    Raises:
        KeyError: No such file.
    """
    return _assets()[name]


def static_url(name: str) -> str:
    """The URL of static file ``name`` with its version: cached by browsers until it changes.

    Raises:
        KeyError: No such file (a template naming a missing asset fails to render).
    """
    return f"{STATIC_PREFIX}{name}?v={asset(name).version}"


def _accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip`` or ``*``, not ``q=0``)."""
    for part in header.lower().split(","):
        coding, *params = (piece.strip() for piece in part.split(";"))
        if coding in ("gzip", "x-gzip", "*"):
            for param in params:
                if param.startswith("q="):
                    try:
                        return float(param[2:]) > 0
                    except ValueError:
                        return False
            return True
    return False


class StaticAssets:
    """ASGI app serving the file named by the route's ``name`` parameter, gzipped when accepted."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        found = _assets().get(request.path_params.get("name", ""))
        if request.method not in ("GET", "HEAD"):
            response = Response(status_code=405, headers={"allow": "GET, HEAD"})
        elif found is None:
            response = Response("not found", status_code=404, media_type="text/plain")
        else:
            response = self._serve(request, found)
        await response(scope, receive, send)

    @staticmethod
    def _serve(request: Request, found: Asset) -> Response:
        gzipped = found.compressed is not None and _accepts_gzip(
            request.headers.get("accept-encoding", "")
        )
        etag = found.etag(gzipped)
        headers = {
            "etag": etag,
            "cache-control": IMMUTABLE
            if request.query_params.get("v") == found.version
            else REVALIDATE,
        }
        if found.compressed is not None:
            headers["vary"] = "Accept-Encoding"
        if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        body = found.compressed if gzipped and found.compressed is not None else found.raw
        if gzipped:
            headers["content-encoding"] = "gzip"
        if request.method == "HEAD":
            headers["content-length"] = str(len(body))
            return Response(status_code=200, headers=headers, media_type=found.media_type)
        return Response(body, headers=headers, media_type=found.media_type)
