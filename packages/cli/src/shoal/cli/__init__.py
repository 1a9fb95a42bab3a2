"""The `shoal` command line.

``main`` is the entry point; ``app`` is the typer app with every command
registered, imported on first use (``main`` loads only the command it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.interfaces import lazy_getattr

from ._main import main

if TYPE_CHECKING:
    from ._app import app

__getattr__ = lazy_getattr(__name__, {"app": "._app"}, globals())

__all__ = ["app", "main"]
