"""Self-contained output schemas: the views publish their JSON schema with every ``$ref`` inlined.

Pydantic describes nested models with ``$ref`` into ``$defs``. MCP clients
validate each structured tool result against the tool's output schema, and
resolving references dominates that work (the SDK's client takes about twice
as long on a 100-workload list with them); some clients do not resolve them
at all. :class:`SelfContained` models generate their schema through pydantic's
``__get_pydantic_json_schema__`` hook and replace each reference by its
definition. The views are not recursive, so inlining terminates.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = ["SelfContained"]


class SelfContained(BaseModel):
    """A model whose JSON schema carries no ``$ref``: every nested model is written out."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Generate the schema as usual, then inline every reference it contains."""

        def expand(node: Any) -> Any:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str):
                    siblings = {k: expand(v) for k, v in node.items() if k != "$ref"}
                    return {**expand(handler.resolve_ref_schema({"$ref": ref})), **siblings}
                return {k: expand(v) for k, v in node.items()}
            if isinstance(node, list):
                return [expand(item) for item in node]
            return node

        schema: JsonSchemaValue = expand(handler.resolve_ref_schema(handler(core_schema)))
        return schema
