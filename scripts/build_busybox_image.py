"""Build a busybox OCI image layout from Debian's busybox-static, with no network.

Usage::

    uv run python scripts/build_busybox_image.py OUT_DIR [TAG]

writes (or adds TAG to) an OCI image layout in OUT_DIR: ``oci-layout``,
``index.json`` (the manifest annotated ``org.opencontainers.image.ref.name:
TAG``, default ``latest``) and ``blobs/sha256/``. Push it with
``skopeo copy oci:OUT_DIR:TAG docker://HOST:PORT/busybox:TAG`` or import it
with ``shoal images import OUT_DIR``.

The image has two gzip layers so that multi-layer unpacking and whiteouts are
exercised by anything that runs it:

1. the root filesystem: ``/bin/busybox`` and a symlink for every applet
   (``busybox --list``), ``/etc/passwd`` and ``/etc/group`` (root, nobody),
   ``/tmp``, ``/var/www/index.html`` for ``httpd``, plus ``/etc/motd`` and
   ``/var/lib/shoal/stale``, which the second layer takes away again;
2. a whiteout of ``/etc/motd``, an opaque ``/var/lib/shoal/`` holding only
   ``fresh``, and ``/etc/shoal-image``.

Its config runs ``sh`` with ``PATH=/bin``. Everything is deterministic (sorted
entries, owner root, time 0, gzip without a timestamp), so building twice on
one machine gives the same digests, and caches keyed by digest work. Only the
standard library is used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

WHITED_OUT = "etc/motd"
"""A file of the first layer that the second layer deletes with a whiteout."""
HIDDEN_BY_OPAQUE = "var/lib/shoal/stale"
"""A file of the first layer hidden by the second layer's opaque directory."""
ADDED_IN_OPAQUE = "var/lib/shoal/fresh"
"""The file the opaque directory holds."""
INDEX_HTML = b"<h1>hello from a busybox built by Shoal</h1>\n"

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}
_EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class BuiltImage:
    """What was written: the layout and the digests in it."""

    layout: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]
    diff_ids: list[str]


def host_goarch() -> str:
    """Return this machine's architecture as OCI (GOARCH) spells it."""
    return _GOARCH.get(platform.machine(), platform.machine())


def find_busybox() -> Path:
    """Return the static busybox binary (Debian's busybox-static)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("busybox")
    if found is None:
        raise SystemExit("busybox not found: apt-get install busybox-static")
    return Path(found)


def build_busybox_layout(
    out_dir: Path,
    tag: str = "latest",
    busybox: Path | None = None,
    *,
    cmd: list[str] | None = None,
) -> BuiltImage:
    """Write the busybox image into the OCI layout ``out_dir`` under ``tag``.

    ``cmd`` replaces the image's default command (``sh``), so the same busybox
    can stand in for an image whose command a manifest does not give (as
    ``httpd -f -p 80`` stands in for nginx in the Kubernetes docs' Deployment).
    """
    busybox = busybox or find_busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    base = _Layer()
    for directory in ("bin", "dev", "etc", "proc", "sys", "var", "var/lib", "var/www"):
        base.directory(directory)
    base.directory("root", 0o700)
    base.directory("tmp", 0o1777)
    base.directory("var/lib/shoal")
    base.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in sorted(set(applets) - {"busybox"}):
        base.symlink(f"bin/{applet}", "busybox")
    base.file(
        "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    base.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    base.file(WHITED_OUT, b"deleted by the second layer\n")
    base.file(HIDDEN_BY_OPAQUE, b"hidden by the second layer's opaque directory\n")
    base.file("var/www/index.html", INDEX_HTML)

    top = _Layer()
    for directory in ("etc", "var", "var/lib", "var/lib/shoal"):
        top.directory(directory)
    top.file("etc/.wh." + WHITED_OUT.rsplit("/", 1)[1], b"")
    top.file("var/lib/shoal/.wh..wh..opq", b"")
    top.file(ADDED_IN_OPAQUE, b"added by the second layer\n")
    top.file("etc/shoal-image", b"busybox built by scripts/build_busybox_image.py\n")

    blobs = out_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layers = [layer.finish() for layer in (base, top)]
    layer_descriptors = [
        _write_blob(blobs, gz, "application/vnd.oci.image.layer.v1.tar+gzip") for gz, _ in layers
    ]
    diff_ids = [diff_id for _, diff_id in layers]
    architecture = host_goarch()
    config = {
        "created": _EPOCH,
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": _EPOCH, "created_by": "busybox-static from Debian, one symlink per applet"},
            {"created": _EPOCH, "created_by": f"whiteout /{WHITED_OUT}, opaque /var/lib/shoal"},
        ],
    }
    config_descriptor = _write_blob(
        blobs, _canonical_json(config), "application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": layer_descriptors,
    }
    manifest_descriptor = _write_blob(
        blobs, _canonical_json(manifest), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    manifest_descriptor["platform"] = {"architecture": architecture, "os": "linux"}
    _write_index(out_dir, tag, manifest_descriptor)
    return BuiltImage(
        layout=out_dir,
        tag=tag,
        manifest_digest=str(manifest_descriptor["digest"]),
        config_digest=str(config_descriptor["digest"]),
        layer_digests=[str(d["digest"]) for d in layer_descriptors],
        diff_ids=diff_ids,
    )


class _Layer:
    """A deterministic layer tar being built in memory."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> None:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)

    def directory(self, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name + "/")
        info.type, info.mode = tarfile.DIRTYPE, mode
        self._add(info)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        self._add(info, data)

    def symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self._add(info)

    def finish(self) -> tuple[bytes, str]:
        """Return the gzip-compressed tar and the digest of the uncompressed one (its diff id)."""
        self._tar.close()
        raw = self._buffer.getvalue()
        compressed = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as out:
            out.write(raw)
        return compressed.getvalue(), "sha256:" + hashlib.sha256(raw).hexdigest()


def _canonical_json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _write_blob(blobs: Path, data: bytes, media_type: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _write_index(out_dir: Path, tag: str, descriptor: dict[str, object]) -> None:
    (out_dir / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    index_path = out_dir / "index.json"
    manifests: list[dict[str, object]] = []
    if index_path.is_file():
        manifests = [
            entry
            for entry in json.loads(index_path.read_text()).get("manifests", [])
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
        ]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [*manifests, descriptor],
    }
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if len(argv) not in (2, 3) or argv[1].startswith("-"):
        usage = __doc__.split("\n\n")[2:4]  # the command, and what it writes
        print("\n\n".join(usage), file=sys.stderr)
        return 0 if argv[1:] in (["-h"], ["--help"]) else 2
    built = build_busybox_layout(Path(argv[1]), argv[2] if len(argv) == 3 else "latest")
    print(f"{built.layout}:{built.tag} {built.manifest_digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
