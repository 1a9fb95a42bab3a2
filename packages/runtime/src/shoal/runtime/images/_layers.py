"""The image store's content on disk: manifests read back, layers unpacked, garbage swept.

:class:`ImageContent` owns ``blobs/`` (through :class:`BlobStore`) and
``layers/``. Given an image's manifest digest it reads the manifest and the
config back from the cache (re-verifying both), refuses an image built for
another platform or whose config and manifest disagree on the number of
layers, and unpacks each layer that is not unpacked yet, once, under a
per-layer lock. A layer directory is named after the hex of the layer's diff
id, so the same layer reached through a compressed registry blob and an
uncompressed ``docker save`` tar is unpacked once; there is no ``:`` in the
name, which overlayfs would read as a separator between lower directories.

``sweep`` is the body of ``gc``: starting from the manifest and index digests
still wanted, it keeps what they reach and deletes every other blob, layer
directory and leftover temporary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from shoal.interfaces import ImageError

from ._blobs import BlobStore, MissingBlob, remove_path
from ._image_index import KeyedLocks
from ._manifest import Manifest, ParsedConfig, host_platform, parse_config, parse_index_or_manifest
from ._unpack import unpack_layer

__all__ = ["ImageContent"]


class ImageContent:
    """Blobs and unpacked layers under a store's root."""

    def __init__(self, root: Path, blobs: BlobStore, locks: KeyedLocks) -> None:
        self.blobs = blobs
        self.layers_dir = root / "layers"
        self._locks = locks

    def setup(self) -> None:
        """Create the directories."""
        self.blobs.setup()
        self.layers_dir.mkdir(parents=True, exist_ok=True)

    async def manifest(self, digest: str, source: str) -> Manifest:
        """Read a cached image manifest back.

        Raises:
            MissingBlob: it is not cached.
            ImageError: it is corrupt (and was deleted) or not an image manifest.
        """
        data = await anyio.to_thread.run_sync(lambda: self.blobs.read(digest, source=source))
        manifest = parse_index_or_manifest(data, "", source=f"manifest {digest} of {source}")
        if not isinstance(manifest, Manifest):
            raise ImageError(f"{source}: {digest} is not an image manifest")
        return manifest

    async def layers(
        self,
        digest: str,
        reference: str,
        on_unpacked: Callable[[str, int], object] | None = None,
    ) -> tuple[list[Path], ParsedConfig]:
        """Return an image's layer directories, bottom first, and its config.

        Args:
            digest: The image's manifest digest.
            reference: Its name, for messages.
            on_unpacked: Called with each layer's blob digest and size once it is ready.

        Raises:
            MissingBlob: a blob it needs is not cached.
            ImageError: it is for another platform, inconsistent, corrupt, or
                cannot be unpacked.
        """
        manifest = await self.manifest(digest, reference)
        source = f"config of {reference}"
        config_digest = manifest.config.digest
        data = await anyio.to_thread.run_sync(lambda: self.blobs.read(config_digest, source=source))
        config = parse_config(data, source=source)
        host = host_platform()
        if config.platform and (config.platform.os, config.platform.architecture) != (
            host.os,
            host.architecture,
        ):
            raise ImageError(
                f"image {reference} is built for {config.platform}, but this host is {host}; "
                f"use an image for {host}",
                reference=reference,
            )
        if len(config.diff_ids) != len(manifest.layers):
            raise ImageError(
                f"image {reference} is inconsistent: {len(manifest.layers)} layers but "
                f"{len(config.diff_ids)} diff ids in its config; rebuild it",
                reference=reference,
            )
        paths = []
        for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            target = self.layers_dir / diff_id.removeprefix("sha256:")
            await self._unpack_once(layer.digest, diff_id, target, reference)
            if on_unpacked is not None:
                on_unpacked(layer.digest, layer.size)
            paths.append(target)
        return paths, config

    async def _unpack_once(self, digest: str, diff_id: str, target: Path, reference: str) -> None:
        if await anyio.to_thread.run_sync(target.is_dir):
            return
        async with self._locks.hold(f"layer:{diff_id}"):
            await anyio.to_thread.run_sync(
                self._unpack_if_missing, digest, diff_id, target, reference
            )

    def _unpack_if_missing(self, digest: str, diff_id: str, target: Path, reference: str) -> None:
        if target.is_dir():
            return  # another task unpacked it while this one waited for the lock
        if not self.blobs.has(digest):
            raise MissingBlob(
                f"layer {digest} of {reference} is missing from the image store; "
                "pull or import the image again",
                digest=digest,
            )
        unpack_layer(self.blobs.path(digest), target, digest=digest, diff_id=diff_id)

    def sweep(self, roots: set[str]) -> int:
        """Delete what ``roots`` (manifest and index digests) do not reach; return bytes freed.

        Blocking: run it in a worker thread, with no other operation running.
        """
        keep_blobs = set(roots)
        keep_layers: set[str] = set()
        for digest in roots:
            try:
                document = parse_index_or_manifest(
                    self.blobs.read(digest, source="gc"), "", source=digest
                )
                if not isinstance(document, Manifest):
                    keep_blobs |= {entry.digest for entry in document.manifests}
                    continue
                keep_blobs.add(document.config.digest)
                keep_blobs |= {layer.digest for layer in document.layers}
                config_data = self.blobs.read(document.config.digest, source="gc")
                config = parse_config(config_data, source="gc")
                keep_layers |= {d.removeprefix("sha256:") for d in config.diff_ids}
            except ImageError:
                continue  # a broken image keeps what it could name
        freed = sum(
            self.blobs.delete(digest)
            for digest in list(self.blobs.digests())
            if digest not in keep_blobs
        )
        for entry in list(self.layers_dir.iterdir()):
            if entry.name not in keep_layers:
                freed += remove_path(entry)
        return freed + self.blobs.sweep_incoming()
