"""Helpers for the Kubernetes-dialect tests: documents in, one translated object out."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from shoal.interfaces import (
    ConfigMapSpec,
    Container,
    NamespaceSpec,
    SecretSpec,
    WorkloadSpec,
    load_yaml_documents,
)
from shoal.kube import Translation, parse_documents

DOCS = Path(__file__).parent / "k8s_docs"


def load(name: str) -> Translation:
    """Translate one file of the Kubernetes documentation's examples."""
    path = DOCS / name
    return parse_documents(load_yaml_documents(path.read_text(), str(path)), name)


def translate(document: dict[str, Any], *, strict: bool = False) -> Translation:
    """Translate one document (a copy: the caller's stays as written)."""
    return parse_documents([copy.deepcopy(document)], "test.yaml", strict=strict)


def workload(document: dict[str, Any]) -> WorkloadSpec:
    """Translate one document that must become a workload."""
    [spec] = translate(document).objects
    assert isinstance(spec, WorkloadSpec)
    return spec


def config_map(document: dict[str, Any]) -> ConfigMapSpec:
    """Translate one document that must become a ConfigMap."""
    [spec] = translate(document).objects
    assert isinstance(spec, ConfigMapSpec)
    return spec


def secret(document: dict[str, Any]) -> SecretSpec:
    """Translate one document that must become a Secret."""
    [spec] = translate(document).objects
    assert isinstance(spec, SecretSpec)
    return spec


def namespace(document: dict[str, Any]) -> NamespaceSpec:
    """Translate one document that must become a Namespace."""
    [spec] = translate(document).objects
    assert isinstance(spec, NamespaceSpec)
    return spec


def pod(
    container: dict[str, Any] | None = None, *, name: str = "web", **spec: Any
) -> dict[str, Any]:
    """Return a v1 Pod with one container (``container`` merged into a busybox one)."""
    containers = [{"name": "app", "image": "busybox", **(container or {})}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers, **spec},
    }


def deployment(**spec: Any) -> dict[str, Any]:
    """Return an apps/v1 Deployment of busybox labelled app=web (``spec`` merged in)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "front"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"team": "a"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
            **spec,
        },
    }


def container_of(document: dict[str, Any]) -> Container:
    """Translate a Pod and return its only container."""
    [container] = workload(document).template.containers
    return container
