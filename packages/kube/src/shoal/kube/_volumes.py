"""Kubernetes pod volumes to Shoal :class:`~shoal.interfaces.Volume` documents.

emptyDir, hostPath, configMap, secret, downwardAPI and projected translate;
any other volume type (persistentVolumeClaim, nfs, csi, ...) is an error, not a
warning: its mounts would silently land on scratch space.
"""

from __future__ import annotations

from typing import Any

from ._containers import resource_field_ref
from ._fields import Fields, TranslationError

__all__ = ["volume"]

_SUPPORTED = "emptyDir, hostPath, configMap, secret, downwardAPI or projected"


def volume(fields: Fields) -> dict[str, Any]:
    """Return the Shoal document of one pod volume."""
    out: dict[str, Any] = {}
    fields.put(out, "name", "name")
    sources = {
        "emptyDir": ("empty_dir", _empty_dir),
        "hostPath": ("host_path", _host_path),
        "configMap": ("config_map", _config_map),
        "secret": ("secret", _secret),
        "downwardAPI": ("downward_api", _downward_api),
        "projected": ("projected", _projected),
    }
    for key in fields.value:
        if key != "name" and key not in sources:
            raise TranslationError(
                fields.at(key),
                f"volume type {key!r} is not supported by Shoal",
                f"use {_SUPPORTED} (hostPath for data that must outlive the pod)",
            )
    if not any(fields.has(key) for key in sources):
        raise TranslationError(
            fields.path,
            "the volume has no source",
            f"give one of {_SUPPORTED} (emptyDir: {{}} for scratch space)",
        )
    for key, (shoal_key, translate) in sources.items():
        source = fields.child(key, shoal_key)
        if source is not None:
            out.update(translate(source, shoal_key))
    fields.done()
    return out


def _empty_dir(fields: Fields, shoal_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    medium = fields.text("medium", "")
    fields.put(out, "sizeLimit", "size_limit")
    if medium not in ("", "Memory"):
        raise TranslationError(
            fields.at("medium"),
            f"medium {medium!r} is not supported by Shoal",
            "use Memory (with a sizeLimit) or leave medium unset",
        )
    if medium == "Memory" and "size_limit" not in out:
        fields.report.ignore(
            fields.at("medium"),
            "Shoal makes an emptyDir a tmpfs only when it has a sizeLimit; without one it is "
            "a directory on the node's disk (add sizeLimit for a tmpfs)",
        )
    fields.done()
    return {shoal_key: out}


def _host_path(fields: Fields, shoal_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields.put(out, "path", "path")
    if fields.take("type"):
        fields.ignore("type", "Shoal mounts the path as it is, without checking or creating it")
    fields.done()
    return {shoal_key: out}


def _items(fields: Fields) -> list[dict[str, Any]] | None:
    if not fields.has("items"):
        fields.take("items")
        return None
    out: list[dict[str, Any]] = []
    for item in fields.children("items", "items"):
        entry: dict[str, Any] = {}
        for key in ("key", "path", "mode"):
            item.put(entry, key, key)
        item.done()
        out.append(entry)
    return out


def _keys_volume(fields: Fields, name_key: str, *, modes: bool = True) -> dict[str, Any]:
    """Return a ConfigMapVolume or SecretVolume document (``name_key`` names the object)."""
    out: dict[str, Any] = {}
    fields.put(out, name_key, "name")
    items = _items(fields)
    if items is not None:
        out["items"] = items
    if modes:
        fields.put(out, "defaultMode", "default_mode")
    fields.put(out, "optional", "optional")
    fields.done()
    return out


def _config_map(fields: Fields, shoal_key: str) -> dict[str, Any]:
    return {shoal_key: _keys_volume(fields, "name")}


def _secret(fields: Fields, shoal_key: str) -> dict[str, Any]:
    return {shoal_key: _keys_volume(fields, "secretName")}


def _downward_files(fields: Fields) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    for item in fields.children("items", "items"):
        entry: dict[str, Any] = {}
        item.put(entry, "path", "path")
        item.put(entry, "mode", "mode")
        field_ref = item.child("fieldRef", "field_path")
        if field_ref is not None:
            entry["field_path"] = field_ref.take("fieldPath")
            field_ref.record("fieldPath", field_ref.loc)
            field_ref.take("apiVersion")  # always v1
            field_ref.done()
        resource = item.child("resourceFieldRef", "resource_field_ref")
        if resource is not None:
            entry["resource_field_ref"] = resource_field_ref(resource)
        item.done()
        files.append(entry)
    return files


def _downward_api(fields: Fields, shoal_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"items": _downward_files(fields)}
    fields.put(out, "defaultMode", "default_mode")
    fields.done()
    return {shoal_key: out}


def _projected(fields: Fields, shoal_key: str) -> dict[str, Any]:
    sources: list[dict[str, Any]] = []
    for source in fields.children("sources"):
        source.loc = (*fields.loc, "sources", len(sources))
        source.report.paths[source.loc] = source.path
        entry = _projected_source(source)
        if entry:
            sources.append(entry)
    if not sources:
        # Only ignored sources (a service account token): keep the mount point, empty.
        fields.take("defaultMode")
        fields.done()
        return {"empty_dir": {}}
    out: dict[str, Any] = {"sources": sources}
    fields.put(out, "defaultMode", "default_mode")
    fields.done()
    return {shoal_key: out}


def _projected_source(fields: Fields) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for key, shoal_key in (("configMap", "config_map"), ("secret", "secret")):
        keys = fields.child(key, shoal_key)
        if keys is not None:
            entry[shoal_key] = _keys_volume(keys, "name", modes=False)
    downward = fields.child("downwardAPI", "downward_api")
    if downward is not None:
        entry["downward_api"] = {"items": _downward_files(downward)}
        downward.done()
    fields.ignore("clusterTrustBundle", "Shoal has no cluster trust bundles")
    fields.done()
    return entry
