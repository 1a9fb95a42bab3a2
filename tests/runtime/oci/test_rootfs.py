"""Each container's own rootfs: overlayfs or a copy, whiteouts, isolation, read-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

from shoal.runtime.oci._rootfs import RootfsStrategy, mounts_under, prepare_rootfs, remove_tree
from tests.runtime.oci.harness import RuntimeFactory, new_pod
from tests.runtime.oci.support import missing_requirement

pytestmark = pytest.mark.anyio


def layers_with_whiteouts(directory: Path, *, tar_style: bool) -> list[Path]:
    """Two layers: the upper one deletes, hides and adds files of the lower one.

    Overlay-style whiteouts (0/0 character device, opaque xattr) always; with
    ``tar_style`` also a ``.wh.`` file, which only the copy strategy reads.
    """
    lower, upper = directory / "lower", directory / "upper"
    for path, text in {
        "a/keep": "keep",
        "a/gone": "gone",
        "a/gone-too": "gone",
        "b/old": "old",
        "c": "c",
    }.items():
        (lower / path).parent.mkdir(parents=True, exist_ok=True)
        (lower / path).write_text(text)
    (upper / "a").mkdir(parents=True)
    os.mknod(upper / "a" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # overlay whiteout
    if tar_style:
        (upper / "a" / ".wh.gone-too").write_text("")
    else:
        (lower / "a" / "gone-too").unlink()
    (upper / "b").mkdir()
    os.setxattr(upper / "b", "trusted.overlay.opaque", b"y")
    (upper / "b" / "new").write_text("new")
    (upper / "c").write_text("changed")
    return [lower, upper]


def tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("strategy", ["copy", "overlay"])
def test_both_strategies_give_the_same_merged_view(
    tmp_path: Path, strategy: RootfsStrategy
) -> None:
    if missing_requirement():
        pytest.skip(str(missing_requirement()))
    layers = layers_with_whiteouts(tmp_path / "layers", tar_style=strategy == "copy")
    container = tmp_path / "container"
    try:
        rootfs, kind = prepare_rootfs(layers, container, strategy)
        assert kind == strategy
        assert tree(rootfs) == {"a/keep": "keep", "b/new": "new", "c": "changed"}
        (rootfs / "a" / "keep").write_text("written")
        assert (layers[0] / "a" / "keep").read_text() == "keep"
    finally:
        remove_tree(container)
    assert mounts_under(container) == []
    assert not container.exists()
    assert (layers[0] / "a" / "gone").exists()


@pytest.mark.parametrize("strategy", ["auto", "copy"])
async def test_writes_never_leak_between_containers(
    make_runtime: RuntimeFactory, strategy: RootfsStrategy
) -> None:
    async with make_runtime(rootfs=strategy) as runtime:
        first, second = new_pod(), new_pod()
        for spec in (first, second):
            await runtime.create(spec)
            await runtime.start(spec.uid)

        script = "echo mine > /etc/marker && rm /bin/vi"
        assert (await runtime.exec(first.uid, "main", ["sh", "-c", script])).exit_code == 0
        check = ["sh", "-c", "test ! -e /etc/marker && test -e /bin/vi"]
        assert (await runtime.exec(second.uid, "main", check)).exit_code == 0
        mounts = await anyio.Path("/proc/mounts").read_text()
        overlays = [
            line
            for line in mounts.splitlines()
            if str(runtime.root) in line and line.split()[2] == "overlay"
        ]
        assert len(overlays) == (2 if strategy == "auto" else 0)


async def test_a_read_only_rootfs_refuses_writes(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(read_only_rootfs=True) as runtime:
        spec = new_pod()
        await runtime.create(spec)
        await runtime.start(spec.uid)
        result = await runtime.exec(spec.uid, "main", ["touch", "/etc/marker"])
        assert result.exit_code != 0
        assert "Read-only file system" in result.stderr
