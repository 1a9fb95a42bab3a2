"""The wire form of a :class:`~shoal.interfaces.ShoalError`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ._base import Model

__all__ = ["ErrorBody"]


class ErrorBody(Model):
    """The wire form of a :class:`ShoalError` (REST bodies, MCP tool errors)."""

    code: str
    """Stable machine-readable error code, e.g. ``not_found``."""
    message: str
    """What went wrong and what to do about it."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Structured context: the field, the object, the reason."""
