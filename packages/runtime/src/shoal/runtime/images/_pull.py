"""One pull: resolve a reference to a platform manifest and bring its blobs into the cache.

The steps, each reported to an optional progress callback as a
:class:`PullProgress`:

1. fetch the manifest by tag or digest; if it is an index (or Docker manifest
   list), cache it and fetch the entry for the host platform;
2. cache the manifest, then fetch the config and the layers that are not
   cached yet, a few at a time, each under a per-digest lock so concurrent
   pulls of images that share layers download each blob once.

Unpacking is the store's job (it also serves imports and prepares), so a pull
ends with verified blobs and the digests that name them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.to_thread

from shoal.interfaces import ImageError

from ._blobs import BlobStore
from ._image_index import KeyedLocks
from ._manifest import Descriptor, Index, Manifest, parse_index_or_manifest, select_platform
from ._reference import ImageReference
from ._registry import RegistryClient

__all__ = ["ProgressCallback", "PullProgress", "PulledImage", "pull_image"]


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull or of unpacking, for progress bars.

    Attributes:
        reference: The image being pulled.
        digest: The blob this is about.
        kind: ``manifest``, ``config`` or ``layer``.
        status: ``cached`` (nothing to download), ``downloading`` (``completed``
            of ``total`` bytes so far), ``downloaded`` (verified and cached),
            or ``unpacked`` (a layer is ready to use).
        completed: Bytes held so far.
        total: Bytes the blob has.
    """

    reference: str
    digest: str
    kind: Literal["manifest", "config", "layer"]
    status: Literal["cached", "downloading", "downloaded", "unpacked"]
    completed: int
    total: int


ProgressCallback = Callable[[PullProgress], object]
"""Called (in the event loop, so it must not block) as a pull advances."""


@dataclass(frozen=True)
class PulledImage:
    """What a pull leaves behind: verified blobs and the digests that name them."""

    digest: str
    """The platform manifest's digest."""
    index_digest: str | None
    """The index's digest, when the reference named an index."""
    manifest: Manifest
    """The manifest itself."""
    manifest_size: int
    """Its size in bytes."""


async def pull_image(
    client: RegistryClient,
    reference: ImageReference,
    blobs: BlobStore,
    locks: KeyedLocks,
    *,
    progress: ProgressCallback,
    concurrency: int = 3,
) -> PulledImage:
    """Fetch ``reference``'s manifest, config and layers into ``blobs``.

    Raises:
        ImageError: anything the registry or the verification refused.
    """
    display = str(reference)
    data, media_type, digest = await client.get_manifest(reference.manifest_ref, display=display)
    source = f"manifest {display} from registry {client.registry}"
    parsed = _parse(data, media_type, source, client.registry)
    index_digest = None
    if isinstance(parsed, Index):
        index_digest = digest
        await anyio.to_thread.run_sync(blobs.add_bytes, data)
        chosen = select_platform(parsed, source=source)
        data, media_type, digest = await client.get_manifest(chosen.digest, display=display)
        parsed = _parse(data, media_type or chosen.media_type, source, client.registry)
        if not isinstance(parsed, Manifest):
            raise ImageError(f"{source}: the entry for this platform is not an image manifest")
    await anyio.to_thread.run_sync(blobs.add_bytes, data)
    progress(PullProgress(display, digest, "manifest", "downloaded", len(data), len(data)))

    limiter = anyio.CapacityLimiter(concurrency)

    async def fetch(descriptor: Descriptor, kind: Literal["config", "layer"]) -> None:
        def report(done: int, status: Literal["downloading", "downloaded"] = "downloading") -> None:
            progress(PullProgress(display, descriptor.digest, kind, status, done, descriptor.size))

        async with limiter, locks.hold(descriptor.digest):
            if blobs.has(descriptor.digest):
                size = descriptor.size
                progress(PullProgress(display, descriptor.digest, kind, "cached", size, size))
                return
            partial = blobs.partial(descriptor.digest, descriptor.size, source=client.registry)
            await client.fetch_blob(descriptor, partial, display=display, progress=report)
            report(descriptor.size, "downloaded")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(fetch, parsed.config, "config")
            for layer in parsed.layers:
                group.start_soon(fetch, layer, "layer")
    except* ImageError as errors:
        raise errors.exceptions[0] from None
    return PulledImage(digest, index_digest, parsed, len(data))


def _parse(data: bytes, media_type: str, source: str, registry: str) -> Index | Manifest:
    try:
        return parse_index_or_manifest(data, media_type, source=source)
    except ImageError as exc:
        raise ImageError(
            f"{exc.message}; check that {registry} is an OCI distribution registry "
            "(HTTP API v2) and that the reference is right",
            registry=registry,
        ) from exc
