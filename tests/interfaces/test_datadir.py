"""The data dir lock: one agent per data dir, and anyone can tell which pid holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.interfaces import DATA_DIR_LOCK, DataDirLock, Unavailable, agent_pid


def test_the_lock_names_its_holder_and_refuses_a_second_agent(tmp_path: Path) -> None:
    assert agent_pid(tmp_path) is None  # no lock file yet
    with DataDirLock(tmp_path):
        assert agent_pid(tmp_path) == os.getpid()  # looking does not release it
        assert agent_pid(tmp_path) == os.getpid()
        with pytest.raises(Unavailable, match=f"another shoal agent \\(pid {os.getpid()}\\)"):
            DataDirLock(tmp_path).acquire()
    assert agent_pid(tmp_path) is None
    with DataDirLock(tmp_path):  # free again
        pass


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from shoal.interfaces import DataDirLock;"
            f"lock = DataDirLock(Path({str(tmp_path)!r})); lock.acquire();"
            "print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            assert agent_pid(tmp_path) == holder.pid
            assert (tmp_path / DATA_DIR_LOCK).read_text().strip() == str(holder.pid)
        finally:
            holder.kill()
            holder.wait(timeout=30)
    assert agent_pid(tmp_path) is None
