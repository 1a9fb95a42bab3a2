"""Unpack one layer blob into a directory that overlayfs can use as a lower layer.

Each layer is unpacked on its own, once, into ``root/layers/<diff id hex>/``
and shared by every image that has it; a container's root filesystem is an
overlay of those directories. The layer tar's OCI whiteouts therefore become
overlayfs whiteouts (this needs root, as the runtime does):

* ``dir/.wh.name`` (delete ``name`` from the layers below) becomes a character
  device 0/0 named ``dir/name``;
* ``dir/.wh..wh..opq`` (hide everything below ``dir``) becomes the xattr
  ``trusted.overlay.opaque=y`` on ``dir``; a directory that replaces a
  whiteout in the same layer is made opaque the same way.

Safety: members are extracted one by one, by hand, never through
``TarFile.extract``. A member with an absolute path or a ``..`` component, a
path that goes through a symlink, or a hard link to something outside the
layer fails the whole layer with :class:`~shoal.interfaces.ImageError`.
Symlinks themselves are created as written (``/bin/sh -> busybox`` is meant
to be read inside the container) but never followed while unpacking. Owners,
modes (setuid included), times and the ``security.capability`` and ``user.*``
xattrs are kept; ``trusted.*`` xattrs from a tar are dropped, since
``trusted.overlay.*`` ones could redirect the overlay outside the layer.

The blob is hashed while it is read (its digest) and after decompression
(its diff id), so a blob that rotted on disk is caught and deleted, and a
config that lies about its layers is refused. Everything goes into a
temporary directory that is renamed into place at the end: a crash never
leaves a half layer that looks complete.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from pathlib import Path
from typing import IO, cast

from shoal.interfaces import ImageError

from ._blobs import corrupt_blob_error

__all__ = ["OPAQUE_XATTR", "unpack_layer"]

OPAQUE_XATTR = "trusted.overlay.opaque"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_KEPT_XATTRS = ("security.capability", "user.")
_ROOT = os.geteuid() == 0


class _HashingReader:
    """A read-only stream that hashes everything read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.hasher.update(data)
        return data

    def as_io(self) -> IO[bytes]:
        """Return self typed as a file: gzip and tarfile (stream mode) only call ``read``."""
        return cast(IO[bytes], self)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class LayerUnsafe(ImageError):
    """A layer member tries to write outside the layer (kept private; callers see ImageError)."""


def unpack_layer(blob: Path, target: Path, *, digest: str, diff_id: str | None) -> None:
    """Unpack the layer blob ``blob`` (digest ``digest``) into ``target``, atomically.

    Args:
        blob: The cached layer blob: a tar, gzip-compressed or not.
        target: Directory to create; must not exist yet.
        digest: The blob's digest; the blob is deleted if its bytes no longer match.
        diff_id: The uncompressed digest the image config declares, checked if given.

    Raises:
        ImageError: corrupt blob, unsupported compression, not a tar, diff id
            mismatch, an unsafe member, or a filesystem that cannot hold it.
    """
    temp = target.parent / f".tmp-{target.name}-{secrets.token_hex(4)}"
    temp.mkdir(mode=0o755, parents=True)
    try:
        with blob.open("rb") as raw:
            compressed = _HashingReader(raw)
            try:
                uncompressed = _HashingReader(_decompressor(raw, compressed, digest))
                with tarfile.open(fileobj=uncompressed.as_io(), mode="r|") as tar:
                    _Extractor(temp, digest).run(tar)
                uncompressed.drain()
                compressed.drain()
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                compressed.drain()
                if compressed.digest != digest:
                    blob.unlink(missing_ok=True)
                    raise corrupt_blob_error(digest, compressed.digest, "the image store") from exc
                raise ImageError(
                    f"layer {digest} is not a valid tar archive ({exc}); the image is broken: "
                    "rebuild or re-export it",
                    digest=digest,
                ) from exc
        if compressed.digest != digest:
            blob.unlink(missing_ok=True)
            raise corrupt_blob_error(digest, compressed.digest, "the image store")
        if diff_id is not None and uncompressed.digest != diff_id:
            raise ImageError(
                f"layer {digest} unpacks to {uncompressed.digest}, but the image config says "
                f"{diff_id}; the image is inconsistent: rebuild or re-export it",
                digest=digest,
                diff_id=diff_id,
            )
        try:
            temp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(temp)  # another task unpacked the same layer first
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        denied = exc.errno in (errno.EPERM, errno.EACCES)
        hint = " (unpacking layers needs root)" if denied and not _ROOT else ""
        raise ImageError(f"cannot unpack layer {digest}: {exc}{hint}", digest=digest) from exc
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _decompressor(raw: IO[bytes], compressed: _HashingReader, digest: str) -> IO[bytes]:
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=compressed.as_io(), mode="rb"))
    if magic == b"\x28\xb5\x2f\xfd":
        raise ImageError(
            f"layer {digest} is compressed with zstd, which this Python cannot decompress "
            "(it needs Python 3.14 or the zstandard package); re-push the image with gzip layers",
            digest=digest,
        )
    return compressed.as_io()


