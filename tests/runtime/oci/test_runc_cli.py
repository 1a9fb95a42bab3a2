"""RuncCli's errors: runc's own message when it fails, and one when it cannot be run at all.

These run stand-in executables, not runc: what is tested is how RuncCli reads
a failure, which needs neither root nor containers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shoal.interfaces import RuntimeFailure
from shoal.runtime.oci._runc import LIST_ATTEMPTS, RuncCli

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


def failing_list(path: Path, failures: int, message: str) -> Path:
    """A stand-in whose first ``failures`` lists fail with ``message``; it counts its calls."""
    count = path.parent / "lists"
    return stand_in(
        path,
        f"""n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
if [ "$n" -lt {failures} ]; then
  echo 'time="x" level=error msg="{message}"' >&2
  exit 1
fi
echo '[{{"id": "db-main", "pid": 42, "status": "running", "created": "2026-01-01T00:00:00Z"}}]'""",
    )


def lists(tmp_path: Path) -> int:
    return int((tmp_path / "lists").read_text())


async def test_a_list_raced_by_a_delete_is_tried_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    raced = f"stat {state}/web-main: no such file or directory"  # as runc 1.1 says it
    binary = failing_list(tmp_path / "runc", LIST_ATTEMPTS - 1, raced)
    states = await RuncCli(str(binary), state).states()
    assert list(states) == ["db-main"] and states["db-main"].pid == 42
    assert lists(tmp_path) == LIST_ATTEMPTS


async def test_a_list_that_keeps_racing_is_a_runtime_failure(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    raced = f"stat {state}/web-main: no such file or directory"
    runc = RuncCli(str(failing_list(tmp_path / "runc", LIST_ATTEMPTS, raced)), state)
    with pytest.raises(RuntimeFailure, match=re.escape(f"runc list failed: {raced}")):
        await runc.states()
    assert lists(tmp_path) == LIST_ATTEMPTS


async def test_a_relative_root_is_matched_as_runc_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    raced = f"stat {tmp_path}/state/web-main: no such file or directory"  # runc's absolute path
    binary = failing_list(tmp_path / "runc", 1, raced)
    assert list(await RuncCli(str(binary), Path("sub/../state")).states()) == ["db-main"]
    assert lists(tmp_path) == 2


@pytest.mark.parametrize(
    "message",
    ["open /run: permission denied", "stat {state}/web-main: permission denied"],
)
async def test_a_list_that_fails_otherwise_is_a_runtime_failure_at_once(
    tmp_path: Path, message: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    failure = message.format(state=state)
    runc = RuncCli(str(failing_list(tmp_path / "runc", 1, failure)), state)
    with pytest.raises(RuntimeFailure, match=re.escape(f"runc list failed: {failure}")):
        await runc.states()
    assert lists(tmp_path) == 1
