"""CriImages: the node's images in containerd's own store, through CRI (and ctr for imports)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.interfaces import ImageError, NotFound
from shoal.runtime.cri import CriClient, CriImages
from tests.runtime.cri.support import IMAGE, MISSING_IMAGE, PrivateContainerd
from tests.runtime.images.fake_registry import FakeRegistry, serving

pytestmark = pytest.mark.anyio


@pytest.fixture
async def images(private_containerd: PrivateContainerd) -> AsyncIterator[CriImages]:
    client = CriClient(private_containerd.endpoint)
    try:
        yield CriImages(client)
    finally:
        await client.aclose()


def write_layout(directory: Path, tag: str) -> str:
    """Write an OCI layout of a one-file image of its own (a fresh config digest); return it."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("hello")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = layer.getvalue()
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(gzip.compress(raw), "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    descriptor = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [descriptor]})
    )
    return str(descriptor["digest"])


async def test_list_shows_the_imported_test_image_with_its_digest(images: CriImages) -> None:
    listed = {info.reference: info for info in await images.list()}
    assert IMAGE in listed
    assert listed[IMAGE].digest.startswith("sha256:")
    assert listed[IMAGE].size > 0
    assert (await images.ensure(IMAGE)).digest == listed[IMAGE].digest


@pytest.mark.parametrize("short", [False, True])
async def test_an_oci_layout_is_imported_through_ctr_then_removed(
    images: CriImages, tmp_path: Path, short: bool
) -> None:
    name = f"imported-{uuid.uuid4().hex[:8]}"
    reference = f"{name}:1" if short else f"shoal.local/{name}:1"
    stored = f"docker.io/library/{name}:1" if short else reference  # as CRI resolves it
    write_layout(tmp_path / "layout", "1")
    imported = await images.import_path(tmp_path / "layout", reference)
    assert [info.reference for info in imported] == [reference]
    assert stored in {info.reference for info in await images.list()}
    assert (await images.ensure(reference)).digest == imported[0].digest  # found, not pulled

    removed = await images.remove(reference)
    assert stored in {info.reference for info in removed}
    assert stored not in {info.reference for info in await images.list()}
    with pytest.raises(NotFound, match="no image"):
        await images.remove(reference)
    assert await images.gc() == 0  # containerd collects the content itself


async def test_what_is_not_an_image_is_refused_on_import(images: CriImages, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        await images.import_path(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="not an OCI image layout"):
        await images.import_path(tmp_path / "empty")


async def test_a_pull_the_registry_refuses_is_an_image_error_naming_it(images: CriImages) -> None:
    with pytest.raises(ImageError, match=MISSING_IMAGE.replace(".", r"\.")):
        await images.pull(MISSING_IMAGE)


async def test_a_pull_goes_with_the_registrys_credentials(
    images: CriImages, tmp_path: Path
) -> None:
    write_layout(tmp_path / "layout", "1")  # content of its own: every blob is fetched
    registry = FakeRegistry(layout=tmp_path / "layout", basic=("shoal", "s3cret"))
    async with serving(registry):
        reference = f"{registry.host}/pulled:1"  # loopback: containerd speaks plain HTTP
        with pytest.raises(ImageError, match="401"):
            await images.pull(reference)
        credentials = {registry.host: ("shoal", "s3cret")}
        pulled = await images.pull(reference, credentials=credentials)
        assert pulled.reference == reference
        assert registry.blob_gets()
        assert all(seen.authorization for seen in registry.blob_gets())
        assert (await images.ensure(reference)).digest == pulled.digest
        await images.remove(reference)
