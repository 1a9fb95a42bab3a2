"""The store's bookkeeping: list, info, remove, gc, and its index file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest
from scripts.build_busybox_image import BuiltImage

from shoal.interfaces import ImageError, NotFound
from shoal.runtime import ImageSource, ImageStore
from tests.runtime.images.support import member, tar_layer, write_layout

pytestmark = pytest.mark.anyio

WAIT = 30.0


def _blobs(store: ImageStore) -> set[str]:
    return {p.name for p in (store.root / "blobs" / "sha256").iterdir()}


def _layers(store: ImageStore) -> set[str]:
    return {p.name for p in (store.root / "layers").iterdir()}


def test_the_store_is_an_image_source(store: ImageStore) -> None:
    assert isinstance(store, ImageSource)


async def test_list_info_and_the_index_file(store: ImageStore, busybox: BuiltImage) -> None:
    with anyio.fail_after(WAIT):
        assert await store.list() == []
        await store.import_path(busybox.layout, "b:2")
        await store.import_path(busybox.layout, "a:1")
        listed = await store.list()
        info = await store.info("a:1")
    assert [i.reference for i in listed] == ["a:1", "b:2"]
    assert info == listed[0]
    assert info.digest == busybox.manifest_digest
    index = json.loads((store.root / "images.json").read_text())
    assert index["images"]["a:1"]["digest"] == busybox.manifest_digest
    assert index["images"]["a:1"]["source"] == "oci-layout"
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(NotFound):
        await store.info("c:3")


async def test_remove_forgets_only_that_reference(store: ImageStore, busybox: BuiltImage) -> None:
    with anyio.fail_after(WAIT):
        await store.import_path(busybox.layout, "a:1")
        await store.import_path(busybox.layout, "b:1")
        [removed] = await store.remove("a:1")
        assert removed.reference == "a:1"
        assert [i.reference for i in await store.list()] == ["b:1"]
        with pytest.raises(NotFound, match="a:1"):
            await store.remove("a:1")
        await store.prepare("b:1")  # content stays until gc


async def test_remove_by_digest_forgets_every_tag(store: ImageStore, busybox: BuiltImage) -> None:
    with anyio.fail_after(WAIT):
        await store.import_path(busybox.layout, "a:1")
        await store.import_path(busybox.layout, "b:1")
        removed = await store.remove(busybox.manifest_digest)
    assert sorted(i.reference for i in removed) == ["a:1", "b:1"]
    assert await store.list() == []


async def test_gc_frees_what_no_image_references(
    store: ImageStore, busybox: BuiltImage, tmp_path: Path
) -> None:
    write_layout(tmp_path / "other", [tar_layer(member("hello", b"x" * 10_000))])
    with anyio.fail_after(WAIT):
        await store.import_path(busybox.layout)
        busybox_blobs, busybox_layers = _blobs(store), _layers(store)
        await store.import_path(tmp_path / "other", "other:1")
        assert await store.gc() == 0  # everything is referenced
        await store.remove("busybox")
        freed = await store.gc()
    assert freed > 1_000_000  # busybox's layer blob and unpacked layer
    assert not (_blobs(store) & busybox_blobs)
    assert not (_layers(store) & busybox_layers)
    assert len(_blobs(store)) == 3  # the other image's manifest, config, layer
    with anyio.fail_after(WAIT):
        [layer] = (await store.prepare("other:1")).layers
    assert (layer / "hello").stat().st_size == 10_000


async def test_gc_keeps_images_in_use_and_shared_layers(
    store: ImageStore, busybox: BuiltImage
) -> None:
    with anyio.fail_after(WAIT):
        await store.import_path(busybox.layout, "a:1")
        await store.import_path(busybox.layout, "b:1")
        prepared = await store.prepare("a:1")
        await store.remove("a:1")
        assert await store.gc() == 0  # b:1 shares everything
        await store.remove("b:1")
        assert await store.gc(in_use=[prepared.digest]) == 0  # a running container's image
        assert all(layer.is_dir() for layer in prepared.layers)
        assert await store.gc() > 0
    assert _blobs(store) == set()
    assert _layers(store) == set()
    assert list((store.root / "incoming").iterdir()) == []


async def test_prepare_sees_every_change_to_the_store(store: ImageStore, tmp_path: Path) -> None:
    """What prepare found is reused only while the store is unchanged, whoever changes it."""
    first = write_layout(tmp_path / "first", [tar_layer(member("which", b"first"))])
    second = write_layout(tmp_path / "second", [tar_layer(member("which", b"second"))])
    other = ImageStore(store.root)  # another agent's object, or a command, on the same root
    with anyio.fail_after(WAIT):
        await store.import_path(tmp_path / "first", "app:1")
        assert (await store.prepare("app:1")).digest == first
        assert (await store.prepare("app:1")).digest == first  # unchanged: the same answer
        await store.import_path(tmp_path / "second", "app:1")  # the tag moves
        prepared = await store.prepare("app:1")
        assert prepared.digest == second
        assert (prepared.layers[0] / "which").read_bytes() == b"second"
        await other.import_path(tmp_path / "first", "app:1")  # moved back by someone else
        assert (await store.prepare("app:1")).digest == first
        await other.remove("app:1")
        with pytest.raises(ImageError, match="app:1"):
            await store.prepare("app:1")
        await store.import_path(tmp_path / "first", "app:1")
        [layer] = (await store.prepare("app:1")).layers
        shutil.rmtree(layer)  # an unpacked layer deleted by hand is unpacked again
        [again] = (await store.prepare("app:1")).layers
    assert (again / "which").read_bytes() == b"first"
