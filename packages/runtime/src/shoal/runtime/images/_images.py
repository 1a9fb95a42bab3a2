"""The node's image store: pull, import, unpack, list, remove and collect images.

On disk, under ``root``::

    images.json              reference -> manifest digest (+ size, source, time)
    blobs/sha256/<hex>       verified blobs: indexes, manifests, configs, layers
    incoming/                partial downloads and imports in progress
    layers/<diff id hex>/    unpacked layers, overlayfs-ready, shared by images

:meth:`ImageStore.prepare` is what the OCI runtime calls
(:class:`~shoal.runtime.ImageSource`): it finds the image locally or pulls it,
unpacks whatever layers are not unpacked yet, and returns their directories
with the image config. What it found is kept in memory by reference and
returned again while the store is unchanged (no pull, import, removal or gc
through this object, and the same ``images.json`` and ``layers/`` on disk), so
a container's start does not read and verify the manifest and config again.
Blobs that went missing (deleted as corrupt, or by
hand) are fetched again for a pulled image; an imported one must be imported
again. An unqualified name (``busybox``) resolves to the configured default
registry; without one it must have been imported, since Shoal never reaches
out to Docker Hub on its own.

In a cluster, a store is given its ``peers`` (the servers): an image that is
not here is asked of them first (:mod:`._peers`), then of its registry, so
an image imported on a server reaches every worker with no registry at all.
When every source fails, the error names each one and why. A store also
shares what it holds (:class:`~shoal.interfaces.ImageShare`), which is what a
server serves to its workers.

``remove`` only forgets a reference; ``gc`` frees the blobs and layers that
no remaining reference (and nothing passed as ``in_use``) reaches. Blocking
file work runs in worker threads; see :mod:`._image_index` for how
concurrent operations and ``gc`` stay out of each other's way.
"""

from __future__ import annotations

import builtins
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from shoal.interfaces import (
    ImageError,
    ImageInfo,
    ImagePeer,
    ImagePeers,
    InvalidInput,
    NotFound,
    SharedManifest,
    ShoalError,
)

from ._archive import read_archive
from ._blobs import BlobStore, MissingBlob
from ._image_api import PreparedImage
from ._image_index import (
    ImageIndexFile,
    ImageRecord,
    ImageSourceKind,
    KeyedLocks,
    SharedExclusive,
)
from ._layers import ImageContent
from ._peers import fetch_from_peer
from ._pull import ProgressCallback, PulledImage, PullProgress, pull_image
from ._reference import ImageReference, parse_reference
from ._registry import RegistryClient, registry_tls

_SHARE_CHUNK = 1 << 20

__all__ = ["LOOPBACK_REGISTRIES", "ImageStore"]

_Stamp = tuple[int, tuple[int, int, int], tuple[int, int, int]]
"""The store's changes here, then (inode, mtime, links) of the index and of ``layers/``."""

LOOPBACK_REGISTRIES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
"""Registries spoken to over plain HTTP unless told otherwise (any port)."""


