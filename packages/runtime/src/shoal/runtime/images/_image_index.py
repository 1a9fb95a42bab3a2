"""The image store's bookkeeping: which reference names which manifest, and who may touch what.

``root/images.json`` maps canonical references to image records (:class:`ImageRecord`).
It is small, rewritten whole on every change (temporary file, ``fsync``,
``rename``), so a crash leaves either the old index or the new one. The
blobs and layers are the truth about content; the index only says which of
them are wanted, and everything it does not reach is garbage for ``gc``.

Concurrency inside one process (one agent owns a store):

* :class:`SharedExclusive` lets any number of pulls, imports and prepares run
  together while ``gc`` waits for them to finish and holds new ones off, so
  it never deletes a blob that an operation has fetched but not yet recorded;
* :class:`KeyedLocks` serialises work on one digest (two pulls of the same
  blob must not append to the same partial file; two prepares of the same
  layer should unpack it once).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Literal

import anyio
from pydantic import BaseModel, ValidationError

from shoal.interfaces import ImageError

__all__ = ["ImageIndexFile", "ImageRecord", "KeyedLocks", "SharedExclusive"]

ImageSourceKind = Literal["registry", "cluster", "oci-layout", "docker-archive"]


class ImageRecord(BaseModel):
    """What the store remembers about one reference."""

    reference: str
    """The canonical reference, e.g. ``127.0.0.1:5000/busybox:latest``."""
    digest: str
    """Digest of the (platform-specific) image manifest."""
    index_digest: str | None = None
    """Digest of the index it was chosen from, if it came from a multi-platform index."""
    size: int
    """Bytes of the manifest, config and layer blobs."""
    source: ImageSourceKind
    """How it arrived: pulled from a registry or a server of the cluster, or imported
    from a layout or archive."""
    added: datetime
    """When it was pulled or imported."""


class _IndexDocument(BaseModel):
    version: Literal[1] = 1
    images: dict[str, ImageRecord] = {}


class ImageIndexFile:
    """``images.json``: read whole, written whole and atomically, one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = anyio.Lock()
        """Held across a read-modify-write of the index."""

    def load(self) -> dict[str, ImageRecord]:
        """Return every record by reference (empty if the index does not exist yet).

        Raises:
            ImageError: the file exists but is not an image index.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return _IndexDocument.model_validate_json(raw).images
        except ValidationError as exc:
            raise ImageError(
                f"the image index {self.path} is damaged ({exc.error_count()} errors); "
                "move it away and pull or import the images again",
                path=str(self.path),
            ) from exc

    def save(self, images: Mapping[str, ImageRecord]) -> None:
        """Replace the index with ``images``, atomically."""
        document = _IndexDocument(images=dict(sorted(images.items())))
        data = json.dumps(document.model_dump(mode="json"), indent=2).encode() + b"\n"
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        with temp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)


class SharedExclusive:
    """Many shared holders at once, or one exclusive holder (which new sharers wait behind)."""

    def __init__(self) -> None:
        self._lock = anyio.Lock()
        self._holders = 0
        self._idle = anyio.Event()
        self._idle.set()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold the gate shared (pull, import, prepare, remove)."""
        async with self._lock:
            if self._holders == 0:
                self._idle = anyio.Event()
            self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                self._idle.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the gate alone (gc), once every shared holder has left."""
        async with self._lock:
            await self._idle.wait()
            yield


class KeyedLocks:
    """One :class:`anyio.Lock` per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock for ``key``."""
        lock, users = self._locks.get(key, (anyio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
