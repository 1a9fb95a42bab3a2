"""Configuration objects: ConfigMaps, Secrets and Namespaces, as Kubernetes defines them.

A ConfigMap holds text (``data``) and bytes (``binary_data``, base64); a Secret
holds base64 values (``data``) and takes plain text in ``string_data``, which
validation folds into ``data``. Pods use both through environment variables
and files (see :class:`~shoal.interfaces.EnvVarSource` and the configMap and
secret volumes). Keys are file names (letters, digits, ``-``, ``_``, ``.``);
one object holds at most :data:`MAX_CONFIG_BYTES`.

A Secret's values are stored encrypted (the server's store seals them) and are
never shown unless an admin asks: :meth:`Secret.redacted` is what every reader
gets by default.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from ._base import Model
from ._workload import Name, Origin, Spec

__all__ = [
    "CONFIG_MODELS",
    "MAX_CONFIG_BYTES",
    "SECRET_TYPES",
    "ConfigMap",
    "ConfigMapSpec",
    "Namespace",
    "NamespaceSpec",
    "Secret",
    "SecretSpec",
    "SecretView",
    "check_config_key",
    "docker_credentials",
]

MAX_CONFIG_BYTES = 1024 * 1024
"""The most bytes one ConfigMap or Secret may hold, keys and values together (as Kubernetes)."""

_KEY = re.compile(r"[-._a-zA-Z0-9]+")

SECRET_TYPES: dict[str, tuple[str, ...]] = {
    "Opaque": (),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/basic-auth": (),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}
"""The Secret types Shoal validates, and the keys each requires. A type outside
``kubernetes.io/`` is free-form (as Kubernetes allows); another ``kubernetes.io/``
type is refused."""


def check_config_key(key: str, what: str) -> str:
    """Return ``key`` if it can name a file and a variable source; raise ValueError saying why."""
    if not key or len(key) > 253 or not _KEY.fullmatch(key) or key == "." or key.startswith(".."):
        raise ValueError(
            f"{what} key {key!r} is not valid: use 1-253 letters, digits, '-', '_' or '.' "
            "(not '.', and not starting with '..'), since it becomes a file name"
        )
    return key


def _check_keys(*maps: dict[str, Any], what: str) -> None:
    seen: set[str] = set()
    for mapping in maps:
        for key in mapping:
            check_config_key(key, what)
            if key in seen:
                raise ValueError(f"{what} key {key!r} is in both data and binary_data: keep one")
            seen.add(key)


def _decode(value: str, key: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{what} key {key!r}: the value is not valid base64: encode it with "
            "`base64 -w0`, or give it as plain text in string_data"
        ) from None


def _check_size(total: int, what: str) -> None:
    if total > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{what} holds {total} bytes, more than the limit of {MAX_CONFIG_BYTES} (1 MiB): "
            "split it into several objects or mount the data from a volume"
        )


class ConfigMapSpec(Spec):
    """Configuration as text and bytes, for pods to read as variables or files."""

    kind: Literal["ConfigMap"] = "ConfigMap"
    """Document kind."""
    name: Name
    """Unique within the namespace."""
    namespace: Name = "default"
    """Namespace of the ConfigMap; only pods of the same namespace can use it."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Free-form annotations (Shoal's own start with 'shoal.dev/')."""
    data: dict[str, str] = Field(default_factory=dict)
    """Text values by key."""
    binary_data: dict[str, str] = Field(default_factory=dict)
    """Byte values by key, base64-encoded."""
    immutable: bool = False
    """Refuse every later change of data; delete and recreate to change it."""
    origin: Origin | None = None
    """The Kubernetes manifest this came from, if any."""

    @model_validator(mode="after")
    def _valid(self) -> Self:
        _check_keys(self.data, self.binary_data, what=f"ConfigMap {self.name!r}")
        total = sum(len(k) + len(v.encode()) for k, v in self.data.items())
        for key, value in self.binary_data.items():
            total += len(key) + len(_decode(value, key, f"ConfigMap {self.name!r}"))
        _check_size(total, f"ConfigMap {self.name!r}")
        return self

    def files(self) -> dict[str, bytes]:
        """Return every key's value as bytes (text as UTF-8)."""
        values = {k: v.encode() for k, v in self.data.items()}
        values.update({k: base64.b64decode(v) for k, v in self.binary_data.items()})
        return values

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return f"{self.namespace}/{self.name}"


