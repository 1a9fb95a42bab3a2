"""One Kubernetes object to a validated Shoal object, or the reason it cannot be.

:func:`translate_object` checks the kind and apiVersion, runs the kind's
translator, keeps the manifest in ``origin`` and validates the result with the
Shoal model. A pydantic error is reported at the Kubernetes path the value
came from (``spec.template.spec.containers[0].ports[0].containerPort``), not at
the Shoal field it became.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shoal.interfaces import (
    ConfigMapSpec,
    NamespaceSpec,
    ObjectSpec,
    Origin,
    SecretSpec,
    WorkloadSpec,
    describe_validation_error,
)

from ._fields import Fields, Loc, ObjectReport, TranslationError
from ._kinds import KINDS, LAST_APPLIED

__all__ = ["KubeObject", "ObjectError", "object_label", "translate_object"]

_KEY_IN_MESSAGE = re.compile(r"key '([^']+)'|key\(s\) ([^,:\s]+)")
_QUOTED = re.compile(r"('[^']*')")
_SHOAL_WORDS = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")
_KUBERNETES_WORDS = {
    "downward_api": "downwardAPI",
    "env_refs": "env",
    "restart_policy": "restartPolicy",
}
"""Shoal field names whose Kubernetes name is not simply their camelCase."""


@dataclass
class KubeObject:
    """One translated object, or an unknown kind that was skipped (``spec`` None)."""

    label: str
    """'Deployment default/web', as warnings and errors name it."""
    spec: ObjectSpec | None = None
    """The validated Shoal object."""
    warnings: list[str] = field(default_factory=list)
    """'<label>: <path>: ignored: <why>' for each field (or the kind) Shoal ignores."""


class ObjectError(Exception):
    """An object that cannot be translated: where, what is wrong, and the fix."""

    def __init__(
        self, label: str, path: str, problem: str, fix: str, errors: list[dict[str, str]]
    ) -> None:
        super().__init__(f"{label}: {path}: {problem}")
        self.label = label
        self.path = path
        self.problem = problem
        self.fix = fix
        self.errors = errors


def object_label(document: dict[str, Any]) -> str:
    """Return '<Kind> <namespace>/<name>' (just '<Kind> <name>' for a Namespace)."""
    kind = document.get("kind")
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name") or "(unnamed)"
    if kind == "Namespace":
        return f"{kind} {name}"
    return f"{kind} {metadata.get('namespace') or 'default'}/{name}"


def translate_object(document: dict[str, Any]) -> KubeObject:
    """Translate one Kubernetes object (not a List).

    Raises:
        ObjectError: the apiVersion is wrong for the kind, a value cannot be
            translated, or the translation fails validation.

    """
    label = object_label(document)
    kind_name = document.get("kind")
    if not isinstance(kind_name, str) or kind_name in ("", "Workload"):
        problem, fix = "a Kubernetes document needs a kind", "add kind (e.g. kind: Deployment)"
        if kind_name == "Workload":
            problem, fix = "a Shoal Workload has no apiVersion", "remove apiVersion"
        raise ObjectError(label, "kind", problem, fix, [_entry("kind", problem, fix)])
    kind = KINDS.get(kind_name)
    if kind is None:
        why = f"Shoal does not run {kind_name} objects (it runs {', '.join(KINDS)})"
        return KubeObject(label, warnings=[f"{label}: kind: ignored: {why}"])
    api_version = document.get("apiVersion")
    if api_version != kind.api_version:
        problem = f"{kind_name} is not served as {api_version!r}"
        fix = f"use apiVersion: {kind.api_version}"
        raise ObjectError(label, "apiVersion", problem, fix, [_entry("apiVersion", problem, fix)])
    manifest = copy.deepcopy(document)
    report = ObjectReport()
    fields = Fields(report, document, "")
    fields.take("apiVersion")
    fields.take("kind")
    try:
        data = kind.translate(fields)
        fields.done()
    except TranslationError as exc:
        entry = _entry(exc.path, exc.problem, exc.fix)
        raise ObjectError(label, exc.path, exc.problem, exc.fix, [entry]) from None
    if kind.model is SecretSpec:
        _without_values(manifest)
    ignored = [f"{path}: {why}" for path, why in report.ignored]
    data["origin"] = Origin(
        api_version=kind.api_version, kind=kind_name, manifest=manifest, ignored=ignored
    )
    spec = _validate(kind.model, data, report, label)
    warnings = [f"{label}: {path}: ignored: {why}" for path, why in report.ignored]
    return KubeObject(label, spec, warnings)


def _without_values(manifest: dict[str, Any]) -> None:
    """Remove whatever holds a Secret's values from its manifest, in place."""
    manifest.pop("data", None)
    manifest.pop("stringData", None)
    annotations = (manifest.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)


def _entry(path: str, problem: str, fix: str) -> dict[str, str]:
    return {"field": path, "problem": problem, "fix": fix}


def _validate(
    model: type[WorkloadSpec | ConfigMapSpec | SecretSpec | NamespaceSpec],
    data: dict[str, Any],
    report: ObjectReport,
    label: str,
) -> ObjectSpec:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        config = model in (ConfigMapSpec, SecretSpec)
        errors = []
        for error, described in zip(
            exc.errors(include_url=False), describe_validation_error(exc), strict=True
        ):
            loc = tuple(
                p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            problem = _in_kubernetes_words(described["problem"])
            path = _kubernetes_path(loc, problem, report, config=config)
            errors.append(_entry(path, problem, _in_kubernetes_words(described["fix"])))
        first = errors[0]
        raise ObjectError(label, first["field"], first["problem"], first["fix"], errors) from None


def _in_kubernetes_words(text: str) -> str:
    """Return ``text`` with the Shoal field names the models' messages use in camelCase.

    A message names Shoal's field (``field_path``); the user wrote Kubernetes' (``fieldPath``).
    """

    def camel(match: re.Match[str]) -> str:
        word = match.group(0)
        first, *rest = word.split("_")
        return _KUBERNETES_WORDS.get(word, first + "".join(p.title() for p in rest))

    # Quoted parts are the user's own values: keep them as written.
    parts = _QUOTED.split(text)
    return "".join(p if i % 2 else _SHOAL_WORDS.sub(camel, p) for i, p in enumerate(parts))


def _kubernetes_path(loc: Loc, problem: str, report: ObjectReport, *, config: bool) -> str:
    """Return the Kubernetes path of a pydantic error at the Shoal location ``loc``."""
    path = report.kubernetes_path(loc)
    if path:
        return path
    # An error of the whole object: a ConfigMap's or Secret's names the key it is about.
    match = _KEY_IN_MESSAGE.search(problem)
    if match and config:
        key = match.group(1) or match.group(2)
        return (
            report.paths.get(("data", key))
            or report.paths.get(("binary_data", key))
            or (f"data[{key}]")
        )
    if config:
        return "type" if "has type" in problem else "data"
    return "(object)"
