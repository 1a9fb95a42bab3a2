"""Keep secret values out of everything an agent sees.

A container env variable is secret when its *name* looks like one (PASSWORD,
TOKEN, SECRET, KEY, CREDENTIAL, ...); a value of any variable that is a URL
with a password (``postgres://app:hunter2@db/app``) has that password hidden.
Redaction is structural — it rewrites the ``env`` of workloads, instances,
plan diffs and Kubernetes manifests (Shoal's map, and Kubernetes' list of
``{name, value}``), and kubectl's ``last-applied-configuration`` annotation
(the whole document again) — plus a scrub of the known secret values out of
free text such as log lines and argument errors.

A Secret's values are never shown at all: a Secret document (``kind:
Secret``, either dialect) has every value of its ``data`` and ``stringData``
redacted wherever it appears (tool arguments in audit events included), and
a planned change of a Secret shows which fields change, not their values.

Redacted values read :data:`REDACTED`. An agent that reads a workload, edits
it and applies it back sends :data:`REDACTED` where the secrets were;
:func:`restore_secrets` puts the stored values back, so a round trip never
overwrites a secret with the placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from shoal.interfaces import (
    Container,
    Explanation,
    FieldChange,
    Instance,
    InvalidInput,
    Plan,
    Workload,
    WorkloadSpec,
)

__all__ = [
    "REDACTED",
    "is_secret_name",
    "json_secret_values",
    "redact_env",
    "redact_json",
    "redact_model",
    "redact_plan",
    "restore_secrets",
    "scrub",
    "secret_values",
]

REDACTED = "<redacted>"
"""What a secret value reads as in tool outputs and resources."""

_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|key|credential|auth|cookie|session|private|cert|salt|signature|dsn",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)(?P<password>[^@\s/]+)(?=@)")
_MIN_SCRUB_LENGTH = 4  # shorter values ("1", "on") would blank out ordinary text

M = TypeVar("M", bound=BaseModel)


def is_secret_name(name: str) -> bool:
    """Return whether an env variable called ``name`` holds a secret."""
    return bool(_SECRET_NAME.search(name))


def _redact_value(name: str, value: Any) -> Any:
    if value is None:
        return value
    if is_secret_name(name):
        return REDACTED  # whatever it is: a list or a number sent by mistake holds it too
    if not isinstance(value, str):
        return value
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)


def redact_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``env`` with its secret values replaced by :data:`REDACTED`."""
    return {name: _redact_value(name, value) for name, value in env.items()}


_SECRET_DATA = ("data", "stringData", "string_data")
"""The fields of a Secret document that hold its values."""
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""kubectl's copy of the whole document, values included, in an annotation."""


def _redact_secret_document(document: dict[str, Any]) -> dict[str, Any]:
    clean = dict(document)
    for key in _SECRET_DATA:
        values = clean.get(key)
        if isinstance(values, dict):
            clean[key] = dict.fromkeys(values, REDACTED)
        elif values is not None:
            clean[key] = REDACTED
    metadata = clean.get("metadata")
    if not isinstance(metadata, dict):
        return clean
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
        annotations = {**annotations, _LAST_APPLIED: REDACTED}
        clean["metadata"] = {**metadata, "annotations": annotations}
    return clean


def _redact_env_list(env: list[Any]) -> list[Any]:
    """Redact Kubernetes' env, a list of ``{name, value}`` (or ``valueFrom``, kept)."""
    return [
        {**item, "value": _redact_value(str(item.get("name", "")), item["value"])}
        if isinstance(item, dict) and "value" in item
        else redact_json(item)
        for item in env
    ]


def _redact_item(key: str, item: Any) -> Any:
    if key == "env" and isinstance(item, dict):
        return redact_env(item)
    if key == "env" and isinstance(item, list):
        return _redact_env_list(item)
    if key == "annotations" and isinstance(item, dict) and _LAST_APPLIED in item:
        return {**item, _LAST_APPLIED: REDACTED}
    return redact_json(item)


