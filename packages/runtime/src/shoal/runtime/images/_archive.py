"""Importing images from disk: an OCI image layout (a directory or a tar of one) or ``docker save``.

Both formats are read through one small interface, :class:`_Files` (named
files in a directory or members of a tar), and every blob they hold is copied
into the cache through :meth:`BlobStore.ingest`, hashed on the way:

* **OCI image layout** (``oci-layout`` + ``index.json`` + ``blobs/sha256/``):
  each entry of ``index.json`` is an image; a nested index is resolved to the
  host platform. Its name comes from the ``io.containerd.image.name``
  annotation or ``org.opencontainers.image.ref.name``; a bare tag there
  (``latest``, as umoci and skopeo write it) is prefixed with the layout's
  directory name, so ``.../busybox`` tagged ``latest`` imports as
  ``busybox:latest``.
* **docker save** (``manifest.json`` listing ``Config``, ``RepoTags`` and
  ``Layers``): there is no manifest blob, so Shoal writes an OCI manifest for
  it (deterministic JSON, so importing the same archive twice gives the same
  digest). When a tar holds both ``manifest.json`` and ``index.json`` (Docker
  25 and later), ``manifest.json`` wins for its ``RepoTags``.

Passing ``reference`` picks the image it names (or the only one) and stores
it under that name. Anything that is neither format is "not an image".
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from shoal.interfaces import ImageError, InvalidInput

from ._blobs import BlobStore
from ._manifest import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    parse_index_or_manifest,
    select_platform,
)
from ._reference import ImageReference, parse_reference

__all__ = ["ArchiveImage", "read_archive"]

_REF_NAME = "org.opencontainers.image.ref.name"
_FULL_NAME = "io.containerd.image.name"
_Entry = TypeVar("_Entry")
_HEX = re.compile(r"(?:^|/)(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?$")


@dataclass(frozen=True)
class ArchiveImage:
    """One image found in an archive, its blobs already in the cache."""

    names: list[str]
    """Canonical references to record it under."""
    digest: str
    """Digest of its manifest (cached)."""
    index_digest: str | None
    """Digest of the nested index it was chosen from, if any (cached)."""
    source: Literal["oci-layout", "docker-archive"]
    """Which format it came from."""


def read_archive(
    path: Path, blobs: BlobStore, reference: ImageReference | None
) -> list[ArchiveImage]:
    """Copy the images of an OCI layout or docker-save archive into ``blobs``.

    Args:
        path: A layout directory, or a tar file (optionally compressed).
        blobs: The cache to copy blobs into.
        reference: Name to import under; selects one image if there are several.

    Raises:
        ImageError: ``not an image: ...`` for anything else, or a blob that
            fails verification.
    """
    with _open(path) as files:
        if files.exists("manifest.json"):
            return _DockerArchive(files, blobs).read(reference)
        if files.exists("index.json"):
            return _OciLayout(files, blobs, path).read(reference)
    kind = "directory" if path.is_dir() else "tar archive"
    raise _not_an_image(path, f"a {kind} without index.json (OCI layout) or manifest.json")


class _Files:
    """Named files inside a directory or a tar archive."""

    def __init__(self, path: Path, tar: tarfile.TarFile | None) -> None:
        self.path = path
        self.tar = tar
        self.members = (
            {m.name.removeprefix("./"): m for m in tar.getmembers()} if tar is not None else {}
        )

    def exists(self, name: str) -> bool:
        if self.tar is not None:
            return name in self.members
        return (self.path / name).is_file()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if ".." in name.split("/") or name.startswith("/"):
            raise _not_an_image(self.path, f"it refers to {name!r}, outside itself")
        if self.tar is not None:
            member = self.members.get(name.removeprefix("./"))
            reader = self.tar.extractfile(member) if member is not None else None
            if reader is None:
                raise _not_an_image(self.path, f"it lacks {name}, which it refers to")
            with reader:
                yield reader
            return
        try:
            with (self.path / name).open("rb") as reader:
                yield reader
        except FileNotFoundError:
            raise _not_an_image(self.path, f"it lacks {name}, which it refers to") from None

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        with self.open(name) as reader:
            data = reader.read(limit + 1)
        if len(data) > limit:
            raise _not_an_image(self.path, f"{name} is implausibly large")
        return data

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as exc:
            raise _not_an_image(self.path, f"{name} is not JSON ({exc})") from exc


def _one_line(exc: BaseException) -> str:
    """Return an exception's message on one line (tarfile's span several)."""
    return " ".join(str(exc).split())


@contextmanager
def _open(path: Path) -> Iterator[_Files]:
    if path.is_dir():
        yield _Files(path, None)
        return
    if not path.exists():
        raise _not_an_image(path, "no such file or directory")
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _not_an_image(
            path,
            f"neither an OCI image layout directory nor a docker save tarball ({_one_line(exc)})",
        ) from exc
    with tar:
        try:
            files = _Files(path, tar)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise _not_an_image(path, f"a damaged tar archive ({_one_line(exc)})") from exc
        yield files


class _OciLayout:
    def __init__(self, files: _Files, blobs: BlobStore, path: Path) -> None:
        self.files = files
        self.blobs = blobs
        self.where = str(path)
        stem = path.name.removesuffix(".gz").removesuffix(".tar").lower()
        self.repository = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("._-") or "image"

    def read(self, reference: ImageReference | None) -> list[ArchiveImage]:
        raw = self.files.read("index.json")
        index = parse_index_or_manifest(raw, "", source=f"index.json of {self.where}")
        if not isinstance(index, Index):
            raise _not_an_image(self.files.path, "its index.json is not an image index")
        entries = [(entry, self.names(entry)) for entry in index.manifests]
        chosen = _choose(entries, reference, self.files.path)
        return [self.ingest(entry, names) for entry, names in chosen]

    def names(self, entry: Descriptor) -> list[str]:
        name = entry.annotations.get(_FULL_NAME) or entry.annotations.get(_REF_NAME)
        if not name:
            return []
        if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", name):
            name = f"{self.repository}:{name}"
        return [_canonical(name, self.files.path)]

    def ingest(self, entry: Descriptor, names: list[str]) -> ArchiveImage:
        index_digest = None
        document = self.blob(entry)
        parsed = parse_index_or_manifest(document, entry.media_type, source=self.where)
        if isinstance(parsed, Index):
            index_digest = entry.digest
            entry = select_platform(parsed, source=f"{self.where} ({names or entry.digest})")
            parsed = parse_index_or_manifest(self.blob(entry), entry.media_type, source=self.where)
        if not isinstance(parsed, Manifest):
            raise _not_an_image(self.files.path, f"{entry.digest} is not an image manifest")
        for descriptor in [parsed.config, *parsed.layers]:
            self.blob(descriptor, keep=False)
        return ArchiveImage(names, entry.digest, index_digest, "oci-layout")

    def blob(self, descriptor: Descriptor, *, keep: bool = True) -> bytes:
        name = f"blobs/sha256/{descriptor.digest.removeprefix('sha256:')}"
        if not self.blobs.has(descriptor.digest):
            with self.files.open(name) as reader:
                self.blobs.ingest(reader, expected=descriptor.digest, source=self.where)
        return self.blobs.read(descriptor.digest, source=self.where) if keep else b""


class _DockerArchive:
    def __init__(self, files: _Files, blobs: BlobStore) -> None:
        self.files = files
        self.blobs = blobs
        self.where = str(files.path)

    def read(self, reference: ImageReference | None) -> list[ArchiveImage]:
        manifest = self.files.json("manifest.json")
        if not isinstance(manifest, list) or not all(isinstance(e, dict) for e in manifest):
            raise _not_an_image(self.files.path, "manifest.json is not a docker save manifest")
        entries = [
            (entry, [_canonical(t, self.files.path) for t in entry.get("RepoTags") or []])
            for entry in manifest
        ]
        chosen = _choose(entries, reference, self.files.path)
        return [self.ingest(entry, names) for entry, names in chosen]

    def ingest(self, entry: dict[str, Any], names: list[str]) -> ArchiveImage:
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise _not_an_image(self.files.path, "manifest.json lacks Config or Layers")
        config = self.copy(config_name, OCI_CONFIG)
        layers = [self.copy(str(name), OCI_LAYER_TAR) for name in layer_names]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers,
        }
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        return ArchiveImage(names, self.blobs.add_bytes(data), None, "docker-archive")

    def copy(self, name: str, media_type: str) -> dict[str, Any]:
        match = _HEX.search(name)
        expected = f"sha256:{match.group(1)}" if match else None
        with self.files.open(name) as reader:
            head = reader.read(2)
        if head == b"\x1f\x8b" and media_type == OCI_LAYER_TAR:
            media_type += "+gzip"
        with self.files.open(name) as reader:
            digest, size = self.blobs.ingest(reader, expected=expected, source=self.where)
        return {"mediaType": media_type, "digest": digest, "size": size}


def _choose(
    entries: list[tuple[_Entry, list[str]]], reference: ImageReference | None, path: Path
) -> list[tuple[_Entry, list[str]]]:
    """Pick what to import: everything named, or the image ``reference`` names."""
    if reference is None:
        named = [(entry, names) for entry, names in entries if names]
        if not named:
            raise _unnamed(path)
        return named
    wanted = str(reference)
    matches = [entry for entry, names in entries if wanted in names]
    if not matches and reference.tag:
        matches = [e for e, names in entries if any(n.endswith(f":{reference.tag}") for n in names)]
    if len(matches) == 1:
        return [(matches[0], [wanted])]
    if len(entries) == 1:
        return [(entries[0][0], [wanted])]
    offered = sorted({name for _, names in entries for name in names})
    raise ImageError(
        f"{path} holds {len(entries)} images ({', '.join(offered) or 'unnamed'}) and "
        f"{wanted} does not pick one; import one of those names",
        path=str(path),
        offered=offered,
    )


def _canonical(name: str, path: Path) -> str:
    try:
        return str(parse_reference(name))
    except InvalidInput as exc:
        raise _not_an_image(path, f"it names an image {name!r}: {exc.message}") from exc


def _unnamed(path: Path) -> ImageError:
    return ImageError(
        f"{path} does not name its image; import it with a reference (e.g. busybox:latest)",
        path=str(path),
    )


def _not_an_image(path: Path, reason: str) -> ImageError:
    return ImageError(f"not an image: {path}: {reason}", path=str(path))
