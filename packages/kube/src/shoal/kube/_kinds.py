"""Each supported Kubernetes kind to the Shoal document of its object.

A translator takes the document (as :class:`Fields`) and returns a plain
mapping in Shoal's vocabulary; validating it is the caller's job
(:mod:`._kubernetes`). ``KINDS`` maps each kind to its apiVersion, its Shoal
model and its translator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.interfaces import ConfigMapSpec, NamespaceSpec, SecretSpec, WorkloadSpec

from ._fields import Fields, TranslationError
from ._pod import TEMPLATE, check_restart_policy, pod_spec, template_metadata
from ._selectors import check_selector

__all__ = ["KINDS", "LAST_APPLIED", "MAX_NAME", "Kind"]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""The annotation ``kubectl apply`` writes: for a Secret it holds the values in clear."""

MAX_NAME = 50
"""Shoal's names are DNS labels of at most this many characters (Kubernetes allows 253)."""


@dataclass(frozen=True)
class Kind:
    """A Kubernetes kind Shoal runs."""

    api_version: str
    """The apiVersion it must be written with."""
    model: type[WorkloadSpec | ConfigMapSpec | SecretSpec | NamespaceSpec]
    """The Shoal model its translation is validated as."""
    translate: Callable[[Fields], dict[str, Any]]
    """Document -> Shoal document."""


def metadata(doc: Fields, *, namespaced: bool = True) -> dict[str, Any]:
    """Return name, namespace, labels and annotations from ``metadata``; report the rest."""
    meta = doc.required_child("metadata")
    out: dict[str, Any] = {}
    if meta.has("generateName") and not meta.has("name"):
        raise TranslationError(
            meta.at("name"), "generateName is not supported", "give the object a metadata.name"
        )
    name = meta.required_text("name")
    meta.record("name", ("name",))
    if len(name) > MAX_NAME:
        raise TranslationError(
            meta.at("name"),
            f"name {name!r} has {len(name)} characters, more than Shoal's limit of {MAX_NAME}",
            f"shorten it to at most {MAX_NAME} lowercase letters, digits and '-'",
        )
    out["name"] = name
    if namespaced:
        out["namespace"] = meta.text("namespace", "default")
        meta.record("namespace", ("namespace",))
    else:
        meta.ignore("namespace", "a cluster-scoped object has no namespace")
    meta.put(out, "labels", "labels")
    meta.put(out, "annotations", "annotations")
    meta.done()
    return out


def _template(spec: Fields, out: dict[str, Any]) -> tuple[Fields, str | None]:
    """Translate ``spec.template`` into ``out``; return the pod spec and its restartPolicy."""
    template = spec.required_child("template")  # its spec is the template (as a Pod's is)
    pod = template.required_child("spec", *TEMPLATE)
    parts = pod_spec(pod)
    template_metadata(template.child("metadata", *TEMPLATE), parts.template)
    template.done()
    out["template"] = parts.template
    if parts.node_selector is not None:
        out["placement"] = {"constraints": parts.node_selector}
    return pod, parts.restart_policy


def _controller(
    doc: Fields, allowed_policies: tuple[str, ...], *, selector_required: bool = True
) -> tuple[dict[str, Any], Fields, str | None]:
    """Return the common part of a Deployment, DaemonSet and Job, their spec and restartPolicy.

    The template's restartPolicy must be one of ``allowed_policies``.
    """
    out = metadata(doc)
    spec = doc.required_child("spec")
    pod, policy = _template(spec, out)
    check_restart_policy(pod, policy, allowed_policies)
    labels = out["template"].get("labels") or {}
    selector = spec.child("selector")
    if selector is None and selector_required:
        raise TranslationError(
            spec.at("selector"),
            "required value is missing",
            "set selector.matchLabels to the template's labels",
        )
    if selector is not None:
        check_selector(selector, labels if isinstance(labels, dict) else {})
    return out, spec, policy


def pod(doc: Fields) -> dict[str, Any]:
    """Translate a v1 Pod: one instance, replaced as a whole when it changes."""
    out = metadata(doc)
    spec = doc.required_child("spec", *TEMPLATE)
    parts = pod_spec(spec)
    for key in ("labels", "annotations"):
        if key in out:
            parts.template[key] = out[key]
            doc.report.paths[(*TEMPLATE, key)] = f"metadata.{key}"
    out["template"] = parts.template
    if parts.restart_policy is not None:
        out["restart_policy"] = parts.restart_policy
    if parts.node_selector is not None:
        out["placement"] = {"constraints": parts.node_selector}
    out["replicas"] = 1
    out["update"] = {"type": "recreate"}
    return out


def deployment(doc: Fields) -> dict[str, Any]:
    """Translate an apps/v1 Deployment."""
    out, spec, _ = _controller(doc, ("Always",))
    spec.put(out, "replicas", "replicas")
    update = _strategy(spec)
    spec.put(update, "minReadySeconds", "min_ready_seconds", at=("update", "min_ready_seconds"))
    spec.put(
        update,
        "progressDeadlineSeconds",
        "progress_deadline_seconds",
        at=("update", "progress_deadline_seconds"),
    )
    out["update"] = update
    _history(spec, out)
    spec.put(out, "paused", "paused")
    spec.done()
    return out


