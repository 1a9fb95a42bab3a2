"""ConfigMaps, Secrets and Namespaces in an apply.

Plans that never show a Secret's values, the stored objects, and the hash
that rolls a workload when the configuration it uses changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime

from shoal.interfaces import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_MODELS,
    ROLL_ON_CONFIG_ANNOTATION,
    ChangeAction,
    ConfigMap,
    ConfigMapSpec,
    Conflict,
    FieldChange,
    Namespace,
    NamespaceSpec,
    PlannedChange,
    Secret,
    SecretSpec,
    StateStore,
    WorkloadMode,
    WorkloadSpec,
    config_key,
)

from ._plan import diff_fields

__all__ = [
    "ConfigSpec",
    "StoredConfig",
    "check_immutable",
    "config_store_key",
    "label_of",
    "plan_config",
    "read_config",
    "read_used_config",
    "rolls_on_config",
    "stored_config",
    "with_config_hash",
]

ConfigSpec = ConfigMapSpec | SecretSpec | NamespaceSpec
StoredConfig = ConfigMap | Secret | Namespace

HIDDEN = "(hidden)"


def label_of(spec: ConfigSpec | WorkloadSpec) -> str:
    """Return 'Kind namespace/name' ('Kind name' for a Namespace)."""
    if isinstance(spec, NamespaceSpec):
        return f"Namespace {spec.name}"
    return f"{spec.kind} {spec.namespace}/{spec.name}"


def config_store_key(spec: ConfigSpec) -> str:
    """Return the store key of a configuration object."""
    namespace = "" if isinstance(spec, NamespaceSpec) else spec.namespace
    return config_key(spec.kind, namespace, spec.name)


async def read_config(
    store: StateStore, kind: str, namespace: str, name: str
) -> tuple[StoredConfig | None, int]:
    """Return a stored ConfigMap, Secret or Namespace and its revision (None and 0: none)."""
    kv = await store.get(config_key(kind, namespace, name))
    if kv is None:
        return None, 0
    return CONFIG_MODELS[kind].model_validate_json(kv.value), kv.mod_revision


async def read_used_config(
    store: StateStore, kind: str, namespace: str, name: str
) -> ConfigMapSpec | SecretSpec | None:
    """Return the spec of a ConfigMap or Secret a pod uses, or None when it does not exist."""
    stored, _ = await read_config(store, kind, namespace, name)
    if stored is None:
        return None
    assert isinstance(stored.spec, ConfigMapSpec | SecretSpec), kind
    return stored.spec


def _shown(spec: ConfigSpec, other: ConfigSpec | None) -> dict[str, object]:
    """Return the spec as a plan shows it: a Secret's values replaced by markers."""
    dumped = spec.model_dump(mode="json")
    if isinstance(spec, SecretSpec):
        before = other.data if isinstance(other, SecretSpec) else {}
        dumped["data"] = {
            key: HIDDEN if before.get(key) == value else f"{HIDDEN}, {len(value)} base64 chars"
            for key, value in spec.data.items()
        }
    return dumped


def plan_config(spec: ConfigSpec, current: StoredConfig | None) -> PlannedChange:
    """Return what applying ``spec`` over ``current`` does; a Secret's values never appear."""
    namespace = "" if isinstance(spec, NamespaceSpec) else spec.namespace
    if current is None:
        return PlannedChange(
            action=ChangeAction.CREATE,
            kind=spec.kind,
            namespace=namespace,
            name=spec.name,
            changes=diff_fields({}, _shown(spec, None)),
        )
    changes: list[FieldChange] = diff_fields(_shown(current.spec, spec), _shown(spec, current.spec))
    old = current.spec
    if isinstance(spec, SecretSpec) and isinstance(old, SecretSpec) and spec.data != old.data:
        changes = changes or [FieldChange(path="data", old=HIDDEN, new=f"{HIDDEN}, changed")]
    return PlannedChange(
        action=ChangeAction.UPDATE if changes else ChangeAction.UNCHANGED,
        kind=spec.kind,
        namespace=namespace,
        name=spec.name,
        changes=changes,
    )


def check_immutable(spec: ConfigSpec, current: StoredConfig | None) -> None:
    """Refuse a change of an immutable ConfigMap's or Secret's data.

    Raises:
        Conflict: naming the object and the fix (delete it, then apply).

    """
    if current is None or isinstance(spec, NamespaceSpec):
        return
    old = current.spec
    assert isinstance(old, ConfigMapSpec | SecretSpec)
    if not old.immutable:
        return
    if isinstance(spec, ConfigMapSpec) and isinstance(old, ConfigMapSpec):
        same = (spec.data, spec.binary_data) == (old.data, old.binary_data)
    else:
        assert isinstance(spec, SecretSpec) and isinstance(old, SecretSpec)
        same = (spec.data, spec.type) == (old.data, old.type)
    if not same or not spec.immutable:
        raise Conflict(
            f"{label_of(spec)} is immutable: its data cannot change and it cannot become "
            f"mutable again; delete it (`shoal delete {spec.kind.lower()} {spec.name}"
            f"{'' if spec.namespace == 'default' else ' -n ' + spec.namespace}`) and apply again",
            object=label_of(spec),
        )


def stored_config(spec: ConfigSpec, current: StoredConfig | None, now: datetime) -> StoredConfig:
    """Return the object to store for ``spec``: new, or ``current`` with the spec replaced."""
    if current is not None:
        update = {"spec": spec, "generation": current.generation + 1, "updated_at": now}
        return current.model_copy(update=update)
    uid = secrets.token_hex(8)
    if isinstance(spec, ConfigMapSpec):
        return ConfigMap(spec=spec, uid=uid, created_at=now, updated_at=now)
    if isinstance(spec, SecretSpec):
        return Secret(spec=spec, uid=uid, created_at=now, updated_at=now)
    return Namespace(spec=spec, uid=uid, created_at=now, updated_at=now)


def rolls_on_config(spec: WorkloadSpec) -> bool:
    """Whether the workload asked to roll out when its ConfigMaps or Secrets change.

    A job never does: its template cannot change (the annotation is ignored on it).
    """
    if spec.mode == WorkloadMode.JOB:
        return False
    return spec.annotations.get(ROLL_ON_CONFIG_ANNOTATION, "").lower() == "true"


def with_config_hash(
    spec: WorkloadSpec,
    configs: Mapping[tuple[str, str], ConfigMapSpec | SecretSpec | None],
    key: bytes,
) -> WorkloadSpec:
    """Return ``spec`` with its template annotated by a hash of the configuration it uses.

    ``configs`` maps each ``(kind, name)`` of ``spec.template.config_refs()`` to
    its current spec (None when missing). A change of any of them changes the
    hash, so the template changes, so the workload rolls out. The hash is an
    HMAC under ``key`` (a server secret, see ``ShoalService.config_hash_key``):
    the template is readable by viewers and workers, and a plain hash of a short
    Secret could be guessed offline.
    """
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for kind, name in sorted(spec.template.config_refs()):
        config = configs.get((kind, name))
        digest.update(f"{kind}/{name}=".encode())
        if config is None:
            digest.update(b"-")
        elif isinstance(config, ConfigMapSpec):
            digest.update(repr(sorted(config.files().items())).encode())
        else:
            digest.update(repr(sorted(config.data.items())).encode())
    annotations = {**spec.template.annotations, CONFIG_HASH_ANNOTATION: digest.hexdigest()[:16]}
    template = spec.template.model_copy(update={"annotations": annotations})
    return spec.model_copy(update={"template": template})