def redact_json(value: Any) -> Any:
    """Redact every env (either dialect), Secret document and kubectl copy in a JSON-like value."""
    if isinstance(value, dict):
        if value.get("kind") == "Secret":
            value = _redact_secret_document(value)
        return {key: _redact_item(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    if isinstance(value, str):  # a URL's password, wherever it is (args, annotations, ...)
        return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)
    return value


def json_secret_values(value: Any) -> set[str]:
    """Return the secret values a JSON-like value holds (what :func:`redact_json` hides).

    For scrubbing text made from that value, such as an argument's
    validation error that quotes it.
    """
    found: set[str] = set()

    def leaves(item: Any) -> None:
        if isinstance(item, dict):
            for inner in item.values():
                leaves(inner)
        elif isinstance(item, list):
            for inner in item:
                leaves(inner)
        elif item is not None:
            found.add(str(item))

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            if item.get("kind") == "Secret":
                for key in _SECRET_DATA:
                    leaves(item.get(key))
            for key, inner in item.items():
                if key == "env" and isinstance(inner, dict):
                    for name, env_value in inner.items():
                        if is_secret_name(name):
                            leaves(env_value)
                elif key == "env" and isinstance(inner, list):
                    for entry in inner:
                        if isinstance(entry, dict) and is_secret_name(str(entry.get("name", ""))):
                            leaves(entry.get("value"))
                elif key == _LAST_APPLIED:
                    leaves(inner)
                walk(inner)
        elif isinstance(item, list):
            for inner in item:
                walk(inner)
        elif isinstance(item, str):
            found.update(m.group("password") for m in _URL_PASSWORD.finditer(item))

    walk(value)
    return {secret for secret in found if len(secret) >= _MIN_SCRUB_LENGTH}


def redact_model(model: M) -> M:
    """Return a copy of a Workload, Instance, Explanation, ... with its env secrets redacted."""
    return type(model).model_validate(redact_json(model.model_dump(mode="json")))


_ENV_LEAF = re.compile(r"\.env\.(?P<name>[^.\[\]]+)$")
_ENV_ITEM = re.compile(r"\.env\[\d+\]$")
"""One item of Kubernetes' env list (a manifest's copy in ``origin``): ``{name, value}``."""


def _change_secrets(change: FieldChange) -> set[str]:
    """Return the secret values one field change shows (its path may name the variable)."""
    both = [change.old, change.new]
    leaf = _ENV_LEAF.search(change.path)
    if leaf is not None and is_secret_name(leaf.group("name")):
        return {str(v) for v in both if v is not None and len(str(v)) >= _MIN_SCRUB_LENGTH}
    if change.path.endswith(".env"):
        return json_secret_values({"env": change.old}) | json_secret_values({"env": change.new})
    if _ENV_ITEM.search(change.path):
        return json_secret_values({"env": both})
    return json_secret_values(both)  # a document's, and any URL's password


def _redact_change(change: FieldChange, known: set[str]) -> FieldChange:
    """Redact one field change; ``known`` are the plan's secret values, wherever they show.

    A manifest's copy (``origin.manifest``) changes as the workload does, by
    paths that may not name the variable (``...env[0].value``): the same
    value shows in the workload's own env too, under its name, so it is
    known, and scrubbed here.
    """
    leaf = _ENV_LEAF.search(change.path)
    if leaf is not None:
        name = leaf.group("name")
        old, new = _redact_value(name, change.old), _redact_value(name, change.new)
    elif change.path.endswith(".env"):
        old, new = _redact_item("env", change.old), _redact_item("env", change.new)
    elif _ENV_ITEM.search(change.path):
        old, new = _redact_item("env", [change.old])[0], _redact_item("env", [change.new])[0]
    elif change.path.endswith(_LAST_APPLIED):
        old = None if change.old is None else REDACTED
        new = None if change.new is None else REDACTED
    else:
        old, new = redact_json(change.old), redact_json(change.new)
    old, new = _scrubbed(old, known), _scrubbed(new, known)
    return change.model_copy(update={"old": old, "new": new})


def _scrubbed(value: Any, known: set[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, known)
    if isinstance(value, dict):
        return {key: _scrubbed(item, known) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, known) for item in value]
    return value


def _redact_secret_change(change: FieldChange) -> FieldChange:
    old = None if change.old is None else REDACTED
    new = None if change.new is None else REDACTED
    return change.model_copy(update={"old": old, "new": new})


def redact_plan(plan: Plan) -> Plan:
    """Return ``plan`` with secret values in its field changes redacted (a Secret's: all)."""
    known: set[str] = set()
    for planned in plan.changes:
        for change in planned.changes:
            known |= _change_secrets(change)
    changes = [
        planned.model_copy(
            update={
                "changes": [
                    _redact_secret_change(c)
                    if planned.kind == "Secret"
                    else _redact_change(c, known)
                    for c in planned.changes
                ]
            }
        )
        for planned in plan.changes
    ]
    return plan.model_copy(update={"changes": changes})


def secret_values(sources: Iterable[Workload | Instance | Explanation]) -> set[str]:
    """Return the secret values the env maps of ``sources`` hold (to scrub from text).

    Init containers' too: their logs are read as the others' are.
    """
    found: set[str] = set()
    for source in sources:
        if isinstance(source, Explanation):
            source = source.instance
        template = source.spec.template if isinstance(source, Workload) else source.template
        for container in [*template.init_containers, *template.containers]:
            for name, value in container.env.items():
                if is_secret_name(name):
                    found.add(value)
                found.update(m.group("password") for m in _URL_PASSWORD.finditer(value))
    return {value for value in found if len(value) >= _MIN_SCRUB_LENGTH}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret value in ``text`` with :data:`REDACTED`."""
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)


def restore_secrets(spec: WorkloadSpec, stored: Workload | None) -> WorkloadSpec:
    """Put stored secret values back where ``spec`` carries :data:`REDACTED`.

    Raises:
        InvalidInput: a value is :data:`REDACTED` but no stored value exists to
            restore (a new workload, container or variable).
    """
    template = spec.template
    every = [*template.init_containers, *template.containers]
    if not any(REDACTED in value for c in every for value in c.env.values()):
        return spec
    previous: dict[str, Container] = {}
    if stored is not None:
        before = stored.spec.template
        previous = {c.name: c for c in [*before.init_containers, *before.containers]}

    def restored(container: Container) -> Container:
        env = dict(container.env)
        for name, value in container.env.items():
            if REDACTED not in value:
                continue
            old = previous.get(container.name)
            original = None if old is None else old.env.get(name)
            if original is None or _redact_value(name, original) != value:
                raise InvalidInput(
                    f"env {name} of container {container.name!r} in workload {spec.key} is "
                    f"{value!r}, a value Shoal hid from you, and there is no stored value to keep: "
                    "pass the real value, or leave the variable out",
                    field=f"template.containers[{container.name}].env.{name}",
                )
            env[name] = original
        return container.model_copy(update={"env": env})

    template = template.model_copy(
        update={
            "init_containers": [restored(c) for c in template.init_containers],
            "containers": [restored(c) for c in template.containers],
        }
    )
    return spec.model_copy(update={"template": template})
