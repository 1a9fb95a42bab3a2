"""RuncCli's errors: runc's own message when it fails, and one when it cannot be run at all.

These run stand-in executables, not runc: what is tested is how RuncCli reads
a failure, which needs neither root nor containers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.interfaces import RuntimeFailure
from shoal.runtime.oci._runc import RuncCli

pytestmark = pytest.mark.anyio


def stand_in(path: Path, script: str) -> Path:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


async def test_a_failing_runc_is_a_runtime_failure_with_its_message(tmp_path: Path) -> None:
    binary = stand_in(
        tmp_path / "runc", 'echo \'time="x" level=error msg="container not running"\' >&2; exit 1'
    )
    runc = RuncCli(str(binary), tmp_path / "state")
    with pytest.raises(RuntimeFailure, match="runc start failed: container not running"):
        await runc.start("web")
    assert await runc.kill("web", "TERM") is False  # check=False: the code, no exception


async def test_a_runc_that_cannot_be_started_is_a_runtime_failure_not_an_os_error(
    tmp_path: Path,
) -> None:
    binary = stand_in(tmp_path / "runc", "exit 0")
    runc = RuncCli(str(binary), tmp_path / "state")
    binary.unlink()  # removed after the node started
    with pytest.raises(RuntimeFailure, match=f"could not run {binary} kill: No such file"):
        await runc.kill("web", "TERM")
