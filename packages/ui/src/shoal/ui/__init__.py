"""Shoal's web dashboard: server-rendered pages at ``/ui`` in every server node.

The composition root mounts it with :func:`ui_mount`, handing it the node's
service layer and a function that authenticates a signed request. Pages are
shells without data; the browser holds a non-extractable Ed25519 key
(WebCrypto, kept in IndexedDB) and signs every data request with RFC 9421
exactly as ``shoal.client.SignedAuth`` does, so the server's request verifier
accepts it and no bearer secret ever reaches the browser. Fragments are
rendered for the caller's role; changes are refused server-side anyway.
"""

from ._app import create_ui_app
from ._auth import Enrol
from ._fragments import PAGE_SIZE
from ._mount import UI_PATH, ActsAs, Authenticate, UiHost, ui_mount

__all__ = [
    "PAGE_SIZE",
    "UI_PATH",
    "ActsAs",
    "Authenticate",
    "Enrol",
    "UiHost",
    "create_ui_app",
    "ui_mount",
]
