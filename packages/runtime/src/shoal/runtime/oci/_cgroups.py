"""Reading a container's cgroup: where it lives, what it uses, whether it was OOM-killed.

:class:`~shoal.runtime.OciCliRuntime` gives every container an explicit
``cgroupsPath`` (``/shoal/<container id>``), so its cgroup can be found
without asking runc. Two layouts exist:

* **v2 (unified)**: one tree at ``/sys/fs/cgroup`` (``cgroup.controllers``
  exists there); files ``cpu.stat`` (``usage_usec``), ``memory.current``,
  ``memory.events`` (``oom_kill``), ``pids.current``.
* **v1 (legacy or hybrid)**: one mount per controller, found in
  ``/proc/self/mounts`` by their options (``cpuacct`` is often co-mounted with
  ``cpu`` as ``cpu,cpuacct``); files ``cpuacct.usage`` (nanoseconds),
  ``memory.usage_in_bytes``, ``memory.oom_control`` (``oom_kill``),
  ``pids.current``. In hybrid mode the unified tree at
  ``/sys/fs/cgroup/unified`` holds no controllers, and runc uses v1, so v1
  is what is read.

Memory is reported as the working set (usage minus inactive file cache), as
kubelet does, so a container reading big files does not look like it leaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["CgroupSample", "Cgroups", "detect_cgroups", "oom_kills"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupSample:
    """One reading of a container's cgroup counters.

    Attributes:
        cpu_seconds: Total CPU time used so far.
        memory_bytes: Working set (usage minus inactive file cache).
        pids: Number of tasks.

    """

    cpu_seconds: float
    memory_bytes: int
    pids: int


@dataclass(frozen=True)
class Cgroups:
    """Where the cgroup controllers of this host are mounted.

    Attributes:
        unified: True on a pure cgroup v2 host.
        mounts: For v1, controller name → its mount point.

    """

    unified: bool
    mounts: dict[str, Path]

    def directory(self, controller: str, cgroup: str) -> Path | None:
        """Return the directory of ``cgroup`` (e.g. ``/shoal/abc``) for ``controller``.

        Returns:
            The path, or None when this host has no such controller.

        """
        relative = cgroup.lstrip("/")
        if self.unified:
            return _CGROUP_ROOT / relative
        mount = self.mounts.get(controller)
        return None if mount is None else mount / relative

    def oom_file(self, cgroup: str) -> Path | None:
        """Return the file whose ``oom_kill`` line counts OOM kills in ``cgroup``."""
        directory = self.directory("memory", cgroup)
        if directory is None:
            return None
        return directory / ("memory.events" if self.unified else "memory.oom_control")

    def swap_accounting(self) -> bool:
        """Return whether memory+swap can be limited (v1 needs ``swapaccount=1``)."""
        if self.unified:
            return any(_CGROUP_ROOT.glob("*/memory.swap.max"))
        memory = self.mounts.get("memory")
        return memory is not None and (memory / "memory.memsw.limit_in_bytes").exists()

    def sample(self, cgroup: str) -> CgroupSample | None:
        """Read ``cgroup``'s counters now; None when it does not exist (any more)."""
        try:
            if self.unified:
                return self._sample_v2(_CGROUP_ROOT / cgroup.lstrip("/"))
            return self._sample_v1(cgroup)
        except (FileNotFoundError, ProcessLookupError):
            return None

    def _sample_v2(self, directory: Path) -> CgroupSample:
        usage_usec = _keyed(directory / "cpu.stat").get("usage_usec", 0)
        memory = _number(directory / "memory.current")
        inactive = _keyed(directory / "memory.stat").get("inactive_file", 0)
        return CgroupSample(
            cpu_seconds=usage_usec / 1e6,
            memory_bytes=max(0, memory - inactive),
            pids=_number(directory / "pids.current"),
        )

    def _sample_v1(self, cgroup: str) -> CgroupSample:
        cpu = self.directory("cpuacct", cgroup)
        memory = self.directory("memory", cgroup)
        pids = self.directory("pids", cgroup)
        cpu_ns = _number(cpu / "cpuacct.usage") if cpu is not None else 0
        used = inactive = 0
        if memory is not None:
            used = _number(memory / "memory.usage_in_bytes")
            inactive = _keyed(memory / "memory.stat").get("total_inactive_file", 0)
        return CgroupSample(
            cpu_seconds=cpu_ns / 1e9,
            memory_bytes=max(0, used - inactive),
            pids=_number(pids / "pids.current") if pids is not None else 0,
        )


def oom_kills(path: Path | None) -> int:
    """Return the ``oom_kill`` count in a ``memory.events``/``memory.oom_control`` file."""
    if path is None:
        return 0
    try:
        return _keyed(path).get("oom_kill", 0)
    except OSError:
        return 0


@cache
def detect_cgroups() -> Cgroups:
    """Return this host's cgroup layout (read once per process)."""
    if (_CGROUP_ROOT / "cgroup.controllers").exists():
        return Cgroups(unified=True, mounts={})
    mounts: dict[str, Path] = {}
    try:
        table = Path("/proc/self/mounts").read_text()
    except OSError:
        table = ""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "cgroup":
            continue
        for option in fields[3].split(","):
            if option in ("cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer"):
                mounts.setdefault(option, Path(_unescape(fields[1])))
    return Cgroups(unified=False, mounts=mounts)


def _unescape(field: str) -> str:
    r"""Undo the octal escapes of /proc/self/mounts (an escaped space is ``\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _number(path: Path) -> int:
    text = path.read_text().strip()
    return 0 if text in ("", "max") else int(text)


def _keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values
