"""Manifests, indexes and image configs: the JSON documents of an OCI image.

Registries and image layouts speak two dialects, OCI and Docker's v2 schema 2;
both have the same shape (an *index* or *manifest list* that points at
per-platform *manifests*, each naming a *config* blob and *layer* blobs), so
one parser reads both. Everything here is pure: bytes in, models out, and
malformed documents become :class:`~shoal.interfaces.ImageError` naming where
they came from, never a ``KeyError``.

Platform selection follows containerd: ``linux`` plus the host's GOARCH
(``platform.machine()`` mapped, e.g. ``x86_64`` to ``amd64``), preferring an
exact CPU variant and skipping entries without a platform (attestations).
"""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shoal.interfaces import ImageError

from ._image_api import ImageConfig

__all__ = [
    "ACCEPT_MANIFESTS",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_TAR",
    "OCI_MANIFEST",
    "Descriptor",
    "Index",
    "Manifest",
    "ParsedConfig",
    "Platform",
    "digest_of",
    "host_platform",
    "parse_config",
    "parse_index_or_manifest",
    "select_platform",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
"""The Accept header for manifest requests: every dialect Shoal can read."""

_GOARCH: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


class Platform(BaseModel):
    """Where an image runs: ``os``/``architecture``[/``variant``]."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


class Descriptor(BaseModel):
    """A pointer to a blob: its media type, digest and size."""

    model_config = ConfigDict(populate_by_name=True)

    media_type: str = Field("", alias="mediaType")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    size: int = Field(ge=0)
    platform: Platform | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class Index(BaseModel):
    """An OCI image index or Docker manifest list."""

    media_type: str = Field("", alias="mediaType")
    manifests: list[Descriptor]


class Manifest(BaseModel):
    """An OCI image manifest or Docker v2 schema 2 manifest."""

    media_type: str = Field("", alias="mediaType")
    config: Descriptor
    layers: list[Descriptor]


class ParsedConfig(BaseModel):
    """What Shoal reads from an image config blob."""

    config: ImageConfig
    """Entrypoint, Cmd, Env, WorkingDir and User."""
    diff_ids: list[str]
    """Digests of the uncompressed layers, bottom first."""
    platform: Platform | None
    """The platform the config declares, if it declares one."""


def digest_of(data: bytes) -> str:
    """Return the ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_platform() -> Platform:
    """Return the platform of this machine in OCI/GOARCH terms."""
    machine = platform.machine().lower()
    architecture, variant = _GOARCH.get(machine, (machine, None))
    return Platform(os="linux", architecture=architecture, variant=variant)


def parse_index_or_manifest(data: bytes, media_type: str, *, source: str) -> Index | Manifest:
    """Parse a manifest document in either dialect.

    Args:
        data: The document's bytes.
        media_type: Its media type as served (Content-Type or a descriptor's),
            possibly empty; the document's own ``mediaType`` field counts too.
        source: Where it came from, for error messages.

    Raises:
        ImageError: the bytes are not an index or a schema-2 manifest.
    """
    document = _load_json(data, source, "an image manifest")
    declared = document.get("mediaType") or media_type.split(";")[0].strip()
    if document.get("schemaVersion") == 1:
        raise ImageError(
            f"{source} is a Docker schema 1 manifest, which Shoal does not support; "
            "re-push the image with a current tool (skopeo, docker, buildah)"
        )
    try:
        if declared in INDEX_TYPES or (not declared and "manifests" in document):
            return Index.model_validate(document)
        if declared in MANIFEST_TYPES or (not declared and "layers" in document):
            return Manifest.model_validate(document)
    except ValidationError as exc:
        raise ImageError(f"{source} is not a valid image manifest: {_first_error(exc)}") from exc
    raise ImageError(f"{source} has unsupported manifest type {declared or 'unknown'!r}")


def select_platform(index: Index, *, source: str, want: Platform | None = None) -> Descriptor:
    """Pick the manifest for ``want`` (default: this host) from an index.

    Raises:
        ImageError: no entry matches; the message lists the platforms there are.
    """
    want = want or host_platform()
    candidates = [
        entry
        for entry in index.manifests
        if entry.platform is not None
        and entry.platform.os == want.os
        and entry.platform.architecture == want.architecture
    ]
    exact = [e for e in candidates if e.platform is not None and e.platform.variant == want.variant]
    chosen = exact or candidates
    if not chosen:
        offered = sorted({str(e.platform) for e in index.manifests if e.platform is not None})
        raise ImageError(
            f"{source} has no image for this host's platform {want}; "
            f"it offers: {', '.join(offered) or 'no platforms'}",
            platform=str(want),
            offered=offered,
        )
    return chosen[0]


def parse_config(data: bytes, *, source: str) -> ParsedConfig:
    """Read the runtime settings and layer diff ids from an image config blob.

    Raises:
        ImageError: it is not an image config.
    """
    document = _load_json(data, source, "an image config")
    settings = document.get("config") or {}
    rootfs = document.get("rootfs")
    if not isinstance(settings, dict) or not isinstance(rootfs, dict):
        raise ImageError(f"{source} is not an image config (no config or rootfs object)")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageError(f"{source} is not an image config (rootfs.diff_ids is not a list)")
    declared = None
    if isinstance(document.get("os"), str) and isinstance(document.get("architecture"), str):
        declared = Platform(
            os=document["os"],
            architecture=document["architecture"],
            variant=document.get("variant"),
        )
    try:
        config = ImageConfig(
            entrypoint=settings.get("Entrypoint") or None,
            cmd=settings.get("Cmd") or None,
            env=settings.get("Env") or [],
            working_dir=settings.get("WorkingDir") or None,
            user=settings.get("User") or None,
        )
    except ValidationError as exc:
        raise ImageError(f"{source} has a malformed config: {_first_error(exc)}") from exc
    return ParsedConfig(config=config, diff_ids=diff_ids, platform=declared)


def _load_json(data: bytes, source: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageError(f"{source} is not {what}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise ImageError(f"{source} is not {what}: not a JSON object")
    return document


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" if location else str(error["msg"])