def _strategy(spec: Fields) -> dict[str, Any]:
    update: dict[str, Any] = {"type": "rolling"}
    strategy = spec.child("strategy", "update")
    if strategy is None:
        return update
    kind = strategy.text("type", "RollingUpdate")
    strategy.record("type", ("update", "type"))
    rolling = strategy.child("rollingUpdate")
    if kind == "Recreate":
        update["type"] = "recreate"
        if rolling is not None:
            raise TranslationError(
                strategy.at("rollingUpdate"),
                "rollingUpdate may not be set when the strategy type is Recreate",
                "remove rollingUpdate, or use type RollingUpdate",
            )
    elif kind != "RollingUpdate":
        raise TranslationError(
            strategy.at("type"), f"unknown strategy type {kind!r}", "use RollingUpdate or Recreate"
        )
    if rolling is not None:
        rolling.put(update, "maxSurge", "max_surge")
        rolling.put(update, "maxUnavailable", "max_unavailable")
        rolling.done()
    strategy.done()
    return update


def _history(spec: Fields, out: dict[str, Any]) -> None:
    limit = spec.take("revisionHistoryLimit")
    spec.record("revisionHistoryLimit", ("revision_history_limit",))
    if limit == 0:
        spec.report.ignore(
            spec.at("revisionHistoryLimit"),
            "Shoal keeps at least the current revision: 1 is used instead of 0",
        )
        limit = 1
    if limit is not None:
        out["revision_history_limit"] = limit


def daemon_set(doc: Fields) -> dict[str, Any]:
    """Translate an apps/v1 DaemonSet: one instance on every node its nodeSelector admits."""
    out, spec, _ = _controller(doc, ("Always",))
    out["mode"] = "daemon"
    # Kubernetes' defaults for a DaemonSet, not a Deployment's 25%.
    update: dict[str, Any] = {"type": "rolling", "max_unavailable": 1, "max_surge": 0}
    strategy = spec.child("updateStrategy", "update")
    if strategy is not None:
        kind = strategy.text("type", "RollingUpdate")
        rolling = strategy.child("rollingUpdate")
        if kind == "OnDelete":
            strategy.report.ignore(
                strategy.at("type"),
                "Shoal has no OnDelete updates: a template change rolls out as a RollingUpdate "
                "with maxUnavailable 1",
            )
        elif kind != "RollingUpdate":
            raise TranslationError(
                strategy.at("type"), f"unknown update type {kind!r}", "use RollingUpdate"
            )
        if rolling is not None:
            rolling.put(update, "maxUnavailable", "max_unavailable")
            rolling.put(update, "maxSurge", "max_surge")
            rolling.done()
        strategy.done()
    spec.put(update, "minReadySeconds", "min_ready_seconds", at=("update", "min_ready_seconds"))
    out["update"] = update
    _history(spec, out)
    spec.done()
    return out


_JOB_FIELDS = {
    "completions": "completions",
    "parallelism": "parallelism",
    "backoffLimit": "backoff_limit",
    "activeDeadlineSeconds": "active_deadline_seconds",
    "ttlSecondsAfterFinished": "ttl_seconds_after_finished",
}


def job(doc: Fields) -> dict[str, Any]:
    """Translate a batch/v1 Job: instances that run to completion."""
    out, spec, policy = _controller(doc, ("OnFailure", "Never"), selector_required=False)
    out["restart_policy"] = policy
    out["mode"] = "job"
    settings: dict[str, Any] = {}
    for key, shoal_key in _JOB_FIELDS.items():
        spec.put(settings, key, shoal_key, at=("job", shoal_key))
    if spec.take("suspend") is True:
        settings["parallelism"] = 0  # Shoal's way to suspend a job
        spec.record("suspend", ("job", "parallelism"))
    spec.ignore("manualSelector", "Shoal tracks a job's instances itself")
    out["job"] = settings
    spec.done()
    return out


def config_map(doc: Fields) -> dict[str, Any]:
    """Translate a v1 ConfigMap."""
    out = metadata(doc)
    doc.put(out, "data", "data")
    doc.put(out, "binaryData", "binary_data")
    doc.put(out, "immutable", "immutable")
    _record_keys(doc, "data", "data")
    _record_keys(doc, "binaryData", "binary_data")
    return out


def secret(doc: Fields) -> dict[str, Any]:
    """Translate a v1 Secret (its type's rules are checked when it is validated)."""
    out = metadata(doc)
    annotations = out.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        out["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        doc.report.ignore(
            f"metadata.annotations[{LAST_APPLIED}]",
            "it holds the Secret's values in clear text; Shoal keeps them only sealed",
        )
    doc.put(out, "type", "type")
    doc.put(out, "data", "data")
    doc.put(out, "stringData", "string_data")
    doc.put(out, "immutable", "immutable")
    _record_keys(doc, "data", "data")
    _record_keys(doc, "stringData", "data")  # folded into data, where errors point
    _record_keys(doc, "stringData", "string_data")
    return out


def _record_keys(doc: Fields, key: str, shoal_key: str) -> None:
    values = doc.value.get(key)
    if isinstance(values, dict):
        for name in values:
            doc.report.paths[(shoal_key, name)] = f"{key}[{name}]"


def namespace(doc: Fields) -> dict[str, Any]:
    """Translate a v1 Namespace."""
    out = metadata(doc, namespaced=False)
    spec = doc.child("spec")
    if spec is not None:
        spec.ignore("finalizers", "Shoal runs no finalizers")
        spec.done()
    return out


KINDS: dict[str, Kind] = {
    "Pod": Kind("v1", WorkloadSpec, pod),
    "Deployment": Kind("apps/v1", WorkloadSpec, deployment),
    "DaemonSet": Kind("apps/v1", WorkloadSpec, daemon_set),
    "Job": Kind("batch/v1", WorkloadSpec, job),
    "ConfigMap": Kind("v1", ConfigMapSpec, config_map),
    "Secret": Kind("v1", SecretSpec, secret),
    "Namespace": Kind("v1", NamespaceSpec, namespace),
}
"""The kinds Shoal runs (v1 List is unpacked before these)."""
