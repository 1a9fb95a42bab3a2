"""Documents of either dialect to validated Shoal objects (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shoal.interfaces import (
    ConfigMapSpec,
    InvalidSpec,
    NamespaceSpec,
    ObjectSpec,
    SecretSpec,
    WorkloadSpec,
    describe_validation_error,
)

__all__ = ["Translation", "parse_documents"]

_SHOAL_KINDS: dict[str, type[WorkloadSpec | ConfigMapSpec | SecretSpec | NamespaceSpec]] = {
    "Workload": WorkloadSpec,
    "ConfigMap": ConfigMapSpec,
    "Secret": SecretSpec,
    "Namespace": NamespaceSpec,
}


@dataclass
class Translation:
    """What one source's documents become."""

    objects: list[ObjectSpec] = field(default_factory=list)
    """The objects to apply, in document order."""
    warnings: list[str] = field(default_factory=list)
    """One line per field Shoal ignores: 'Deployment default/web: spec.x: why'."""


def _key(spec: ObjectSpec) -> str:
    namespace = getattr(spec, "namespace", "")
    return f"{spec.kind} {namespace + '/' if namespace else ''}{spec.name}"


def parse_documents(
    documents: Sequence[Any], source: str = "request", *, strict: bool = False
) -> Translation:
    """Validate and translate every document; all or nothing.

    Raises:
        InvalidSpec: a document is not a mapping, is of a kind Shoal cannot run
            (with ``strict``, also one it would only warn about), fails
            validation, or repeats an object of an earlier document. The message
            names the source, the document (1-based), the object, the field and
            the fix.

    """
    if not documents:
        raise InvalidSpec(f"{source}: no documents found: write at least one")
    translation = Translation()
    seen: dict[str, int] = {}
    for index, document in enumerate(documents, start=1):
        label = f"{source}: document {index}"
        if not isinstance(document, dict):
            raise InvalidSpec(
                f"{label}: expected a mapping, got {type(document).__name__}", document=index
            )
        kind = document.get("kind", "Workload")
        model = _SHOAL_KINDS.get(kind) if "apiVersion" not in document else None
        if model is None:
            raise InvalidSpec(
                f"{label}: kind {kind!r} is not one Shoal knows: use Workload, ConfigMap, "
                "Secret or Namespace",
                document=index,
            )
        name = document.get("name")
        if isinstance(name, str):
            label += f" ({kind} {name!r})"
        try:
            spec: ObjectSpec = model.model_validate(document)
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
        key = _key(spec)
        if key in seen:
            raise InvalidSpec(
                f"{label}: {key} is also defined by document {seen[key]}; keep one of them",
                document=index,
            )
        seen[key] = index
        translation.objects.append(spec)
    return translation
