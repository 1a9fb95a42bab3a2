"""Turn YAML text into documents, and raw documents into validated workload specs, all or nothing.

Every front door that takes manifests (the CLI's ``apply -f``, MCP's
``apply_workload``) reads them here, so they say the same about the same
mistake.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ._errors import InvalidSpec
from ._workload import WorkloadSpec

__all__ = [
    "MAX_ALIAS_EXPANSION",
    "MAX_MANIFEST_FILE_BYTES",
    "describe_validation_error",
    "load_yaml_documents",
    "parse_workload_documents",
]

_FIXES = {
    "extra_forbidden": "remove it (check its spelling against the schema)",
    "missing": "add it",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "string_pattern_mismatch": "use lowercase letters, digits and '-' (a DNS label)",
    "too_short": "add at least one entry",
    "value_error": "",
}


MAX_MANIFEST_FILE_BYTES = 8 * 1024 * 1024
"""The largest manifest file read (``shoal apply -f``, a watched directory): a ConfigMap or
Secret holds at most 1 MiB, and a larger file is more likely a mistake than manifests."""

MAX_ALIAS_EXPANSION = 100_000
"""How many nodes a YAML document's aliases may add to what it spells out.

An alias is cheap to parse but is copied wherever the document is used (as
JSON, as a stored manifest): ten nested aliases of ten make 10^10 nodes out
of a few hundred bytes. Merge keys that reuse a block in a few places stay far below this."""


def load_yaml_documents(text: str, source: str) -> list[Any]:
    """Return the documents of YAML ``text`` (empty ones skipped); ``source`` names it in errors.

    Stricter than PyYAML's ``safe_load_all``: a key repeated in one mapping
    is refused (PyYAML keeps the last value, silently), and so are aliases
    that expand a document beyond :data:`MAX_ALIAS_EXPANSION` nodes or refer
    to the node that holds them.

    Raises:
        InvalidSpec: the text is not valid YAML, repeats a key, expands too
            far or nests too deeply; the message names ``source`` and, where
            the parser knows it, the line and column.

    """
    import yaml  # PyYAML: here, so that the vocabulary's import needs pydantic only

    try:
        return [doc for doc in yaml.load_all(text, Loader=_loader()) if doc is not None]
    except RecursionError:
        raise InvalidSpec(
            f"{source}: invalid YAML: nested too deeply; nothing was applied"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InvalidSpec(
            f"{source}: {where}invalid YAML: {exc.problem or exc}; nothing was applied"
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{source}: invalid YAML: {exc}; nothing was applied") from None


@functools.cache
def _loader() -> type[Any]:
    """Return PyYAML's safe loader, made strict about repeated keys and aliases.

    Made on first use, so that importing the vocabulary does not import PyYAML.
    """
    import yaml
    from yaml.composer import ComposerError
    from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

    merge = "tag:yaml.org,2002:merge"

    def expanded(root: Node) -> int:
        """The nodes ``root`` stands for once every alias is copied out (each node once)."""
        sizes: dict[int, int] = {}
        holding: set[int] = set()

        def size(node: Node) -> int:
            known = sizes.get(id(node))
            if known is not None:
                return known
            if id(node) in holding:
                raise ComposerError(
                    None, None, "an alias refers to the node that holds it", node.start_mark
                )
            holding.add(id(node))
            total = 1
            if isinstance(node, SequenceNode):
                total += sum(size(item) for item in node.value)
            elif isinstance(node, MappingNode):
                total += sum(size(key) + size(value) for key, value in node.value)
            holding.discard(id(node))
            sizes[id(node)] = total
            return total

        return size(root) - len(sizes)

    class StrictLoader(yaml.SafeLoader):
        def compose_document(self) -> Node | None:
            node = super().compose_document()
            if node is not None and expanded(node) > MAX_ALIAS_EXPANSION:
                raise ComposerError(
                    None,
                    None,
                    f"its aliases expand the document by more than {MAX_ALIAS_EXPANSION:,} "
                    "nodes: write the repeated parts out, or split the document",
                    node.start_mark,
                )
            return node

        def compose_mapping_node(self, anchor: Any) -> MappingNode:  # str | None (stubs differ)
            node = super().compose_mapping_node(anchor)
            first: dict[object, Node] = {}
            for key, _ in node.value:
                if not isinstance(key, ScalarNode) or key.tag == merge:
                    continue
                # Compared as the keys of the mapping made of it will be: 1 and 01 are one.
                earlier = first.setdefault(self.construct_object(key), key)
                if earlier is not key:
                    raise ComposerError(
                        None,
                        None,
                        f"key {key.value!r} appears twice in one mapping (first on line "
                        f"{earlier.start_mark.line + 1}): keep one",
                        key.start_mark,
                    )
            return node

    return StrictLoader


def _location(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(document)"


def describe_validation_error(exc: ValidationError) -> list[dict[str, str]]:
    """Return one ``{field, problem, fix}`` entry per pydantic error."""
    described: list[dict[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        problem = error["msg"].removeprefix("Value error, ")
        described.append(
            {
                "field": _location(loc),
                "problem": problem,
                "fix": _FIXES.get(error["type"], "correct the value"),
            }
        )
    return described


def parse_workload_documents(
    documents: Sequence[Any], source: str = "request"
) -> list[WorkloadSpec]:
    """Validate every document; return the specs, or raise for the first bad one.

    Raises:
        InvalidSpec: a document is not a mapping, fails validation, or repeats
            a workload of an earlier document. The message names the document
            (1-based), the workload, the field and the fix.

    """
    if not documents:
        raise InvalidSpec(f"{source}: no workload documents found: write at least one")
    specs: list[WorkloadSpec] = []
    seen: dict[str, int] = {}
    for index, document in enumerate(documents, start=1):
        label = f"{source}: document {index}"
        if not isinstance(document, dict):
            raise InvalidSpec(
                f"{label}: expected a mapping with a workload, got {type(document).__name__}",
                document=index,
            )
        name = document.get("name")
        if isinstance(name, str):
            label += f" (workload {name!r})"
        try:
            spec = WorkloadSpec.model_validate(document)
        except ValidationError as exc:
            errors = describe_validation_error(exc)
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            fix = f"; {first['fix']}" if first["fix"] else ""
            raise InvalidSpec(
                f"{label}: field {first['field']}: {first['problem']}{fix}{more}",
                document=index,
                errors=errors,
            ) from None
        if spec.key in seen:
            raise InvalidSpec(
                f"{label}: workload {spec.key} is also defined by document {seen[spec.key]}; "
                "keep one of them",
                document=index,
            )
        seen[spec.key] = index
        specs.append(spec)
    return specs
