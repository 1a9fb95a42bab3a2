"""A Kubernetes pod spec (a Pod's, or a controller's template) to Shoal's template.

The pod spec spreads over three places of a :class:`~shoal.interfaces.WorkloadSpec`:
the :class:`~shoal.interfaces.PodTemplate` (containers, volumes, grace period,
image pull secrets), ``restart_policy`` and ``placement.constraints``
(``nodeSelector``). The template lands at the Shoal location ``("template",)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._containers import container
from ._fields import Fields, TranslationError
from ._volumes import volume

__all__ = ["PodParts", "pod_spec", "template_metadata"]

TEMPLATE: tuple[str] = ("template",)


@dataclass
class PodParts:
    """What one pod spec becomes."""

    template: dict[str, Any] = field(default_factory=dict)
    """The PodTemplate document."""
    restart_policy: str | None = None
    """restartPolicy as written, if set."""
    node_selector: dict[str, Any] | None = None
    """nodeSelector as written, if set."""


def pod_spec(spec: Fields) -> PodParts:
    """Translate the pod spec ``spec`` (whose location is the template's)."""
    parts = PodParts()
    template = parts.template
    template["containers"] = [container(c) for c in spec.children("containers", "containers")]
    spec.record("containers", (*TEMPLATE, "containers"))
    inits = [container(c, init=True) for c in spec.children("initContainers", "init_containers")]
    if inits:
        template["init_containers"] = inits
    volumes = [volume(v) for v in spec.children("volumes", "volumes")]
    if volumes:
        template["volumes"] = volumes
    spec.put(template, "terminationGracePeriodSeconds", "termination_grace_period_seconds")
    _service_account(spec, template)
    secrets = [_pull_secret(ref) for ref in spec.children("imagePullSecrets")]
    if secrets:
        template["image_pull_secrets"] = secrets
    parts.restart_policy = spec.text("restartPolicy")
    spec.record("restartPolicy", ("restart_policy",))
    parts.node_selector = spec.take("nodeSelector")
    spec.record("nodeSelector", ("placement", "constraints"))
    spec.done()
    return parts


def _service_account(spec: Fields, template: dict[str, Any]) -> None:
    name = spec.text("serviceAccountName")
    legacy = spec.text("serviceAccount")  # the deprecated alias of serviceAccountName
    spec.record("serviceAccountName", (*TEMPLATE, "service_account_name"))
    if name or legacy:
        template["service_account_name"] = name or legacy


def _pull_secret(ref: Fields) -> str:
    name = ref.required_text("name")
    ref.done()
    return name


def template_metadata(metadata: Fields | None, template: dict[str, Any]) -> None:
    """Copy a pod template's labels and annotations into ``template``; report the rest."""
    if metadata is None:
        return
    metadata.put(template, "labels", "labels", at=(*TEMPLATE, "labels"))
    metadata.put(template, "annotations", "annotations", at=(*TEMPLATE, "annotations"))
    for key in metadata.value:
        if key not in ("labels", "annotations"):
            metadata.ignore(key, "a pod template's metadata keeps only labels and annotations")


def check_restart_policy(spec: Fields, policy: str | None, allowed: tuple[str, ...]) -> None:
    """Raise unless ``policy`` is one of ``allowed`` (unset counts as Always)."""
    if (policy or "Always") not in allowed:
        raise TranslationError(
            spec.at("restartPolicy"),
            f"restartPolicy {policy or 'unset (Always)'!r} is not allowed here",
            f"use {' or '.join(allowed)}",
        )
