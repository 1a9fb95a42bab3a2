"""What an OCI runtime needs from an image store: unpacked layers and the image config.

The contract between :class:`~shoal.runtime.OciCliRuntime` (which builds
bundles) and the image store (which pulls, verifies, caches and unpacks), so
each can be built and tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

__all__ = ["ImageConfig", "ImageSource", "PreparedImage"]


class ImageConfig(BaseModel):
    """The runtime-relevant part of an OCI image config (``config`` in the image JSON)."""

    entrypoint: list[str] | None = None
    """Entrypoint; a workload's ``command`` replaces it."""
    cmd: list[str] | None = None
    """Default arguments; a workload's ``args`` replace them."""
    env: list[str] = Field(default_factory=list)
    """``KEY=VALUE`` entries; a workload's env is added on top."""
    working_dir: str | None = None
    """Working directory; a workload's ``working_dir`` replaces it."""
    user: str | None = None
    """``uid[:gid]`` or a name resolved in the image's /etc/passwd."""


class PreparedImage(BaseModel):
    """An image ready to become a container's root filesystem."""

    reference: str
    """The reference it was asked for by."""
    digest: str
    """Digest of its manifest (``sha256:...``)."""
    config: ImageConfig
    """Entrypoint, cmd, env, working dir and user."""
    layers: list[Path]
    """Unpacked layer directories, bottom layer first (overlayfs lowerdirs, reversed)."""


@runtime_checkable
class ImageSource(Protocol):
    """Something that turns an image reference into unpacked layers."""

    async def prepare(
        self, reference: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> PreparedImage:
        """Make ``reference`` available locally (pulling or importing as needed) and unpacked.

        ``credentials`` (``(user, password)`` by registry) are tried before the source's own.

        Raises:
            ImageError: it does not exist, cannot be fetched, fails verification,
                or cannot be unpacked.
        """
        ...
