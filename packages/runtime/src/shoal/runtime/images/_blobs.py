"""The content-addressed blob cache: ``root/blobs/sha256/<hex>``, shared by every image.

A blob enters the cache only through a rename, and only after the bytes it
holds hashed to the digest it is stored under, so a file under ``blobs/`` is
always complete and correct. Bytes in flight live in ``root/incoming/``:

* a registry download appends to ``incoming/<hex>.partial``
  (:class:`PartialBlob`). The file survives an interrupted pull, and the next
  attempt resumes from its length with an HTTP Range request. The hash covers
  the prefix already on disk plus everything appended, so the whole blob is
  verified at the end however many attempts it took.
* an import streams a file through :meth:`BlobStore.ingest` into
  ``incoming/import-<random>``, and the digest is whatever it hashes to
  (checked against an expected digest when the source names one).

Bytes that fail verification are deleted on the spot; the error names the
digest. Everything here is blocking file I/O: callers run it in a worker
thread (``anyio.to_thread``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from shoal.interfaces import ImageError

__all__ = [
    "BlobStore",
    "MissingBlob",
    "PartialBlob",
    "corrupt_blob_error",
    "remove_path",
    "tree_size",
]

_CHUNK = 1 << 20


class MissingBlob(ImageError):
    """A blob an image needs is not in the cache (deleted, or dropped as corrupt)."""


def corrupt_blob_error(digest: str, actual: str, source: str) -> ImageError:
    """The error for bytes that do not hash to the digest they were asked for by."""
    return ImageError(
        f"blob {digest} from {source} failed verification (its content hashes to {actual}); "
        "the corrupt copy was deleted. Check the source's storage, or re-push/re-export the image",
        digest=digest,
        actual=actual,
        source=source,
    )


class BlobStore:
    """Verified blobs by digest, plus the partial and temporary files that become them."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "blobs" / "sha256"
        self.incoming = root / "incoming"

    def setup(self) -> None:
        """Create the directories."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Return where the blob ``digest`` lives (whether or not it is there)."""
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise ImageError(f"unsupported digest {digest!r}: Shoal stores sha256 blobs only")
        return self.directory / hexdigest

    def has(self, digest: str) -> bool:
        """Return whether the blob is cached."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """Return the blob's size in bytes (0 if it is not cached)."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def digests(self) -> Iterator[str]:
        """Yield the digest of every cached blob."""
        for entry in self.directory.iterdir():
            yield f"sha256:{entry.name}"

    def read(self, digest: str, *, source: str) -> bytes:
        """Return a small cached blob (manifest, config), re-verified as it is read.

        Raises:
            ImageError: it is missing, or no longer matches its digest (it is deleted).
        """
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise MissingBlob(
                f"blob {digest} of {source} is missing from the image store; "
                "pull or import the image again",
                digest=digest,
            ) from None
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            self.delete(digest)
            raise corrupt_blob_error(digest, actual, "the local image store")
        return data

    def delete(self, digest: str) -> int:
        """Delete a cached blob; return the bytes freed."""
        path = self.path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def partial(self, digest: str, size: int, *, source: str) -> PartialBlob:
        """Return the in-progress download of ``digest`` (resuming any left by an earlier try)."""
        return PartialBlob(self, digest, size, source=source)

    def add_bytes(self, data: bytes) -> str:
        """Cache ``data`` (a manifest Shoal wrote, or one already verified); return its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            temp = self.incoming / f"bytes-{secrets.token_hex(8)}"
            temp.write_bytes(data)
            os.replace(temp, self.path(digest))
        return digest

    def ingest(self, reader: IO[bytes], *, expected: str | None, source: str) -> tuple[str, int]:
        """Copy a stream into the cache, hashing it; return its digest and size.

        Args:
            reader: The bytes, read to the end.
            expected: The digest the source claims for them, if any.
            source: Where they come from, for error messages.

        Raises:
            ImageError: they do not hash to ``expected`` (nothing is cached).
        """
        temp = self.incoming / f"import-{secrets.token_hex(8)}"
        hasher = hashlib.sha256()
        size = 0
        try:
            with temp.open("wb") as out:
                while chunk := reader.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise corrupt_blob_error(expected, digest, source)
            if self.has(digest):
                temp.unlink()
            else:
                os.replace(temp, self.path(digest))
        finally:
            temp.unlink(missing_ok=True)
        return digest, size

    def sweep_incoming(self) -> int:
        """Delete every partial download and temporary file; return the bytes freed.

        Only for ``gc``, which runs while no pull or import is in progress.
        """
        return sum(remove_path(entry) for entry in list(self.incoming.iterdir()))


class PartialBlob:
    """A blob being downloaded into ``incoming/<hex>.partial``, hashed as it grows."""

    def __init__(self, store: BlobStore, digest: str, size: int, *, source: str) -> None:
        self.store = store
        self.digest = digest
        self.expected_size = size
        self.source = source
        self.path = store.incoming / f"{store.path(digest).name}.partial"
        self._hasher = hashlib.sha256()
        self._file: BinaryIO | None = None
        self.offset = 0

    def open(self) -> int:
        """Open for appending, hashing what an earlier attempt left; return the resume offset."""
        self._hasher = hashlib.sha256()
        self._file = self.path.open("a+b")
        self._file.seek(0)
        while chunk := self._file.read(_CHUNK):
            self._hasher.update(chunk)
        self.offset = self._file.tell()
        if self.offset > self.expected_size:
            self.restart()
        return self.offset

    def restart(self) -> None:
        """Throw away what was downloaded so far (the server will not resume it)."""
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._hasher = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        """Append bytes.

        Raises:
            ImageError: the blob grew past its declared size (the partial is deleted).
        """
        assert self._file is not None
        if self.offset + len(data) > self.expected_size:
            self.discard()
            raise ImageError(
                f"blob {self.digest} from {self.source} is longer than the {self.expected_size} "
                "bytes its manifest declares; the download was deleted",
                digest=self.digest,
            )
        self._file.write(data)
        self._hasher.update(data)
        self.offset += len(data)

    def close(self) -> None:
        """Close the file, keeping it for a later resume."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def commit(self) -> None:
        """Verify the whole blob and move it into the cache.

        Raises:
            ImageError: it does not hash to its digest (the partial is deleted).
        """
        self.close()
        actual = "sha256:" + self._hasher.hexdigest()
        if actual != self.digest:
            self.discard()
            raise corrupt_blob_error(self.digest, actual, self.source)
        os.replace(self.path, self.store.path(self.digest))

    def discard(self) -> None:
        """Close and delete the partial file."""
        self.close()
        self.path.unlink(missing_ok=True)


def remove_path(path: Path) -> int:
    """Delete a file or directory tree (never following symlinks); return the bytes it held."""
    try:
        if path.is_dir() and not path.is_symlink():
            size = tree_size(path)
            shutil.rmtree(path)
            return size
        size = path.lstat().st_size
        path.unlink()
        return size
    except FileNotFoundError:
        return 0


def tree_size(path: Path) -> int:
    """Return the bytes of the regular files under ``path``, each inode counted once."""
    seen: set[int] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode) and info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_size
    return total
