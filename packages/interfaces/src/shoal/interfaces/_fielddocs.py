"""Whether models read their fields' docstrings: on, except in a short-lived client.

Field docstrings become the descriptions of the OpenAPI and MCP schemas that
agents read, so every process that serves a schema keeps them (the default).
Reading them costs pydantic a parse of each model's source, about 3 ms per
model class at import (Python 3.11): a third of the time `shoal get`
would otherwise take. A process that only calls a server and prints the
answer (the `shoal` command, but not `shoal agent` or `shoal mcp`) turns
them off before any model is imported. Validation is the same either way.
"""

from __future__ import annotations

import sys

__all__ = ["describe_fields", "fields_described"]

_described = True


def describe_fields(enabled: bool) -> None:
    """Set whether models built from now on read their field docstrings.

    Raises:
        RuntimeError: models were imported already (they keep what they read).

    """
    global _described
    if enabled != _described and "shoal.interfaces._base" in sys.modules:
        raise RuntimeError("describe_fields() must be called before any Shoal model is imported")
    _described = enabled


def fields_described() -> bool:
    """Return whether models read their field docstrings."""
    return _described