class ImageStore:
    """Images on this node, kept under ``root``; implements :class:`~shoal.runtime.ImageSource`.

    Args:
        root: Directory that holds everything (created if missing).
        default_registry: ``host[:port]`` for unqualified names like ``busybox``;
            None means they must be imported.
        insecure_registries: Registries (``host`` for any port, or ``host:port``)
            spoken to over plain HTTP; default: loopback.
        credentials: ``(user, password)`` by registry, for basic auth and token services.
        timeout: Seconds any single network operation may take.
        concurrent_downloads: Blobs fetched at once by one pull.
        registry_ca: A PEM file of CA certificates trusted for registries, besides
            the system's.
        peers: The nodes to fetch an image from before its registry (the servers).
        unpack: Unpack layers (False on a node that only keeps and shares images).

    Raises:
        InvalidInput: ``registry_ca`` cannot be read or holds no certificate.
    """

    def __init__(
        self,
        root: Path,
        *,
        default_registry: str | None = None,
        insecure_registries: Collection[str] = LOOPBACK_REGISTRIES,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        timeout: float = 30.0,
        concurrent_downloads: int = 3,
        registry_ca: Path | None = None,
        peers: ImagePeers | None = None,
        unpack: bool = True,
    ) -> None:
        self.root = root
        self.default_registry = default_registry
        self.insecure_registries = frozenset(insecure_registries)
        self._credentials = dict(credentials or {})
        self._timeout = timeout
        self._concurrency = concurrent_downloads
        self._tls: ssl.SSLContext | bool = True
        if registry_ca is not None:
            self._tls = registry_tls(registry_ca)
        self._peers = peers
        self._unpack = unpack
        self._blobs = BlobStore(root)
        self._locks = KeyedLocks()
        self._content = ImageContent(root, self._blobs, self._locks)
        self._index = ImageIndexFile(root / "images.json")
        self._gate = SharedExclusive()
        self._ready = False
        self._changes = 0
        """Bumped by every change this object makes to the index or the content."""
        self._prepared: dict[str, tuple[_Stamp, PreparedImage]] = {}
        """What :meth:`prepare` returned by reference, and the store's stamp then."""

    async def prepare(
        self, reference: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> PreparedImage:
        """Make ``reference`` available and unpacked, fetching it if it is not here.

        A missing image is asked of the peers (the cluster's servers), then of
        its registry.

        Raises:
            InvalidInput: ``reference`` is not a valid image reference.
            ImageError: it is not here and no source could provide it (the
                message names each source tried and why it failed), or it fails
                verification or unpacking.
        """
        async with self._gate.shared():
            await self._setup()
            stamp = self._stamp()  # before reading: a change from here on makes it stale
            cached = self._prepared.get(reference)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            record = self._find(reference, await self._load())
            if record is None:
                record = await self._fetch(reference, credentials)
            try:
                layers, config = await self._content.layers(record.digest, record.reference)
            except MissingBlob:
                if record.source not in ("registry", "cluster"):
                    raise
                record = await self._fetch(record.reference, credentials)
                layers, config = await self._content.layers(record.digest, record.reference)
            prepared = PreparedImage(
                reference=reference, digest=record.digest, config=config.config, layers=layers
            )
            self._prepared[reference] = (stamp, prepared)
            return prepared

    async def ensure(self, reference: str) -> ImageInfo:
        """Make ``reference`` available as :meth:`prepare` does, without returning its layers.

        On a store that does not unpack, this only brings its blobs here.

        Raises:
            InvalidInput: ``reference`` is not a valid image reference.
            ImageError: it is not here and no source could provide it.
        """
        async with self._gate.shared():
            await self._setup()
            record = self._find(reference, await self._load())
            if record is None:
                record = await self._fetch(reference)
            return _info(record)

    async def pull(self, reference: str, *, progress: ProgressCallback | None = None) -> ImageInfo:
        """Pull ``reference`` from its registry (even if present: tags move) and unpack it.

        Args:
            reference: The image; unqualified names use the default registry.
            progress: Called as blobs download and layers unpack.

        Raises:
            InvalidInput: ``reference`` is not a valid image reference.
            ImageError: it names no registry, or the pull or unpacking failed.
        """
        async with self._gate.shared():
            await self._setup()
            record = await self._pull(self._pullable(reference, local_miss=False), progress)
            return _info(record)

    async def import_path(self, path: Path | str, reference: str | None = None) -> list[ImageInfo]:
        """Import the images of an OCI layout directory or a ``docker save`` tarball.

        Args:
            path: The directory or tar file (plain or gzip-compressed).
            reference: Name to import under; picks one image if there are several.

        Returns:
            One entry per reference recorded.

        Raises:
            InvalidInput: ``reference`` is not a valid image reference.
            ImageError: ``not an image: ...``, an unnamed image without
                ``reference``, or a blob or layer that fails verification.
        """
        wanted = parse_reference(reference) if reference is not None else None
        source = Path(path)
        async with self._gate.shared():
            await self._setup()
            found = await anyio.to_thread.run_sync(read_archive, source, self._blobs, wanted)
            records: list[ImageRecord] = []
            for image in found:
                manifest = await self._content.manifest(image.digest, str(source))
                size = await anyio.to_thread.run_sync(self._blobs.size, image.digest)
                size += manifest.config.size + sum(layer.size for layer in manifest.layers)
                for name in image.names:
                    record = ImageRecord(
                        reference=name,
                        digest=image.digest,
                        index_digest=image.index_digest,
                        size=size,
                        source=image.source,
                        added=datetime.now(UTC),
                    )
                    await self._check_content(record, None)
                    records.append(record)
            await self._save(records)
            return [_info(record) for record in records]

    async def list(self) -> builtins.list[ImageInfo]:
        """Return every image reference in the store, sorted by reference."""
        await self._setup()
        return [_info(record) for _, record in sorted((await self._load()).items())]

    async def info(self, reference: str) -> ImageInfo:
        """Return what the store holds under ``reference`` (never pulls).

        Raises:
            NotFound: it is not in the store.
        """
        await self._setup()
        record = self._find(reference, await self._load())
        if record is None:
            raise NotFound(f"image {reference} is not in the image store", reference=reference)
        return _info(record)

    async def remove(self, reference: str) -> builtins.list[ImageInfo]:
        """Forget ``reference`` (or every reference to a manifest digest ``sha256:...``).

        Its blobs and layers stay until :meth:`gc`.

        Returns:
            The entries removed.

        Raises:
            NotFound: nothing matches.
        """
        async with self._gate.shared(), self._index.lock:
            await self._setup()
            records = await self._load()
            if reference.startswith("sha256:"):
                doomed = [r for r in records.values() if reference in (r.digest, r.index_digest)]
            else:
                found = self._find(reference, records)
                doomed = [found] if found is not None else []
            if not doomed:
                raise NotFound(f"image {reference} is not in the image store", reference=reference)
            for record in doomed:
                del records[record.reference]
            self._changed()
            await anyio.to_thread.run_sync(self._index.save, records)
            return [_info(record) for record in doomed]

    async def gc(self, *, in_use: Iterable[str] = ()) -> int:
        """Delete the blobs and unpacked layers that no image references.

        Args:
            in_use: Manifest digests or references whose content must stay even
                if no longer listed (e.g. images of running containers).

        Returns:
            The number of bytes freed.
        """
        async with self._gate.exclusive():
            await self._setup()
            records = await self._load()
            roots = {record.digest for record in records.values()}
            roots |= {r.index_digest for r in records.values() if r.index_digest}
            for item in in_use:
                found = None if item.startswith("sha256:") else self._find(item, records)
                if found is not None or item.startswith("sha256:"):
                    roots.add(found.digest if found else item)
            self._changed()
            return await anyio.to_thread.run_sync(self._content.sweep, roots)

    # -- sharing with other nodes ------------------------------------------------

    async def shared_manifest(self, reference: str) -> SharedManifest:
        """Return the platform manifest of ``reference`` as stored (never pulls).

        Raises:
            NotFound: it is not in the store, or its manifest blob is missing.
            InvalidInput: ``reference`` is not a valid image reference.
        """
        await self._setup()
        record = self._find(reference, await self._load())
        if record is None:
            raise NotFound(f"image {reference} is not in the image store", reference=reference)
        try:
            data = await anyio.to_thread.run_sync(
                lambda: self._blobs.read(record.digest, source=record.reference)
            )
            index = b""
            if record.index_digest is not None:
                digest = record.index_digest
                index = await anyio.to_thread.run_sync(
                    lambda: self._blobs.read(digest, source=record.reference)
                )
        except MissingBlob as exc:
            raise NotFound(exc.message, reference=reference) from None
        return SharedManifest(record.reference, record.digest, data, index)

    async def shared_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Yield the bytes of a cached blob from ``offset`` on, in 1 MiB chunks.

        Raises:
            InvalidInput: ``digest`` is not a sha256 digest, or ``offset`` is past its end.
            NotFound: the blob is not cached.
        """
        await self._setup()
        try:
            path = self._blobs.path(digest)
        except ImageError as exc:
            raise InvalidInput(exc.message, field="digest") from None
        async with self._gate.shared():  # gc waits until the blob is sent
            try:
                handle = await anyio.to_thread.run_sync(path.open, "rb")
            except FileNotFoundError:
                raise NotFound(f"blob {digest} is not in the image store", digest=digest) from None
            try:
                size = path.stat().st_size
                if not 0 <= offset <= size:
                    raise InvalidInput(
                        f"offset {offset} is outside blob {digest} ({size} bytes)", field="offset"
                    )
                handle.seek(offset)
                while chunk := await anyio.to_thread.run_sync(handle.read, _SHARE_CHUNK):
                    yield chunk
            finally:
                handle.close()

    # -- internals ---------------------------------------------------------------

    async def _fetch(
        self, text: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageRecord:
        """Get an image that is not here: from the peers, then its registry.

        Raises:
            ImageError: no source has it, naming each one tried and why it failed.
        """
        failures: builtins.list[str] = []
        for peer in await self._peer_list(failures):
            try:
                return await self._from_peer(peer, text)
            except NotFound:
                failures.append(f"server {peer.name}: does not have it")
            except ShoalError as exc:
                failures.append(f"server {peer.name}: {exc.message}")
        reference = parse_reference(text, default_registry=self.default_registry)
        if reference.registry is None:
            if not failures and self._peers is None:
                raise self._unnamed(text, reference, local_miss=True)
            failures.append("registry: none (the name has no registry host and no default is set)")
        else:
            try:
                return await self._pull(reference, None, credentials)
            except ImageError as exc:
                if not failures and self._peers is None:
                    raise
                failures.append(f"registry {reference.registry}: {exc.message}")
        raise ImageError(
            f"image {text} is not on this node and no source could provide it: "
            + "; ".join(f"[{n}] {why}" for n, why in enumerate(failures, 1))
            + ". Import it on a server (shoal images import PATH) or pull it there "
            "(shoal images pull REF), or make a registry that has it reachable",
            reference=text,
            sources=failures,
        )

    async def _peer_list(self, failures: builtins.list[str]) -> builtins.list[ImagePeer]:
        if self._peers is None:
            return []
        try:
            peers = list(await self._peers())
        except ShoalError as exc:
            failures.append(f"servers: cannot list them ({exc.message})")
            return []
        if not peers:
            failures.append("servers: none is alive in gossip")
        return peers

    async def _from_peer(self, peer: ImagePeer, text: str) -> ImageRecord:
        pulled = await fetch_from_peer(
            peer, text, self._blobs, self._locks, progress=_ignore, concurrency=self._concurrency
        )
        reference = str(parse_reference(text, default_registry=self.default_registry))
        record = _record(reference, pulled, "cluster")
        await self._check_content(record, None)
        await self._save([record])
        return record

    async def _check_content(self, record: ImageRecord, progress: ProgressCallback | None) -> None:
        """Unpack the image's layers; without unpacking, check its blobs are all here.

        Raises:
            MissingBlob: a blob is not cached.
            ImageError: it is inconsistent, corrupt, or cannot be unpacked.
        """
        if self._unpack:
            await self._content.layers(record.digest, record.reference, _unpacked(record, progress))
            return
        manifest = await self._content.manifest(record.digest, record.reference)
        for descriptor in (manifest.config, *manifest.layers):
            if not await anyio.to_thread.run_sync(self._blobs.has, descriptor.digest):
                raise MissingBlob(
                    f"blob {descriptor.digest} of {record.reference} is missing from the "
                    "image store; pull or import the image again",
                    digest=descriptor.digest,
                )

    async def _setup(self) -> None:
        if not self._ready:
            await anyio.to_thread.run_sync(self._content.setup)
            self._ready = True

    async def _load(self) -> dict[str, ImageRecord]:
        return await anyio.to_thread.run_sync(self._index.load)

    async def _save(self, new: Iterable[ImageRecord]) -> None:
        async with self._index.lock:
            records = await self._load()
            records.update({record.reference: record for record in new})
            self._changed()
            await anyio.to_thread.run_sync(self._index.save, records)

    def _changed(self) -> None:
        """Forget what :meth:`prepare` found (called before a change, and it bumps the stamp)."""
        self._changes += 1
        self._prepared.clear()

    def _stamp(self) -> _Stamp:
        """Return what changes whenever the index or the set of unpacked layers does.

        This object's own changes count; so do another process's or a hand's:
        the index is replaced whole (a new inode) on every save, and a layer
        directory made or deleted changes ``layers/``. Two ``stat`` calls, in
        the event loop: far cheaper than the worker thread a read would take.
        """
        return self._changes, _file_stamp(self._index.path), _file_stamp(self._content.layers_dir)

    def _find(self, text: str, records: Mapping[str, ImageRecord]) -> ImageRecord | None:
        """Look ``text`` up: as qualified by the default registry, then as written."""
        bare = parse_reference(text)
        keys = [str(parse_reference(text, default_registry=self.default_registry)), str(bare)]
        for key in keys:
            if key in records:
                return records[key]
        if bare.digest:  # pinned: any tag of the same repository with that digest will do
            for record in records.values():
                name = parse_reference(record.reference).name
                if bare.digest in (record.digest, record.index_digest) and name in {
                    parse_reference(key).name for key in keys
                }:
                    return record
        return None

    def _pullable(self, text: str, *, local_miss: bool) -> ImageReference:
        reference = parse_reference(text, default_registry=self.default_registry)
        if reference.registry is None:
            raise self._unnamed(text, reference, local_miss=local_miss)
        return reference

    def _unnamed(self, text: str, reference: ImageReference, *, local_miss: bool) -> ImageError:
        why = "is not in the local image store and" if local_miss else "cannot be pulled: it"
        return ImageError(
            f"image {text} {why} names no registry (and no default registry is configured); "
            "import it (shoal images import PATH) or name a registry "
            f"(e.g. 127.0.0.1:5000/{reference.repository}:{reference.tag or 'latest'})",
            reference=text,
        )

    async def _pull(
        self,
        reference: ImageReference,
        progress: ProgressCallback | None,
        credentials: Mapping[str, tuple[str, str]] | None = None,
    ) -> ImageRecord:
        registry = reference.registry
        assert registry is not None
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        insecure = registry in self.insecure_registries or host in self.insecure_registries
        async with httpx.AsyncClient(
            verify=self._tls,
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=True,
            headers={"User-Agent": "shoal-image-store"},
        ) as http:
            client = RegistryClient(
                http,
                registry=registry,
                api_host=reference.api_host,
                repository=reference.repository,
                insecure=insecure,
                credentials=(credentials or {}).get(registry) or self._credentials.get(registry),
            )
            pulled = await pull_image(
                client,
                reference,
                self._blobs,
                self._locks,
                progress=progress or _ignore,
                concurrency=self._concurrency,
            )
        record = _record(str(reference), pulled, "registry")
        # Recorded only once it unpacks: a broken image must not look pulled.
        await self._check_content(record, progress)
        await self._save([record])
        return record


def _record(reference: str, pulled: PulledImage, source: ImageSourceKind) -> ImageRecord:
    manifest = pulled.manifest
    return ImageRecord(
        reference=reference,
        digest=pulled.digest,
        index_digest=pulled.index_digest,
        size=pulled.manifest_size + manifest.config.size + sum(x.size for x in manifest.layers),
        source=source,
        added=datetime.now(UTC),
    )


def _file_stamp(path: Path) -> tuple[int, int, int]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return 0, 0, 0
    return info.st_ino, info.st_mtime_ns, info.st_nlink


def _info(record: ImageRecord) -> ImageInfo:
    return ImageInfo(reference=record.reference, digest=record.digest, size=record.size)


def _ignore(_: PullProgress) -> None:
    return None


def _unpacked(
    record: ImageRecord, progress: ProgressCallback | None
) -> Callable[[str, int], object] | None:
    if progress is None:
        return None

    def report(digest: str, size: int) -> None:
        progress(PullProgress(record.reference, digest, "layer", "unpacked", size, size))

    return report