class _Extractor:
    """Writes the members of one layer tar under ``root``, by hand and safely."""

    def __init__(self, root: Path, digest: str) -> None:
        self.root = root
        self.digest = digest
        self.known_dirs: set[str] = {""}
        self.dir_members: list[tuple[str, tarfile.TarInfo]] = []

    def run(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.extract(tar, member)
        # Directory owners, modes and times last, deepest first: writing into a
        # directory changes its mtime, and a read-only mode must not stop us.
        for relative, member in reversed(self.dir_members):
            self.apply_metadata(self.root / relative, member)

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.safe_parts(member.name, member.name)
        if not parts:
            return  # the layer root itself ("./")
        parent, base = "/".join(parts[:-1]), parts[-1]
        self.ensure_dir(parent, member.name)
        if base == _OPAQUE:
            os.setxattr(self.root / parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(_WHITEOUT + _WHITEOUT):
            return  # other AUFS metadata: nothing to do for overlayfs
        if base.startswith(_WHITEOUT):
            hidden = base.removeprefix(_WHITEOUT)
            if hidden in ("", ".", ".."):
                raise self.unsafe(member.name, "whiteout of nothing")
            path = self.root / parent / hidden
            self.clear(path)
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
            self.apply_metadata(path, member, mode=False)
            return
        relative = "/".join(parts)
        path = self.root / relative
        if member.isdir():
            self.make_dir(relative, member.name)
            self.dir_members.append((relative, member))
            return
        self.clear(path)
        if member.isreg():
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out, source:
                shutil.copyfileobj(source, out, 1 << 20)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            target_parts = self.safe_parts(member.linkname, member.name)
            target = self.root.joinpath(*target_parts)
            self.check_no_symlink_parents(target_parts[:-1], member.name)
            if not target_parts or not os.path.lexists(target):
                raise self.unsafe(
                    member.name, f"hard link to {member.linkname!r} outside the layer"
                )
            os.link(target, path, follow_symlinks=False)
            return  # a hard link shares its target's metadata
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else 0
            kind = kind or stat.S_IFIFO
            os.mknod(path, 0o600 | kind, os.makedev(member.devmajor, member.devminor))
        else:
            return  # unknown member type: nothing a container could use
        self.apply_metadata(path, member)

    def safe_parts(self, name: str, member: str) -> list[str]:
        """Split a member path into components, refusing absolute paths and ``..``."""
        if name.startswith("/"):
            raise self.unsafe(member, "absolute path")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise self.unsafe(member, "path contains '..'")
        return parts

    def ensure_dir(self, relative: str, member: str) -> None:
        """Make sure ``relative`` is a real directory in the layer (creating parents 0755)."""
        if relative in self.known_dirs:
            return
        parent = relative.rpartition("/")[0]
        self.ensure_dir(parent, member)
        self.make_dir(relative, member)

    def make_dir(self, relative: str, member: str) -> None:
        path = self.root / relative
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
        else:
            if stat.S_ISLNK(info.st_mode):
                raise self.unsafe(member, f"path goes through the symlink {relative!r}")
            if not stat.S_ISDIR(info.st_mode):
                whiteout = stat.S_ISCHR(info.st_mode) and info.st_rdev == 0
                self.clear(path)
                os.mkdir(path, 0o755)
                if whiteout:  # deleted and re-created: hide the lower layers' contents
                    os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
        self.known_dirs.add(relative)

    def check_no_symlink_parents(self, parts: list[str], member: str) -> None:
        for depth in range(1, len(parts) + 1):
            relative = "/".join(parts[:depth])
            if relative not in self.known_dirs and os.path.islink(self.root / relative):
                raise self.unsafe(member, f"hard link through the symlink {relative!r}")

    def clear(self, path: Path) -> None:
        """Remove whatever an earlier member of this layer put at ``path``."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path)
            self.known_dirs = {""}
        else:
            os.unlink(path)

    def apply_metadata(self, path: Path, member: tarfile.TarInfo, *, mode: bool = True) -> None:
        if _ROOT:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        if member.issym():
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
            return
        for key, value in _xattrs(member).items():
            os.setxattr(path, key, value, follow_symlinks=False)
        if mode:  # after chown, which clears setuid bits; path is never a symlink here
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def unsafe(self, member: str, reason: str) -> LayerUnsafe:
        return LayerUnsafe(
            f"layer {self.digest} was refused as unsafe: member {member!r}: {reason}",
            digest=self.digest,
            member=member,
        )


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        name = key.removeprefix("SCHILY.xattr.")
        if name != key and name.startswith(_KEPT_XATTRS):
            found[name] = value.encode("utf-8", "surrogateescape")
    return found