class SecretSpec(Spec):
    """Sensitive configuration: stored encrypted, shown to nobody unasked."""

    kind: Literal["Secret"] = "Secret"
    """Document kind."""
    name: Name
    """Unique within the namespace."""
    namespace: Name = "default"
    """Namespace of the Secret; only pods of the same namespace can use it."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Free-form annotations."""
    type: str = "Opaque"
    """Opaque, kubernetes.io/tls, kubernetes.io/basic-auth, kubernetes.io/dockerconfigjson or
    kubernetes.io/ssh-auth (each checked for its keys), or a type of your own outside
    kubernetes.io/."""
    data: dict[str, str] = Field(default_factory=dict)
    """Values by key, base64-encoded."""
    string_data: dict[str, str] = Field(default_factory=dict)
    """Values by key as plain text; folded into data (overriding it) when validated."""
    immutable: bool = False
    """Refuse every later change of data; delete and recreate to change it."""
    origin: Origin | None = None
    """The Kubernetes manifest this came from, if any (without its data)."""

    @model_validator(mode="before")
    @classmethod
    def _fold_string_data(cls, value: Any) -> Any:
        """Fold string_data into data, when its values are text.

        A number or a list is left for the field's own check to name (kubectl
        refuses them too).
        """
        given = isinstance(value, dict) and isinstance(value.get("string_data"), dict)
        if given and all(isinstance(v, str) for v in value["string_data"].values()):
            value = dict(value)
            data = dict(value.get("data") or {})
            for key, text in value.pop("string_data").items():
                data[key] = base64.b64encode(text.encode()).decode()
            value["data"] = data
        return value

    @model_validator(mode="after")
    def _valid(self) -> Self:
        what = f"Secret {self.name!r}"
        _check_keys(self.data, what=what)
        values = {key: _decode(value, key, what) for key, value in self.data.items()}
        _check_size(sum(len(k) + len(v) for k, v in values.items()), what)
        _check_type(self.type, values, what)
        return self

    def values(self) -> dict[str, bytes]:
        """Return every key's value, decoded."""
        return {k: base64.b64decode(v) for k, v in self.data.items()}

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return f"{self.namespace}/{self.name}"


def _check_type(kind: str, values: dict[str, bytes], what: str) -> None:
    if kind not in SECRET_TYPES:
        if kind.startswith("kubernetes.io/") or not kind:
            known = ", ".join(SECRET_TYPES)
            raise ValueError(
                f"{what} has type {kind!r}, which Shoal does not support: use one of {known}, "
                "or a type of your own outside kubernetes.io/"
            )
        return
    missing = [key for key in SECRET_TYPES[kind] if key not in values]
    if missing:
        raise ValueError(f"{what} of type {kind} needs the key(s) {', '.join(missing)}: add them")
    if kind == "kubernetes.io/basic-auth" and not ({"username", "password"} & set(values)):
        raise ValueError(f"{what} of type {kind} needs a username or a password key: add one")
    if kind == "kubernetes.io/tls":
        for key, marker in (("tls.crt", b"CERTIFICATE-----"), ("tls.key", b"PRIVATE KEY-----")):
            if marker not in values[key]:
                raise ValueError(
                    f"{what} key {key!r} is not a PEM {marker.decode().rstrip('-').lower()}: "
                    "give the PEM text (-----BEGIN ...-----)"
                )
    if kind == "kubernetes.io/dockerconfigjson":
        docker_credentials(values[".dockerconfigjson"], what)


def docker_credentials(config: bytes, what: str) -> dict[str, tuple[str, str]]:
    """Return ``(user, password)`` by registry host from a Docker config (``.dockerconfigjson``).

    A registry written as a URL (``https://registry:5000/v1/``) counts for its
    host; the first entry for a host wins.

    Raises:
        ValueError: it is not a Docker config, or an entry a pull could not use
            (naming ``what`` and the registry, never the value).

    """
    try:
        auths = json.loads(config).get("auths")
    except (ValueError, AttributeError):
        auths = None
    if not isinstance(auths, dict):
        raise ValueError(
            f"{what} key '.dockerconfigjson' is not a Docker config: give JSON with an "
            '"auths" mapping, e.g. {"auths": {"registry:5000": {"auth": "<base64 user:pass>"}}}'
        )
    found: dict[str, tuple[str, str]] = {}
    for registry, entry in auths.items():
        host = str(registry).split("://", 1)[-1].split("/", 1)[0]
        found.setdefault(host, _registry_auth(what, str(registry), entry))
    return found


