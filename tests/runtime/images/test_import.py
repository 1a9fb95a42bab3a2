"""Importing images from disk: OCI layouts (directories and tars) and docker-save tarballs."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import anyio
import pytest
from scripts.build_busybox_image import WHITED_OUT, BuiltImage, host_goarch

from shoal.interfaces import ImageError, InvalidInput
from shoal.runtime import ImageStore
from tests.runtime.images.support import docker_save, merged_view, write_layout

pytestmark = pytest.mark.anyio

WAIT = 30.0
REF_NAME = "org.opencontainers.image.ref.name"


async def test_import_an_oci_layout_directory_named_after_it(
    store: ImageStore, busybox: BuiltImage, tmp_path: Path
) -> None:
    with anyio.fail_after(WAIT):
        [info] = await store.import_path(busybox.layout)
        prepared = await store.prepare("busybox")
    assert info.reference == "busybox:latest"
    assert info.digest == prepared.digest == busybox.manifest_digest
    assert info.size > 1_000_000
    assert prepared.config.cmd == ["sh"]
    with merged_view(prepared.layers, tmp_path / "rootfs") as rootfs:
        assert (rootfs / "bin" / "busybox").is_file()
        assert not (rootfs / WHITED_OUT).exists()


async def test_import_under_a_reference_of_choice(store: ImageStore, busybox: BuiltImage) -> None:
    with anyio.fail_after(WAIT):
        [info] = await store.import_path(busybox.layout, "tools/box:1.0")
        prepared = await store.prepare("tools/box:1.0")
    assert info.reference == "tools/box:1.0"
    assert prepared.digest == busybox.manifest_digest


async def test_import_a_tar_of_an_oci_layout(
    store: ImageStore, busybox: BuiltImage, tmp_path: Path
) -> None:
    archive = tmp_path / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(busybox.layout, arcname=".")
    with anyio.fail_after(WAIT):
        [info] = await store.import_path(archive)
    assert info.reference == "busybox:latest"
    assert info.digest == busybox.manifest_digest


async def test_import_a_docker_save_tarball_shares_layers_with_the_layout(
    store: ImageStore, busybox: BuiltImage, tmp_path: Path
) -> None:
    archive = docker_save(busybox.layout, tmp_path / "saved.tar", ["busybox:saved", "box:2"])
    with anyio.fail_after(WAIT):
        saved = await store.import_path(archive)
        from_layout = await store.prepare((await store.import_path(busybox.layout))[0].reference)
        from_archive = await store.prepare("box:2")
    assert [i.reference for i in saved] == ["busybox:saved", "box:2"]
    assert saved[0].digest == saved[1].digest != busybox.manifest_digest  # a manifest Shoal wrote
    # Uncompressed layers from the archive have the same diff ids: unpacked once, shared.
    assert from_archive.layers == from_layout.layers
    assert from_archive.config == from_layout.config
    with anyio.fail_after(WAIT):
        again = await store.import_path(archive, "busybox:saved")
    assert again[0].digest == saved[0].digest  # deterministic manifest


async def test_a_file_that_is_not_an_image(store: ImageStore, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n" * 100)
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match=r"^not an image: .*notes\.txt"):
        await store.import_path(text)
    assert await store.list() == []


async def test_a_tar_that_is_not_an_image(store: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "hello").write_text("hi")
    archive = tmp_path / "random.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "content", arcname="content")
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match=r"not an image: .*manifest\.json"):
        await store.import_path(archive)


async def test_a_directory_that_is_not_a_layout(store: ImageStore, tmp_path: Path) -> None:
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match=r"not an image: .*index\.json"):
        await store.import_path(tmp_path)
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match=r"not an image: .*no such file"):
        await store.import_path(tmp_path / "missing")


async def test_a_layout_with_a_corrupt_blob_is_refused(
    store: ImageStore, busybox: BuiltImage, tmp_path: Path
) -> None:
    layout = tmp_path / "busybox"
    write_layout(layout, [b"\0" * 1024])
    [blob] = [
        p for p in (layout / "blobs" / "sha256").iterdir() if p.read_bytes()[:2] == b"\x1f\x8b"
    ]
    blob.write_bytes(blob.read_bytes() + b"tampered")
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match=f"blob sha256:{blob.name}"):
        await store.import_path(layout)
    assert not (store.root / "blobs" / "sha256" / blob.name).exists()
    assert list((store.root / "incoming").iterdir()) == []


async def test_unqualified_images_that_are_not_here_say_what_to_do(store: ImageStore) -> None:
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await store.prepare("busybox:1.36")
    assert "not in the local image store" in caught.value.message
    assert "import it" in caught.value.message
    assert "name a registry" in caught.value.message
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="cannot be pulled: it names no"):
        await store.pull("busybox")
    with pytest.raises(InvalidInput):
        await store.prepare("Not A Reference")


async def test_an_image_for_another_platform_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = tmp_path / "alien"
    alien = "s390x" if host_goarch() != "s390x" else "arm64"
    write_layout(layout, [b"\0" * 1024], architecture=alien)
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="built for linux/"):
        await store.import_path(layout)


async def test_a_layout_with_a_multi_platform_index_imports_the_host_image(
    store: ImageStore, busybox: BuiltImage, tmp_path: Path
) -> None:
    layout = tmp_path / "multi"
    shutil.copytree(busybox.layout, layout)
    [entry] = [
        e
        for e in json.loads((layout / "index.json").read_text())["manifests"]
        if e["annotations"][REF_NAME] == "latest"
    ]
    missing = {
        **entry,
        "digest": "sha256:" + "0" * 64,
        "platform": {"os": "linux", "architecture": "s390x"},
    }
    nested = json.dumps({"schemaVersion": 2, "manifests": [missing, entry]}).encode()
    (layout / "blobs" / "sha256" / hashlib.sha256(nested).hexdigest()).write_bytes(nested)
    top = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": f"sha256:{hashlib.sha256(nested).hexdigest()}",
        "size": len(nested),
        "annotations": {REF_NAME: "registry.test/busybox:multi"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    with anyio.fail_after(WAIT):
        [info] = await store.import_path(layout)
        prepared = await store.prepare("registry.test/busybox:multi")
    assert info.reference == "registry.test/busybox:multi"
    assert info.digest == prepared.digest == busybox.manifest_digest


async def test_an_unnamed_image_needs_a_reference(store: ImageStore, tmp_path: Path) -> None:
    layout = tmp_path / "unnamed"
    write_layout(layout, [b"\0" * 1024])
    index = json.loads((layout / "index.json").read_text())
    del index["manifests"][0]["annotations"]
    (layout / "index.json").write_text(json.dumps(index))
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="import it with a reference"):
        await store.import_path(layout)
    with anyio.fail_after(WAIT):
        [info] = await store.import_path(layout, "named:1")
    assert info.reference == "named:1"
