"""Shoal's REST API: FastAPI app, RFC 9421 ed25519 request signatures, the signed client.

Public surface:

* :func:`create_app` / :func:`run_agent` — the server side (other front doors
  join the agent as an :data:`AgentMount`);
* :class:`ShoalClient` — the Service protocol over signed HTTP;
* :class:`RequestVerifier`, :class:`SignedAuth` — the signature policy and signer;
* key files: :func:`init_keypair`, :func:`load_keypair`, :func:`default_home`,
  :func:`ensure_authorized_keys`, :class:`Role`.

Every part is imported on first use (see ``_LAZY``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._defaults import DEFAULT_SERVER

if TYPE_CHECKING:
    from ._agent import AgentContext, AgentMount, AuthorizedKeysFile, run_agent
    from ._app import ApplyRequest, ScaleRequest, create_app
    from ._auth import Principal, ReplayCache, RequestVerifier, SignedAuth, target_uri_from_scope
    from ._client import ShoalClient
    from ._keys import (
        AUTHORIZED_KEYS_FILE,
        AuthorizedKey,
        AuthorizedKeys,
        KeyPair,
        default_home,
        default_key_id,
        ensure_authorized_keys,
        init_keypair,
        load_authorized_keys,
        load_keypair,
        parse_authorized_keys,
    )
    from ._limits import MAX_BODY_BYTES
    from ._roles import Role
    from ._server import bind, parse_addr, serve_api

# Every part is imported on first use: a `shoal` command loads the key files
# and the signed client (httpx) only when it runs, and never the server side
# (FastAPI, Starlette, uvicorn, the node), so `shoal --help` and `shoal get`
# start fast. tests/cli/test_imports.py guards this.
_LAZY = {
    "AgentContext": "._agent",
    "AgentMount": "._agent",
    "AuthorizedKeysFile": "._agent",
    "run_agent": "._agent",
    "ApplyRequest": "._app",
    "ScaleRequest": "._app",
    "create_app": "._app",
    "Principal": "._auth",
    "ReplayCache": "._auth",
    "RequestVerifier": "._auth",
    "SignedAuth": "._auth",
    "target_uri_from_scope": "._auth",
    "ShoalClient": "._client",
    "AUTHORIZED_KEYS_FILE": "._keys",
    "AuthorizedKey": "._keys",
    "AuthorizedKeys": "._keys",
    "KeyPair": "._keys",
    "Role": "._roles",
    "default_home": "._keys",
    "default_key_id": "._keys",
    "ensure_authorized_keys": "._keys",
    "init_keypair": "._keys",
    "load_authorized_keys": "._keys",
    "load_keypair": "._keys",
    "parse_authorized_keys": "._keys",
    "MAX_BODY_BYTES": "._limits",
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
