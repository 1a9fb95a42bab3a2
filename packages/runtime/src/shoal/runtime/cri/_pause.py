"""The pod sandbox ("pause") image, built offline from the host's static busybox.

containerd's CRI plugin starts one sandbox container per pod from its
``sandbox_image`` and pulls it if it is missing; on a machine that cannot
reach a registry it must be imported instead. :func:`write_pause_archive`
writes that image as an OCI archive (the tar of an OCI image layout) that
``ctr -n k8s.io images import`` takes: one layer holding ``/bin/busybox``, and
an entrypoint that sleeps forever. containerd stops a sandbox with SIGKILL
and each container has its own PID namespace, so the process needs neither
a signal handler nor to reap children: a sleeping busybox is a pause process.

Everything is deterministic (sorted entries, time 0, gzip without a
timestamp), so building it twice gives the same digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import shutil
import tarfile
from pathlib import Path

__all__ = ["PAUSE_IMAGE", "find_static_busybox", "write_pause_archive"]

PAUSE_IMAGE = "shoal.local/pause:1"
"""The reference Shoal's containerd config names as its ``sandbox_image``."""

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_EPOCH = "1970-01-01T00:00:00Z"
_FOREVER = "2147483647"


def find_static_busybox() -> Path:
    """Return Debian's static busybox.

    Raises:
        FileNotFoundError: it is not installed (``apt-get install busybox-static``).

    """
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("busybox")
    if found is None:
        raise FileNotFoundError("busybox not found: apt-get install busybox-static")
    return Path(found)


def write_pause_archive(path: Path, reference: str = PAUSE_IMAGE) -> str:
    """Write the pause image as an OCI archive at ``path``; return its manifest digest."""
    busybox = find_static_busybox().read_bytes()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin/", "dev/", "etc/", "proc/", "sys/"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
    raw = layer.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as out:
        out.write(raw)
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    architecture = _GOARCH.get(platform.machine(), platform.machine())
    config = {
        "created": _EPOCH,
        "architecture": architecture,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", _FOREVER], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(_canonical(config), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(compressed.getvalue(), "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    descriptor = blob(_canonical(manifest), "application/vnd.oci.image.manifest.v1+json")
    tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else "latest"
    descriptor["annotations"] = {
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": tag,
    }
    descriptor["platform"] = {"architecture": architecture, "os": "linux"}
    index = {"schemaVersion": 2, "manifests": [descriptor]}
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": _canonical(index),
        **{f"blobs/sha256/{d.removeprefix('sha256:')}": data for d, data in sorted(blobs.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return str(descriptor["digest"])


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
