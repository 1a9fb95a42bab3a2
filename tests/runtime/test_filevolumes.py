"""The kubelet-style file volume writer on its own: layout, swaps, bad paths, sub_path checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.interfaces import InvalidInput, ProjectedFile, RuntimeFailure
from shoal.runtime._filevolumes import check_files, resolve_sub_path, write_files


def files(*pairs: tuple[str, str]) -> list[ProjectedFile]:
    return [ProjectedFile(path=path, data=data.encode()) for path, data in pairs]


def test_a_swap_leaves_exactly_the_new_set(tmp_path: Path) -> None:
    write_files(tmp_path, files(("a", "1"), ("conf/b", "1")))
    first = os.readlink(tmp_path / "..data")
    write_files(tmp_path, files(("a", "2"), ("c", "2")))
    second = os.readlink(tmp_path / "..data")

    assert second != first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", second, "a", "c"])
    assert (tmp_path / "a").read_text() == "2"
    assert os.readlink(tmp_path / "c") == "..data/c"


def test_a_directory_a_sub_path_binds_outlives_the_swap(tmp_path: Path) -> None:
    write_files(tmp_path, files(("conf/b", "old")))
    bound = resolve_sub_path(tmp_path, "conf", volume="config", create=False)
    write_files(tmp_path, files(("conf/b", "new")))

    assert (bound / "b").read_text() == "old"
    assert (tmp_path / "conf" / "b").read_text() == "new"


@pytest.mark.parametrize(
    ("paths", "fix"),
    [
        (["../etc/passwd"], "must be relative"),
        (["..data"], "must be relative"),
        (["a/./b"], "must be relative"),
        (["a", "a"], "is given twice"),
        (["a", "a/b"], "'a' is a file and also the directory of 'a/b'"),
    ],
)
def test_bad_paths_are_refused_naming_the_volume(paths: list[str], fix: str) -> None:
    with pytest.raises(InvalidInput, match=f"volume 'config': .*{fix}"):
        check_files("config", [ProjectedFile(path=path, data=b"") for path in paths])


def test_a_sub_path_is_created_in_a_scratch_volume_but_never_outside(tmp_path: Path) -> None:
    made = resolve_sub_path(tmp_path, "app/logs", volume="work", create=True)
    assert made == tmp_path.resolve() / "app" / "logs" and made.is_dir()

    (tmp_path / "escape").symlink_to("/etc")
    with pytest.raises(RuntimeFailure, match="leads outside the volume"):
        resolve_sub_path(tmp_path, "escape/new", volume="work", create=True)
    assert not Path("/etc/new").exists()
    with pytest.raises(RuntimeFailure, match="does not exist in volume 'work'"):
        resolve_sub_path(tmp_path, "missing", volume="work", create=False)
