"""Fetching an image from another node of the cluster instead of a registry.

A worker that lacks an image asks the servers (:data:`~shoal.interfaces.ImagePeers`)
for it: the platform manifest by reference, then every blob it does not
cache, over whatever carries :class:`~shoal.interfaces.ImageShare` (the
node-to-node gRPC channel, in a cluster). The same guarantees as a registry
pull hold:

* the manifest's bytes must hash to the digest the peer names, and a
  reference pinned to a digest must get that manifest, or an index with that
  digest that lists it;
* each blob is appended to its ``incoming/<hex>.partial`` file, and a cut
  stream is asked again from the offset already held (also by the next pull,
  since the partial survives); the whole blob is verified before it enters
  the shared cache, and bytes that do not verify are deleted.
"""

from __future__ import annotations

from typing import Literal

import anyio
import anyio.to_thread

from shoal.interfaces import ImageError, ImagePeer, SharedManifest, ShoalError, Unavailable

from ._blobs import BlobStore, PartialBlob, corrupt_blob_error
from ._image_index import KeyedLocks
from ._manifest import Descriptor, Index, Manifest, digest_of, parse_index_or_manifest
from ._pull import ProgressCallback, PulledImage, PullProgress
from ._reference import parse_reference

__all__ = ["PEER_ATTEMPTS", "fetch_from_peer"]

PEER_ATTEMPTS = 4
"""How many times one fetch asks a peer for a blob before giving up (keeping the partial)."""


async def fetch_from_peer(
    peer: ImagePeer,
    reference: str,
    blobs: BlobStore,
    locks: KeyedLocks,
    *,
    progress: ProgressCallback,
    concurrency: int = 3,
) -> PulledImage:
    """Bring ``reference``'s manifest, config and layers from ``peer`` into ``blobs``.

    Raises:
        NotFound: the peer does not hold the image (or one of its blobs).
        Unavailable: the peer cannot be reached (partials are kept).
        ImageError: what it sent fails verification (deleted), or is not an image.
    """
    source = f"server {peer.name}"
    shared = await peer.share.shared_manifest(reference)
    actual = digest_of(shared.data)
    if actual != shared.digest:
        raise corrupt_blob_error(shared.digest, actual, source)
    pinned = parse_reference(reference).digest
    index_digest = None
    if pinned is not None and pinned != shared.digest:
        _check_index(shared, pinned, reference, source)
        index_digest = pinned
        await anyio.to_thread.run_sync(blobs.add_bytes, shared.index_data)
    parsed = parse_index_or_manifest(shared.data, "", source=f"manifest {reference} from {source}")
    if not isinstance(parsed, Manifest):
        raise ImageError(f"{source} answered {reference} with something not an image manifest")
    await anyio.to_thread.run_sync(blobs.add_bytes, shared.data)
    size = len(shared.data)
    progress(PullProgress(reference, shared.digest, "manifest", "downloaded", size, size))

    limiter = anyio.CapacityLimiter(concurrency)

    async def fetch(descriptor: Descriptor, kind: Literal["config", "layer"]) -> None:
        async with limiter, locks.hold(descriptor.digest):
            if blobs.has(descriptor.digest):
                total = descriptor.size
                progress(PullProgress(reference, descriptor.digest, kind, "cached", total, total))
                return
            partial = blobs.partial(descriptor.digest, descriptor.size, source=source)
            await fetch_blob(peer, descriptor, partial)
            progress(
                PullProgress(
                    reference,
                    descriptor.digest,
                    kind,
                    "downloaded",
                    descriptor.size,
                    descriptor.size,
                )
            )

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(fetch, parsed.config, "config")
            for layer in parsed.layers:
                group.start_soon(fetch, layer, "layer")
    except* ShoalError as errors:
        raise _first(errors) from None
    return PulledImage(shared.digest, index_digest, parsed, size)


def _first(group: BaseExceptionGroup[ShoalError]) -> ShoalError:
    """Return the first Shoal error of a task group's (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _check_index(shared: SharedManifest, pinned: str, reference: str, source: str) -> None:
    """Check that ``shared`` came through the index ``pinned`` asks for.

    Raises:
        ImageError: the index is missing, does not hash to ``pinned``, or does
            not list the manifest.
    """
    listed = False
    if shared.index_data and digest_of(shared.index_data) == pinned:
        index = parse_index_or_manifest(
            shared.index_data, "", source=f"index {pinned} from {source}"
        )
        listed = isinstance(index, Index) and any(
            entry.digest == shared.digest for entry in index.manifests
        )
    if not listed:
        raise ImageError(
            f"{source} answered {reference} with manifest {shared.digest}, which is not, nor is "
            f"listed by, the pinned {pinned}; import or pull the pinned image on a server",
            reference=reference,
        )


async def fetch_blob(peer: ImagePeer, descriptor: Descriptor, partial: PartialBlob) -> None:
    """Stream a blob from ``peer`` into ``partial``, resuming, and commit it once it verifies.

    Raises:
        NotFound: the peer does not hold it.
        Unavailable: the stream broke :data:`PEER_ATTEMPTS` times (the partial is kept).
        ImageError: the bytes fail verification (the partial is deleted).
    """
    try:
        offset = await anyio.to_thread.run_sync(partial.open)
        failures = 0
        while offset < descriptor.size:
            try:
                async for chunk in peer.share.shared_blob(descriptor.digest, offset):
                    await anyio.to_thread.run_sync(partial.write, chunk)
                if partial.offset >= descriptor.size:
                    break
                error: Exception = ConnectionError("the stream ended early")
            except Unavailable as exc:
                error = exc
            failures += 1
            offset = partial.offset
            if failures >= PEER_ATTEMPTS:
                raise Unavailable(
                    f"fetching blob {descriptor.digest} from server {peer.name} failed "
                    f"{failures} times (last: {error}); {offset} of {descriptor.size} bytes are "
                    "kept and the next attempt resumes from there",
                    digest=descriptor.digest,
                ) from None
            await anyio.sleep(0.0 if failures == 1 else 0.25 * failures)
        await anyio.to_thread.run_sync(partial.commit)
    finally:
        partial.close()  # kept on disk for a later resume unless committed or discarded