def _registry_auth(what: str, registry: str, entry: object) -> tuple[str, str]:
    """Return one ``auths`` entry's user and password, or refuse it without showing it."""
    fix = 'give {"auth": "<base64 of user:password>"} or {"username": ..., "password": ...}'
    if not isinstance(entry, dict):
        raise ValueError(f"{what}: the auths entry of {registry!r} is not a mapping: {fix}")
    if "username" in entry or "password" in entry:
        user, password = entry.get("username"), entry.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise ValueError(f"{what}: the auths entry of {registry!r} needs both: {fix}")
        return user, password
    auth = entry.get("auth")
    try:
        user, colon, password = base64.b64decode(str(auth), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        user, colon, password = "", "", ""
    if not isinstance(auth, str) or not colon or not user:
        raise ValueError(
            f"{what}: the auths entry of {registry!r} has no usable 'auth' (base64 of "
            f"user:password): {fix}"
        )
    return user, password


class NamespaceSpec(Spec):
    """A namespace: a name that workloads, ConfigMaps and Secrets are grouped under."""

    kind: Literal["Namespace"] = "Namespace"
    """Document kind."""
    name: Name
    """The namespace's name."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Free-form annotations."""
    origin: Origin | None = None
    """The Kubernetes manifest this came from, if any."""

    @property
    def key(self) -> str:
        """Return the name (a namespace has no namespace)."""
        return self.name


class _Stored(Model):
    uid: str
    """Identity of this incarnation (a deleted and recreated object gets a new one)."""
    generation: int = 1
    """Incremented on every change of the spec."""
    created_at: datetime
    """When it was first stored."""
    updated_at: datetime
    """When it last changed."""


class ConfigMap(_Stored):
    """A stored ConfigMap."""

    spec: ConfigMapSpec
    """The ConfigMap as last applied."""

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return self.spec.key


class Secret(_Stored):
    """A stored Secret; its values are decrypted only in memory."""

    spec: SecretSpec
    """The Secret as last applied (its values in clear, in memory only)."""

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return self.spec.key

    def view(self, *, show_values: bool = False) -> SecretView:
        """Return what readers see: keys and sizes, and the values only when asked."""
        spec = self.spec
        return SecretView(
            name=spec.name,
            namespace=spec.namespace,
            type=spec.type,
            labels=spec.labels,
            annotations=spec.annotations,
            immutable=spec.immutable,
            sizes={k: len(v) for k, v in spec.values().items()},
            data=dict(spec.data) if show_values else None,
            uid=self.uid,
            generation=self.generation,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class SecretView(_Stored):
    """A Secret as readers see it: its keys and their sizes; its values only when asked."""

    kind: Literal["Secret"] = "Secret"
    """Document kind."""
    name: str
    """The Secret's name."""
    namespace: str
    """Its namespace."""
    type: str
    """Its type."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Its labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Its annotations."""
    immutable: bool = False
    """Whether its data can change."""
    sizes: dict[str, int] = Field(default_factory=dict)
    """Each key's value length in bytes."""
    data: dict[str, str] | None = None
    """The values, base64-encoded: only when an admin asked to see them (--show-values)."""

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return f"{self.namespace}/{self.name}"


class Namespace(_Stored):
    """A stored Namespace."""

    spec: NamespaceSpec
    """The Namespace as last applied."""

    @property
    def key(self) -> str:
        """Return the name."""
        return self.spec.name


CONFIG_MODELS: dict[str, type[ConfigMap | Secret | Namespace]] = {
    "ConfigMap": ConfigMap,
    "Secret": Secret,
    "Namespace": Namespace,
}
"""The stored model of each configuration kind, by the ``kind`` its spec names."""
