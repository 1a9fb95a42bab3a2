"""Shoal's REST API: the FastAPI app and its RFC 9421 signature policy.

Public surface (the server side; ``shoal.agent`` hosts it, other front doors
mounted beside it; callers use :mod:`shoal.client`):

* :func:`create_app`, :func:`serve_api`, :func:`bind`, :func:`parse_addr`;
* :func:`metrics_app` — ``GET /metrics`` alone, at an address of its own;
* :class:`RequestVerifier`, :class:`ReplayCache` — the signature policy;
* :data:`MAX_BODY_BYTES`.

Every part is imported on first use (see ``_LAZY``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.interfaces import lazy_getattr

if TYPE_CHECKING:
    from ._app import ApplyRequest, ScaleRequest, create_app
    from ._auth import KeyLookup, ReplayCache, RequestVerifier, target_uri_from_scope
    from ._limits import MAX_BODY_BYTES
    from ._observe import metrics_app
    from ._server import bind, parse_addr, serve_api

_LAZY = {
    "ApplyRequest": "._app",
    "ScaleRequest": "._app",
    "create_app": "._app",
    "KeyLookup": "._auth",
    "ReplayCache": "._auth",
    "RequestVerifier": "._auth",
    "target_uri_from_scope": "._auth",
    "MAX_BODY_BYTES": "._limits",
    "metrics_app": "._observe",
    "bind": "._server",
    "parse_addr": "._server",
    "serve_api": "._server",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "MAX_BODY_BYTES",
    "ApplyRequest",
    "KeyLookup",
    "ReplayCache",
    "RequestVerifier",
    "ScaleRequest",
    "bind",
    "create_app",
    "metrics_app",
    "parse_addr",
    "serve_api",
    "target_uri_from_scope",
]
