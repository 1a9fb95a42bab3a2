"""Documents of either dialect to validated Shoal objects (see the package docstring).

A document with an ``apiVersion`` is Kubernetes' (a ``v1`` ``List`` is
unpacked into its items, each translated by :mod:`._kubernetes`); one without
is Shoal's own and is validated as it is. Warnings are collected over all
documents; with ``strict`` they become one error listing them all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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

from ._kinds import KINDS
from ._kubernetes import KubeObject, ObjectError, translate_object

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
    """One line per field (or object of a kind) Shoal ignores, with its Kubernetes path:
    'Deployment default/web: spec.template.spec.tolerations: ignored: why'."""


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
    seen: dict[str, str] = {}
    for index, document in enumerate(documents, start=1):
        label = f"{source}: document {index}"
        if not isinstance(document, dict):
            raise InvalidSpec(
                f"{label}: expected a mapping, got {type(document).__name__}", document=index
            )
        if "apiVersion" in document:
            specs = _kubernetes_documents(document, label, index, translation.warnings)
        else:
            specs = [_shoal_document(document, label, index)]
        for where, spec in specs:
            key = _key(spec)
            if key in seen:
                raise InvalidSpec(
                    f"{where}: {key} is also defined by {seen[key]}; keep one of them",
                    document=index,
                )
            seen[key] = where.removeprefix(f"{source}: ")
            translation.objects.append(spec)
    if strict and translation.warnings:
        count = len(translation.warnings)
        raise InvalidSpec(
            f"{source}: strict: {count} field(s) or object(s) Shoal would ignore, nothing was "
            "applied (remove them, or apply without strict): " + "; ".join(translation.warnings),
            ignored=list(translation.warnings),
        )
    return translation


def _kubernetes_documents(
    document: dict[str, Any], label: str, index: int, warnings: list[str]
) -> list[tuple[str, ObjectSpec]]:
    """Translate a Kubernetes document (a List's items each); add its warnings."""
    specs: list[tuple[str, ObjectSpec]] = []
    for where, item in _items(document, label):
        try:
            result: KubeObject = translate_object(item)
        except ObjectError as exc:
            more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
            fix = f"; {exc.fix}" if exc.fix else ""
            raise InvalidSpec(
                f"{where} ({exc.label}): {exc.path}: {exc.problem}{fix}{more}",
                document=index,
                path=exc.path,
                errors=exc.errors,
            ) from None
        warnings.extend(result.warnings)
        if result.spec is not None:
            specs.append((f"{where} ({result.label})", result.spec))
    return specs


def _items(document: dict[str, Any], label: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``document``, or the items of a v1 List (nested Lists unpacked too)."""
    if document.get("kind") != "List":
        yield label, document
        return
    items = document.get("items")
    if document.get("apiVersion") != "v1" or not isinstance(items, list):
        raise InvalidSpec(
            f"{label}: a List needs apiVersion: v1 and a list of items: write them under items"
        )
    for position, item in enumerate(items):
        where = f"{label}, items[{position}]"
        if not isinstance(item, dict):
            raise InvalidSpec(f"{where}: expected a mapping, got {type(item).__name__}")
        yield from _items(item, where)


def _shoal_document(document: dict[str, Any], label: str, index: int) -> tuple[str, ObjectSpec]:
    """Validate a document in Shoal's own dialect."""
    kind = document.get("kind", "Workload")
    model = _SHOAL_KINDS.get(kind)
    if model is None:
        if kind in KINDS or kind == "List":
            raise InvalidSpec(
                f"{label}: kind {kind!r} has no apiVersion: add 'apiVersion: "
                f"{KINDS[kind].api_version if kind in KINDS else 'v1'}' for Kubernetes' {kind}",
                document=index,
            )
        raise InvalidSpec(
            f"{label}: kind {kind!r} is not one Shoal knows: use Workload, ConfigMap, "
            "Secret or Namespace (or a Kubernetes kind, with its apiVersion)",
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
    return label, spec
