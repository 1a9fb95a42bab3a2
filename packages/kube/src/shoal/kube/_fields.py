"""Reading a Kubernetes mapping field by field, so that nothing is dropped unreported.

A :class:`Fields` wraps one mapping of a manifest together with its Kubernetes
path (``spec.template.spec.containers[0]``) and the location its translation
takes in the Shoal document (``("template", "containers", 0)``). Every key the
translator reads is *taken*; :meth:`Fields.done` reports the rest as ignored
with a reason. :class:`ObjectReport` collects, per object, the ignored fields
and the map from Shoal locations back to Kubernetes paths, which turns a
pydantic error into one that names the field the user wrote.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fields", "Loc", "ObjectReport", "TranslationError", "join"]

Loc = tuple[str | int, ...]
"""A location in the Shoal document, as pydantic reports it."""

_API_SERVER = "set by the Kubernetes API server; meaningless without one"
_REASONS: dict[str, str] = {
    "status": "written by the cluster, never applied",
    "managedFields": _API_SERVER,
    "resourceVersion": _API_SERVER,
    "uid": _API_SERVER,
    "creationTimestamp": _API_SERVER,
    "deletionTimestamp": _API_SERVER,
    "deletionGracePeriodSeconds": _API_SERVER,
    "generation": _API_SERVER,
    "selfLink": _API_SERVER,
    "ownerReferences": "Shoal has no garbage collector of owned objects",
    "finalizers": "Shoal runs no finalizers",
    "securityContext": "Shoal runs containers with its own default security settings",
    "affinity": "Shoal places by nodeSelector only",
    "tolerations": "Shoal's nodes have no taints",
    "topologySpreadConstraints": "Shoal places by nodeSelector only",
    "imagePullPolicy": "the node pulls an image it does not have, and keeps it",
    "lifecycle": "Shoal runs no postStart or preStop hooks",
    "automountServiceAccountToken": "Shoal has no API server, so no service account tokens",
    "serviceAccountToken": "Shoal has no API server, so no service account tokens",
    "terminationMessagePath": "Shoal keeps no termination messages",
    "terminationMessagePolicy": "Shoal keeps no termination messages",
    "hostNetwork": "every Shoal pod has its own network namespace",
    "dnsPolicy": "Shoal configures DNS itself",
    "dnsConfig": "Shoal configures DNS itself",
    "priorityClassName": "Shoal has no pod priorities",
    "schedulerName": "Shoal has one scheduler",
    "nodeName": "Shoal's scheduler places every instance: use nodeSelector",
}
_DEFAULT_REASON = "Shoal does not support this field"


class TranslationError(Exception):
    """A value Shoal cannot translate: its Kubernetes path, what is wrong and the fix."""

    def __init__(self, path: str, problem: str, fix: str = "") -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.fix = fix


def join(path: str, key: str | int) -> str:
    """Return the Kubernetes path of ``key`` (a field or an index) under ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass
class ObjectReport:
    """What translating one object noticed, beside the Shoal document itself."""

    ignored: list[tuple[str, str]] = field(default_factory=list)
    """(Kubernetes path, why) for every field Shoal does not honour."""
    paths: dict[Loc, str] = field(default_factory=dict)
    """Shoal location -> the Kubernetes path it came from."""

    def ignore(self, path: str, why: str) -> None:
        """Record that the field at ``path`` is not honoured, and why."""
        self.ignored.append((path, why))

    def kubernetes_path(self, loc: Loc) -> str | None:
        """Return the Kubernetes path of the longest recorded prefix of ``loc``."""
        for end in range(len(loc), -1, -1):
            path = self.paths.get(loc[:end])
            if path is not None:
                return path
        return None


