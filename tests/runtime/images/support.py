"""Helpers for image tests: crafted layouts, docker-save archives, overlay views, a real registry.

* :func:`tar_layer` and :func:`write_layout` build small OCI layouts whose
  layers hold exactly the members a test needs (whiteouts, traversal
  attempts, odd modes), without going through the busybox script;
* :func:`docker_save` turns a layout into a ``docker save`` tarball
  (``manifest.json``, the config as ``<hex>.json``, uncompressed
  ``<id>/layer.tar``), the way Docker wrote them before version 25;
* :func:`merged_view` mounts a read-only overlay of prepared layers, so a
  test looks at the root filesystem a container would get;
* :class:`LoopbackRegistry` runs Debian's ``docker-registry`` on 127.0.0.1
  and pushes layouts into it with ``skopeo``; the OCI runtime tests can use
  it as well.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.build_busybox_image import host_goarch

WAIT = 30.0
"""Upper bound, in seconds, on waiting for a subprocess."""


def member(name: str, data: bytes = b"", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    """Return a tar member (regular file unless ``type`` says otherwise) and its data."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    if info.type != tarfile.REGTYPE:
        info.size = 0
    return info, data


def tar_layer(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """Return an uncompressed layer tar holding ``members`` in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def write_layout(
    out: Path,
    layers: list[bytes],
    *,
    tag: str = "latest",
    compress: bool = True,
    architecture: str | None = None,
    layer_blobs: list[bytes] | None = None,
) -> str:
    """Write an OCI layout with ``layers`` (uncompressed tars, bottom first); return its digest.

    ``layer_blobs``, if given, are stored as the layer blobs instead of the
    (compressed) ``layers``, whose digests stay the config's diff ids: a way
    to write an image whose config lies, or whose layers use another format.
    """
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    stored = layer_blobs or [
        gzip.compress(layer, mtime=0) if compress else layer for layer in layers
    ]
    descriptors = [put(blob, layer_type) for blob in stored]
    config = {
        "architecture": architecture or host_goarch(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": put(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": descriptors,
    }
    entry = put(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [entry]}
    (out / "index.json").write_text(json.dumps(index))
    return str(entry["digest"])


def docker_save(layout: Path, out: Path, repo_tags: list[str], *, tag: str = "latest") -> Path:
    """Write a ``docker save`` tarball of the image tagged ``tag`` in ``layout``."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    entry = next(
        e
        for e in index["manifests"]
        if e["annotations"]["org.opencontainers.image.ref.name"] == tag
    )
    manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_bytes())
    config_hex = manifest["config"]["digest"].removeprefix("sha256:")
    files: dict[str, bytes] = {f"{config_hex}.json": (blobs / config_hex).read_bytes()}
    layer_names = []
    for number, layer in enumerate(manifest["layers"]):
        data = (blobs / layer["digest"].removeprefix("sha256:")).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        name = f"{number:064x}/layer.tar"  # a v1 layer id, which is not the layer's digest
        files[name] = data
        layer_names.append(name)
    saved = [{"Config": f"{config_hex}.json", "RepoTags": repo_tags, "Layers": layer_names}]
    files["manifest.json"] = json.dumps(saved).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@contextmanager
def merged_view(layers: list[Path], mountpoint: Path) -> Iterator[Path]:
    """Mount the layers (bottom first) as a read-only overlay at ``mountpoint``."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    lower = ":".join(str(layer) for layer in reversed(layers))
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


class LoopbackRegistry:
    """Debian's ``docker-registry`` on 127.0.0.1, with ``skopeo`` to push layouts into it.

    ``address`` puts it on another address of this host; ``tls`` (certificate
    and key PEM files) makes it serve HTTPS.
    """

    def __init__(
        self, root: Path, *, address: str = "127.0.0.1", tls: tuple[Path, Path] | None = None
    ) -> None:
        self.root = root
        self.host = f"{address}:{_free_port(address)}"
        self.tls = tls
        self._ready = threading.Event()
        self._log: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._watcher: threading.Thread | None = None

    @staticmethod
    def missing() -> str | None:
        """Say which tool is missing, if any."""
        for tool in ("docker-registry", "skopeo"):
            if shutil.which(tool) is None:
                return f"{tool} is missing: run scripts/system-deps.sh"
        return None

    def start(self) -> None:
        """Start the registry and return once it listens."""
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            f"http:\n  addr: {self.host}\n  secret: shoal-tests\n"
            + (
                ""
                if self.tls is None
                else f"  tls:\n    certificate: {self.tls[0]}\n    key: {self.tls[1]}\n"
            )
        )
        self._process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        if not self._ready.wait(WAIT):
            self.stop()
            raise RuntimeError("docker-registry did not start:\n" + "".join(self._log[-20:]))

    def _watch(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        with self._process.stderr:
            for line in self._process.stderr:  # draining it, so the registry never blocks
                self._log.append(line)
                if f"listening on {self.host}" in line:
                    self._ready.set()

    def push(self, layout: Path, tag: str, repository: str = "busybox") -> str:
        """Push ``layout:tag`` as ``repository:tag``; return the pushed reference."""
        reference = f"{self.host}/{repository}:{tag}"
        subprocess.run(
            [
                *("skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"),
                *(f"oci:{layout}:{tag}", f"docker://{reference}"),
            ],
            check=True,
            capture_output=True,
            timeout=WAIT,
        )
        return reference

    def stop(self) -> None:
        """Stop the registry."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._watcher is not None:
            self._watcher.join(WAIT)
