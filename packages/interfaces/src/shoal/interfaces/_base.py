"""The base of every Shoal model: field docstrings become schema descriptions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ._fielddocs import fields_described

__all__ = ["Model"]


class Model(BaseModel):
    """A pydantic model whose attribute docstrings describe its fields.

    The descriptions land in the OpenAPI and MCP schemas that agents read.
    Validators are built on first use, not at import, so a process pays only
    for the models it validates (a `shoal get` one or two). A client that
    serves no schema may skip reading the docstrings (see :mod:`._fielddocs`).
    """

    model_config = ConfigDict(use_attribute_docstrings=fields_described(), defer_build=True)
