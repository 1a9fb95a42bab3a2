"""Turn YAML text into documents, and raw documents into validated workload specs, all or nothing.

Every front door that takes manifests (the CLI's ``apply -f``, MCP's
``apply_workload``) reads them here, so they say the same about the same
mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ._errors import InvalidSpec
from ._workload import WorkloadSpec

__all__ = ["describe_validation_error", "load_yaml_documents", "parse_workload_documents"]

_FIXES = {
    "extra_forbidden": "remove it (check its spelling against the schema)",
    "missing": "add it",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "string_pattern_mismatch": "use lowercase letters, digits and '-' (a DNS label)",
    "too_short": "add at least one entry",
    "value_error": "",
}


def load_yaml_documents(text: str, source: str) -> list[Any]:
    """Return the documents of YAML ``text`` (empty ones skipped); ``source`` names it in errors.

    Raises:
        InvalidSpec: the text is not valid YAML; the message names ``source``
            and, where the parser knows it, the line and column.

    """
    import yaml  # PyYAML: here, so that the vocabulary's import needs pydantic only

    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InvalidSpec(
            f"{source}: {where}invalid YAML: {exc.problem or exc}; nothing was applied"
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{source}: invalid YAML: {exc}; nothing was applied") from None


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
