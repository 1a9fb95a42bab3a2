"""The base of every Shoal model: field docstrings become schema descriptions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Model"]


class Model(BaseModel):
    """A pydantic model whose attribute docstrings describe its fields.

    The descriptions land in the OpenAPI and MCP schemas that agents read.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)
