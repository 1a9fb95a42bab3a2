"""Shoal's REST API: FastAPI app, RFC 9421 ed25519 request signatures, the signed client.

Public surface:

* :func:`create_app` / :func:`run_agent` — the server side (other front doors
  join the agent as an :data:`AgentMount`);
* :class:`ShoalClient` — the Service protocol over signed HTTP;
* :class:`RequestVerifier`, :class:`SignedAuth` — the signature policy and signer;
* key files: :func:`init_keypair`, :func:`load_keypair`, :func:`default_home`,
  :func:`ensure_authorized_keys`, :class:`Role`.

The server side is imported on first use (see ``_LAZY``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._auth import Principal, ReplayCache, RequestVerifier, SignedAuth, target_uri_from_scope
from ._client import DEFAULT_SERVER, ShoalClient
from ._keys import (
    AUTHORIZED_KEYS_FILE,
    AuthorizedKey,
    AuthorizedKeys,
    KeyPair,
    Role,
    default_home,
    default_key_id,
    ensure_authorized_keys,
    init_keypair,
    load_authorized_keys,
    load_keypair,
    parse_authorized_keys,
)
from ._limits import MAX_BODY_BYTES

if TYPE_CHECKING:
    from ._agent import AgentContext, AgentMount, AuthorizedKeysFile, run_agent
    from ._app import ApplyRequest, ScaleRequest, create_app
    from ._server import bind, parse_addr, serve_api

# The server side (FastAPI, uvicorn, the whole node) is imported on first use,
# so that a `shoal` CLI command, which only needs the signed client, starts fast.
_LAZY = {
    "AgentContext": "._agent",
    "AgentMount": "._agent",
    "AuthorizedKeysFile": "._agent",
    "run_agent": "._agent",
    "ApplyRequest": "._app",
    "ScaleRequest": "._app",
    "create_app": "._app",
    "bind": "._server",
    "parse_addr": "._server",
    "serve_api": "._server",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "AUTHORIZED_KEYS_FILE",
    "DEFAULT_SERVER",
    "MAX_BODY_BYTES",
    "AgentContext",
    "AgentMount",
    "ApplyRequest",
    "AuthorizedKey",
    "AuthorizedKeys",
    "AuthorizedKeysFile",
    "KeyPair",
    "Principal",
    "ReplayCache",
    "RequestVerifier",
    "Role",
    "ScaleRequest",
    "ShoalClient",
    "SignedAuth",
    "bind",
    "create_app",
    "default_home",
    "default_key_id",
    "ensure_authorized_keys",
    "init_keypair",
    "load_authorized_keys",
    "load_keypair",
    "parse_addr",
    "parse_authorized_keys",
    "run_agent",
    "serve_api",
    "target_uri_from_scope",
]