class Fields:
    """One mapping of a manifest, read key by key; the keys left over are reported."""

    def __init__(self, report: ObjectReport, value: Any, path: str, loc: Loc = ()) -> None:
        if not isinstance(value, dict):
            raise TranslationError(
                path or "(document)",
                f"expected a mapping, got {_type_name(value)}",
                "write it as 'key: value' lines or a {...} mapping",
            )
        self.report = report
        self.value: dict[str, Any] = value
        self.path = path
        self.loc = loc
        self._taken: set[str] = set()
        report.paths.setdefault(loc, path)

    def at(self, key: str) -> str:
        """Return the Kubernetes path of ``key`` in this mapping."""
        return join(self.path, key)

    def has(self, key: str) -> bool:
        """Return whether ``key`` is present (and not null)."""
        return self.value.get(key) is not None

    def take(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key`` (``default`` when absent or null), marking it read."""
        self._taken.add(key)
        value = self.value.get(key)
        return default if value is None else value

    def put(self, out: dict[str, Any], key: str, shoal_key: str, *, at: Loc | None = None) -> None:
        """Copy ``key``'s value, when present, into ``out`` as ``shoal_key``.

        The Shoal location is this mapping's plus ``shoal_key``, or ``at`` when
        the value lands elsewhere in the Shoal document.
        """
        value = self.take(key)
        if value is not None:
            out[shoal_key] = value
        self.record(key, (*self.loc, shoal_key) if at is None else at)

    def record(self, key: str, loc: Loc) -> None:
        """Remember that the Shoal location ``loc`` was written from ``key``."""
        self.report.paths[loc] = self.at(key)

    def text(self, key: str, default: str | None = None) -> str | None:
        """Return a string field, or ``default``; anything but a string is an error."""
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise TranslationError(
                self.at(key), f"expected a string, got {_type_name(value)}", "quote the value"
            )
        return value

    def required_text(self, key: str) -> str:
        """Return a string field that must be present."""
        value = self.text(key)
        if value is None:
            raise TranslationError(self.at(key), "required value is missing", f"set {key}")
        return value

    def child(self, key: str, *shoal_keys: str | int) -> Fields | None:
        """Return the mapping under ``key`` (None if absent), at this location + ``shoal_keys``."""
        value = self.take(key)
        if value is None:
            return None
        return Fields(self.report, value, self.at(key), (*self.loc, *shoal_keys))

    def required_child(self, key: str, *shoal_keys: str | int) -> Fields:
        """Return the mapping under ``key``, which must be present."""
        child = self.child(key, *shoal_keys)
        if child is None:
            raise TranslationError(self.at(key), "required value is missing", f"add {key}")
        return child

    def children(self, key: str, *shoal_keys: str | int) -> Iterator[Fields]:
        """Yield each mapping of the list under ``key``.

        With ``shoal_keys``, the n-th lands at this location + ``shoal_keys`` + ``(n,)``;
        without, at this location (the caller places it).
        """
        items = self.take(key)
        if items is None:
            return
        if not isinstance(items, list):
            raise TranslationError(
                self.at(key), f"expected a list, got {_type_name(items)}", "write a list (- item)"
            )
        for index, item in enumerate(items):
            loc = (*self.loc, *shoal_keys, index) if shoal_keys else self.loc
            yield Fields(self.report, item, join(self.at(key), index), loc)

    def ignore(self, key: str, why: str | None = None) -> None:
        """Report ``key`` as ignored, with ``why`` or the usual reason.

        A null or empty value (``creationTimestamp: null``, ``status: {}``, as
        ``kubectl create --dry-run -o yaml`` writes them) means unset, as in
        Kubernetes, and is not reported.
        """
        self._taken.add(key)
        if self.value.get(key) not in (None, {}, [], ""):
            self.report.ignore(self.at(key), why or _REASONS.get(key, _DEFAULT_REASON))

    def ignore_entry(self, key: str, why: str) -> None:
        """Report the map entry ``key`` (a resource name, a label) as ignored: ``path[key]``."""
        self._taken.add(key)
        self.report.ignore(f"{self.path}[{key}]", why)

    def done(self) -> None:
        """Report every key not taken as ignored: one close to a field's name, as a typo."""
        known = [*self._taken, *_REASONS]
        for key in self.value:
            if key in self._taken:
                continue
            close = [] if key in _REASONS else difflib.get_close_matches(key, known, 1, 0.8)
            self.ignore(key, f"no such field here: did you mean {close[0]}?" if close else None)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")
