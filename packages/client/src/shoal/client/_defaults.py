"""Where a client finds the server when told nothing else.

Its own module, free of httpx, so that the `shoal` command can show the
default in ``--help`` without loading the client.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SERVER"]

DEFAULT_SERVER = "http://127.0.0.1:7070"
"""The agent's API address when ``--server`` and ``SHOAL_SERVER`` are unset."""
