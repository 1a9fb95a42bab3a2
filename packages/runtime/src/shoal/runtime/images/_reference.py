"""Image references, parsed the way Docker and the OCI distribution spec spell them.

A reference is ``[registry/]repository[:tag][@digest]``::

    127.0.0.1:5000/tools/busybox:1.36        registry, repository, tag
    registry.test/app@sha256:<64 hex>        pinned to a manifest digest
    busybox                                  unqualified: no registry named

As in Docker, the first path component names a registry only when it looks
like a host: it contains a ``.`` or a ``:`` (a port), or is ``localhost``.
Anything else is part of the repository, so ``library/busybox`` is
unqualified. Unqualified names get the store's configured default registry;
without one they keep ``registry=None`` and can only be found among images
imported locally. A reference with neither tag nor digest means ``:latest``.

Docker Hub's quirks are honoured only when it is named (``docker.io``): its
one-component repositories live under ``library/`` and its API is served by
``registry-1.docker.io``. Nothing in Shoal contacts it unless told to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.interfaces import InvalidInput

__all__ = ["ImageReference", "parse_reference"]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?"
)
_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_EXAMPLE = "e.g. 127.0.0.1:5000/busybox:1.36 or busybox@sha256:<64 hex digits>"


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    Attributes:
        registry: ``host[:port]`` of the registry, or None for an unqualified
            name with no default registry configured.
        repository: Path of the repository in that registry, e.g. ``tools/busybox``.
        tag: The tag, or None when only a digest was given.
        digest: ``sha256:<hex>`` the manifest is pinned to, or None.
    """

    registry: str | None
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository`` (or just the repository when unqualified)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def api_host(self) -> str:
        """Where the registry's HTTP API v2 answers (Docker Hub's differs from its name).

        Raises:
            ValueError: the reference names no registry.
        """
        if self.registry is None:
            raise ValueError(f"{self} names no registry")
        return "registry-1.docker.io" if self.registry in _DOCKER_HUB else self.registry

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_registry(self, registry: str) -> ImageReference:
        """Return this reference with ``registry`` filled in (Docker Hub adds ``library/``)."""
        repository = self.repository
        if registry in _DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        return ImageReference(registry, repository, self.tag, self.digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, default_registry: str | None = None) -> ImageReference:
    """Parse ``text`` into an :class:`ImageReference`.

    Args:
        text: The reference as a user wrote it.
        default_registry: ``host[:port]`` given to unqualified names, if any.

    Returns:
        The reference; ``tag`` is ``latest`` when neither tag nor digest was given.

    Raises:
        InvalidInput: ``text`` is not a valid reference (the message says why).
    """
    original = text
    text = text.strip()
    if not text:
        raise _invalid(original, "it is empty")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise _invalid(original, f"digest {digest!r} is not sha256 followed by 64 hex digits")
    registry: str | None = None
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            raise _invalid(original, f"{first!r} is not a valid registry host[:port]")
        registry, text = first, rest
    tag: str | None = None
    last_colon = text.rfind(":")
    if last_colon > text.rfind("/"):
        text, tag = text[:last_colon], text[last_colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise _invalid(
                original, f"tag {tag!r} must be letters, digits, '_', '.' or '-' (at most 128)"
            )
    if not _REPOSITORY.fullmatch(text):
        reason = (
            "repository names must be lowercase"
            if _REPOSITORY.fullmatch(text.lower())
            else f"{text!r} is not a valid repository path (lowercase words separated by '/')"
        )
        raise _invalid(original, reason)
    if tag is None and digest is None:
        tag = "latest"
    reference = ImageReference(registry, text, tag, digest)
    if registry is None and default_registry:
        return reference.with_registry(default_registry)
    if registry in _DOCKER_HUB:
        return reference.with_registry(registry)
    return reference


def _invalid(text: str, reason: str) -> InvalidInput:
    return InvalidInput(
        f"invalid image reference {text!r}: {reason} ({_EXAMPLE})",
        field="image",
        value=text,
    )
