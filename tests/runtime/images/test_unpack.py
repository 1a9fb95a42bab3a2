"""Unpacking layers: overlayfs whiteouts, metadata, refused members, corruption, crash leftovers."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
from pathlib import Path

import anyio
import pytest
from scripts.build_busybox_image import ADDED_IN_OPAQUE, WHITED_OUT, BuiltImage

from shoal.interfaces import ImageError
from shoal.runtime import ImageStore
from tests.runtime.images.fake_registry import FakeRegistry
from tests.runtime.images.support import member, merged_view, tar_layer, write_layout

pytestmark = pytest.mark.anyio

WAIT = 30.0
OPAQUE = "trusted.overlay.opaque"


async def _prepare_layout(store: ImageStore, layout: Path, layers: list[bytes]) -> list[Path]:
    write_layout(layout, layers)
    with anyio.fail_after(WAIT):
        await store.import_path(layout, "test:1")
        return (await store.prepare("test:1")).layers


async def test_whiteouts_become_overlayfs_whiteouts(store: ImageStore, busybox: BuiltImage) -> None:
    with anyio.fail_after(WAIT):
        await store.import_path(busybox.layout)
        base, top = (await store.prepare("busybox")).layers
    whiteout = os.lstat(top / WHITED_OUT)
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(top / ADDED_IN_OPAQUE.rsplit("/", 1)[0], OPAQUE) == b"y"
    assert not (top / "etc" / ".wh.motd").exists()
    assert (base / WHITED_OUT).is_file()
    assert OPAQUE not in os.listxattr(base / "var" / "lib" / "shoal")


async def test_a_directory_recreated_over_its_whiteout_is_opaque(
    store: ImageStore, tmp_path: Path
) -> None:
    lower = tar_layer(member("d/", type=tarfile.DIRTYPE, mode=0o755), member("d/old", b"old"))
    upper = tar_layer(
        member("d/.wh.x"),
        member(".wh.d"),
        member("d/", type=tarfile.DIRTYPE),
        member("d/new", b"new"),
    )
    layers = await _prepare_layout(store, tmp_path / "layout", [lower, upper])
    assert os.getxattr(layers[1] / "d", OPAQUE) == b"y"
    with merged_view(layers, tmp_path / "rootfs") as rootfs:
        assert sorted(os.listdir(rootfs / "d")) == ["new"]


async def test_owners_modes_times_links_devices_and_xattrs_are_kept(
    store: ImageStore, tmp_path: Path
) -> None:
    layer = tar_layer(
        member("private/", type=tarfile.DIRTYPE, mode=0o700, uid=5, gid=6, mtime=1_000_000),
        member("private/tool", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=100, mtime=2_000_000,
               pax_headers={"SCHILY.xattr.user.shoal": "yes",
                            "SCHILY.xattr.trusted.overlay.redirect": "/x"}),
        member("private/alias", type=tarfile.LNKTYPE, linkname="private/tool"),
        member("sh", type=tarfile.SYMTYPE, linkname="/bin/busybox", uid=7),
        member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        member("pipe", type=tarfile.FIFOTYPE, mode=0o600),
    )  # fmt: skip
    [root] = await _prepare_layout(store, tmp_path / "layout", [layer])
    tool = os.lstat(root / "private" / "tool")
    assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (1000, 100, 0o4755)
    assert tool.st_mtime == 2_000_000
    assert os.getxattr(root / "private" / "tool", "user.shoal") == b"yes"
    assert "trusted.overlay.redirect" not in os.listxattr(root / "private" / "tool")
    private = os.lstat(root / "private")
    assert (private.st_uid, stat.S_IMODE(private.st_mode), private.st_mtime) == (
        5,
        0o700,
        1_000_000,
    )
    assert os.lstat(root / "private" / "alias").st_ino == tool.st_ino
    assert os.readlink(root / "sh") == "/bin/busybox"
    assert os.lstat(root / "sh").st_uid == 7
    null = os.lstat(root / "null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode)


def _escape_layers(outside: Path) -> dict[str, list[tuple[tarfile.TarInfo, bytes]]]:
    return {
        "dotdot": [member("../escaped", b"x")],
        "absolute": [member(str(outside / "escaped"), b"x")],
        "symlink": [
            member("link", type=tarfile.SYMTYPE, linkname=str(outside)),
            member("link/escaped", b"x"),
        ],
        "symlink-dir": [
            member("up", type=tarfile.SYMTYPE, linkname="../../.."),
            member("up/escaped/", type=tarfile.DIRTYPE),
        ],
        "hardlink": [member("passwd", type=tarfile.LNKTYPE, linkname="../../../../etc/passwd")],
        "whiteout": [member("d/.wh..")],
    }


@pytest.mark.parametrize(
    "case", ["dotdot", "absolute", "symlink", "symlink-dir", "hardlink", "whiteout"]
)
async def test_members_that_escape_the_layer_are_refused(
    store: ImageStore, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = tar_layer(member("ok", b"fine"), *_escape_layers(outside)[case])
    write_layout(tmp_path / "layout", [layer])
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="refused as unsafe") as caught:
        await store.import_path(tmp_path / "layout", "evil:1")
    assert caught.value.details["member"]
    assert list(outside.iterdir()) == []
    assert list((store.root / "layers").iterdir()) == []  # no half layer, no temporary left
    assert await store.list() == []


async def test_a_blob_corrupted_on_disk_is_dropped_and_pulled_again(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    reference = f"{fake_registry.host}/busybox"
    with anyio.fail_after(WAIT):
        layers = (await store.prepare(reference)).layers
    digest = busybox.layer_digests[1]
    blob = store.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    for layer in layers:
        shutil.rmtree(layer)
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match=f"blob {digest} .*failed verif"):
        await store.prepare(reference)
    assert not blob.exists()
    assert not layers[1].exists()
    with anyio.fail_after(WAIT):
        await store.prepare(reference)  # the missing blob is fetched again
    assert len(fake_registry.blob_gets(digest)) == 2
    assert layers[1].is_dir()


async def test_zstd_layers_get_a_clear_error(store: ImageStore, tmp_path: Path) -> None:
    zstd_frame = b"\x28\xb5\x2f\xfd" + b"\0" * 60
    write_layout(tmp_path / "zstd", [b"\0" * 1024], layer_blobs=[zstd_frame])
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="zstd"):
        await store.import_path(tmp_path / "zstd", "z:1")


async def test_a_config_that_lies_about_a_layer_is_refused(
    store: ImageStore, tmp_path: Path
) -> None:
    told, actual = tar_layer(member("a", b"a")), tar_layer(member("b", b"b"))
    write_layout(tmp_path / "liar", [told], layer_blobs=[gzip.compress(actual, mtime=0)])
    with (
        anyio.fail_after(WAIT),
        pytest.raises(ImageError, match=r"unpacks to sha256:.*config says"),
    ):
        await store.import_path(tmp_path / "liar", "liar:1")
    assert list((store.root / "layers").iterdir()) == []


async def test_a_half_unpacked_layer_from_a_crash_is_ignored_and_collected(
    store: ImageStore, busybox: BuiltImage
) -> None:
    leftover = store.root / "layers" / f".tmp-{busybox.diff_ids[0].removeprefix('sha256:')}-dead"
    (leftover / "bin").mkdir(parents=True)
    with anyio.fail_after(WAIT):
        await store.import_path(busybox.layout)
        base, _ = (await store.prepare("busybox")).layers
        assert (base / "bin" / "busybox").is_file()
        assert leftover.exists()
        await store.gc()
    assert not leftover.exists()
    assert (base / "bin" / "busybox").is_file()
