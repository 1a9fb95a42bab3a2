"""The file volumes of a CRI pod (config_map, secret, downward_api, projected), swapped atomically.

Shoal works out their files (:attr:`~shoal.interfaces.PodSpec.files`); the
runtime writes them under the pod directory, ``volumes/<name>``, the way the
kubelet's atomic writer does, so a container reading the volume sees either
every old file or every new one:

* the files go into a fresh hidden directory ``..<random>``;
* the symlink ``..data`` is pointed at it by renaming a new symlink over it
  (one ``rename``: atomic);
* each top-level entry is a symlink through ``..data`` (``key -> ..data/key``);
* the previous hidden directory and entries no longer present are removed.

Containers bind-mount ``volumes/<name>`` (read-only), so an update shows
inside them at once. A mount with a ``sub_path`` binds the file as it is at
creation (through ``..data``, resolved), so it keeps what it had.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from shoal.interfaces import ProjectedFile

__all__ = ["write_volume_files"]

_DATA = "..data"


def write_volume_files(directory: Path, files: Sequence[ProjectedFile]) -> None:
    """Make ``directory`` hold exactly ``files``, swapped in at once (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    fresh = directory / f"..{secrets.token_hex(8)}"
    fresh.mkdir(mode=0o755)
    for file in files:
        target = fresh / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.data)
        target.chmod(file.mode)
    data = directory / _DATA
    previous = os.readlink(data) if data.is_symlink() else None
    swap = directory / f"..data_{secrets.token_hex(4)}"
    swap.symlink_to(fresh.name)
    swap.replace(data)
    tops = {Path(file.path).parts[0] for file in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"{_DATA}/{top}")
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    if previous is not None and previous != fresh.name:
        shutil.rmtree(directory / previous, ignore_errors=True)
