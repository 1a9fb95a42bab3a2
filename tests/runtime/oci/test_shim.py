"""The shim on its own, with a stand-in runtime: how it learns the container init's pid.

The stand-in is a shell script that forks a ``sleep`` (the "init") and
exits, as ``runc run --detach`` does; it writes no pid file, so the shim can
only know the init as the child it adopted (it is a subreaper).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal.runtime.oci import _shim
from shoal.runtime.oci._shim import _children_by_scan, _run_create, _wait_exit
from shoal.runtime.oci._shimlaunch import SHIM
from tests.runtime.oci.support import WAIT, eventually

pytestmark = pytest.mark.anyio


def shim_config(tmp_path: Path, runtime: str) -> Path:
    """Write a ``shim.json`` for a container run by the script ``runtime``; return its path."""
    (tmp_path / "runtime").write_text(f"#!/bin/sh\n{runtime}\n")
    (tmp_path / "runtime").chmod(0o755)
    config = {
        "start": True,
        "runtime": str(tmp_path / "runtime"),
        "state_root": str(tmp_path / "state"),
        "id": "c1",
        "max_bytes": 1 << 20,
        "max_files": 2,
        "oom_file": "",
        "log": str(tmp_path / "main.log"),
        "exit_file": str(tmp_path / "exit.json"),
        "pid_file": str(tmp_path / "init.pid"),
        "shim_pid_file": str(tmp_path / "shim.pid"),
        "runc_log": str(tmp_path / "runc.log"),
        "diagnostics": str(tmp_path / "shim.err"),
        "bundle": str(tmp_path),
    }
    path = tmp_path / "shim.json"
    path.write_text(json.dumps(config))
    return path


def run_shim(config: Path) -> dict[str, Any]:
    """Run the shim on ``config`` until it answers (it closes its stdout then); return that."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(SHIM), str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


async def test_the_shim_reports_the_init_its_runtime_forked_and_records_its_exit(
    tmp_path: Path,
) -> None:
    forked = tmp_path / "forked"
    config = shim_config(tmp_path, f"sleep {WAIT * 6:g} & echo $! > {forked}")
    answer = run_shim(config)
    init = int(forked.read_text())
    try:
        assert answer["ok"] is True, answer
        assert answer["pid"] == init
        assert (tmp_path / "init.pid").read_text() == str(init)
        assert (tmp_path / "shim.pid").read_text().split()[0] == str(answer["shim_pid"])
        os.kill(init, signal.SIGKILL)
        await eventually((tmp_path / "exit.json").exists)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)
    assert json.loads((tmp_path / "exit.json").read_text())["exit_code"] == 128 + signal.SIGKILL


def test_a_runtime_that_leaves_no_init_is_a_clear_error(tmp_path: Path) -> None:
    answer = run_shim(shim_config(tmp_path, "exit 0"))
    assert answer["ok"] is False
    assert "left no process for the shim to adopt" in answer["error"]
    assert not (tmp_path / "init.pid").exists()


async def test_of_several_children_the_init_is_the_one_the_runtimes_state_names(
    tmp_path: Path,
) -> None:
    """A hook's process beside the init: ``<runtime> state`` says which one is the init."""
    forked, state = tmp_path / "forked", tmp_path / "state.json"
    runtime = (
        f'case " $* " in *" state "*) cat {state};; '
        f"*) sleep {WAIT * 6:g} & echo $! > {tmp_path / 'other'}; "
        f"sleep {WAIT * 6:g} & echo $! > {forked}; printf '{{\"pid\": %s}}' $! > {state};; esac"
    )
    answer = run_shim(shim_config(tmp_path, runtime))
    pids = [int((tmp_path / name).read_text()) for name in ("forked", "other")]
    try:
        assert answer["ok"] is True, answer
        assert answer["pid"] == pids[0]
        assert (tmp_path / "init.pid").read_text() == str(pids[0])
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_several_children_none_named_by_the_runtime_is_a_clear_error(tmp_path: Path) -> None:
    runtime = (
        'case " $* " in *" state "*) exit 1;; '
        f"*) sleep {WAIT * 6:g} & echo $! > {tmp_path / 'a'}; "
        f"sleep {WAIT * 6:g} & echo $! > {tmp_path / 'b'};; esac"
    )
    answer = run_shim(shim_config(tmp_path, runtime))
    pids = [int((tmp_path / name).read_text()) for name in ("a", "b")]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert answer["ok"] is False
    assert "left 2 processes" in answer["error"] and "names none of them" in answer["error"]


def test_a_pid_file_that_cannot_be_written_fails_once_the_runtime_is_done(
    tmp_path: Path,
) -> None:
    """Not while the runtime still creates: the agent's clean-up then finds what it made."""
    config = shim_config(tmp_path, f"sleep 0.3; touch {tmp_path / 'created'}; exit 0")
    data = json.loads(config.read_text())
    data["shim_pid_file"] = str(tmp_path / "missing" / "shim.pid")
    config.write_text(json.dumps(data))
    answer = run_shim(config)
    assert answer["ok"] is False
    assert answer["error"].startswith("the shim could not write its pid file")
    assert (tmp_path / "created").exists()  # the runtime had finished when it answered


def test_a_runtime_that_cannot_start_is_a_clear_error_and_the_shim_still_recorded(
    tmp_path: Path,
) -> None:
    config = shim_config(tmp_path, "exit 0")
    (tmp_path / "runtime").unlink()
    answer = run_shim(config)
    assert answer["ok"] is False
    assert "No such file or directory" in answer["error"]
    assert (tmp_path / "shim.pid").read_text().split()[0].isdigit()


def test_children_are_found_by_their_parent_in_proc() -> None:
    child = subprocess.Popen(["sleep", str(WAIT)])
    try:
        children = _children_by_scan(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid in children
    assert os.getpid() not in children


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "polled"])
def test_the_runtime_is_waited_for_with_or_without_pidfds(
    pidfds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfds:

        def no_pidfds(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    command = ["sh", "-c", "exit 3"]
    assert _wait_exit(command, os.posix_spawnp("sh", command, os.environ)) == 3


def test_a_runtime_past_its_time_limit_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shim, "_CREATE_SECONDS", 0.05)
    command = ["sleep", str(WAIT)]
    pid = os.posix_spawnp("sleep", command, os.environ)
    with pytest.raises(subprocess.TimeoutExpired):
        _wait_exit(command, pid)
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pid, os.WNOHANG)


def test_the_runtime_gets_the_signals_python_ignores_back() -> None:
    """SIGPIPE and SIGXFSZ at their defaults: the container's init must not inherit SIG_IGN."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # as in the shim: Python's doing
    read, write = os.pipe()
    try:
        command = ["sh", "-c", "grep SigIgn /proc/self/status"]
        assert _run_create(command, write, write, lambda: None) == 0
        os.close(write)
        with os.fdopen(read, "rb") as output:
            line = output.read().decode()
    finally:
        with contextlib.suppress(OSError):
            os.close(write)
    ignored = int(line.split(":")[1], 16)
    for signo in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (signo - 1)), f"{signo.name} is ignored in the runtime"
