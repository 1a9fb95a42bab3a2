"""Where :class:`~shoal.runtime.OciCliRuntime` keeps a pod on disk, and what it records.

Everything about a pod lives under ``<root>/pods/<uid>/``, so that a new
runtime object on the same root (after the agent was killed) can rebuild
every :class:`~shoal.interfaces.PodStatus` from disk and ``runc list``::

    pods/<uid>/
      pod.json                 spec, created time, network (written by the agent)
      complete                 empty: every container was created (written by the agent)
      <container>.log[.N]      JSON-lines logs, rotated (written by the shim)
      etc/hosts, etc/resolv.conf, etc/hostname   bind-mounted into every container
      volumes/<name>/          an emptyDir volume (a tmpfs when size-limited)
      containers/<name>/
        config.json rootfs/ upper/ work/    the OCI bundle and its rootfs
        shim.json shim.pid shim.err runc.log init.pid
        started.json           start time and notes (written by the agent)
        exit.json              exit code, finish time, OOM (written by the shim)

Each file has exactly one writer, and JSON files are replaced atomically
(written next to their place, then renamed), so a reader sees the old or the
new document, never half of one. Three are written in place instead
(:func:`write_unread_json`), because nobody reads them while they are
written: ``pod.json`` of a new pod (its directory is renamed into place once
it holds the record), a bundle's ``config.json`` (runc reads it once started
on it) and ``shim.json`` (the shim is handed it once written). If the agent
dies halfway through a start, what it half wrote belongs to a pod whose
record is not ``complete``: the runtime reports that pod's containers as
never created, and the node loop removes it before it starts the instance
again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from shoal.interfaces import Conflict, InvalidInput, PodSpec

from ._shim import process_start_time

__all__ = [
    "ContainerFiles",
    "ExitRecord",
    "PodFiles",
    "PodRecord",
    "StartRecord",
    "read_json",
    "write_json",
    "write_unread_json",
]

M = TypeVar("M", bound=BaseModel)
_COMPLETE = "complete"
"""The empty file that says a pod's containers were all created (:attr:`PodRecord.complete`)."""
_SAFE_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class PodRecord(BaseModel):
    """``pod.json``: what the agent knew when it created the pod."""

    spec: PodSpec
    """The pod as asked for."""
    created_at: datetime
    """When create began."""
    complete: bool = False
    """Set once every container was created; a crash before leaves it False.

    Recorded as the empty file ``complete`` beside ``pod.json`` (see
    :meth:`PodFiles.mark_complete`); :meth:`PodFiles.load` reads both."""
    ip: str | None = None
    """The pod's address, from the network hook (127.0.0.1 in host mode)."""
    netns: str | None = None
    """The network namespace the containers joined; None in host mode."""
    network_attached: bool = False
    """Whether the network hook attached the pod, or was about to (it must detach it)."""


class StartRecord(BaseModel):
    """``started.json``: when the agent last started the container, and notes on it."""

    started_at: datetime
    """When ``runc start`` returned."""
    message: str = ""
    """Why the container ended the way it did, when the agent knows (e.g. SIGKILL after grace)."""


class ExitRecord(BaseModel):
    """``exit.json``: how the container's init process ended, as its shim saw it."""

    exit_code: int
    """Exit status, or 128 + signal number."""
    finished_at: datetime
    """When the shim reaped it."""
    signal: int | None = None
    """The signal that ended it, if one did."""
    oom_killed: bool = False
    """Whether its cgroup's OOM killer fired."""


def write_json(path: Path, document: BaseModel | dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (temporary file, then rename)."""
    partial = path.with_name(f".{path.name}.tmp")
    write_unread_json(partial, document)
    os.replace(partial, path)


def write_unread_json(path: Path, document: BaseModel | dict[str, Any]) -> None:
    """Write ``document`` to ``path`` in place, for a file nobody reads while it is written.

    A new pod's record before its directory is renamed into place, a
    bundle's ``config.json`` before runc is started on it, a shim's settings
    before a shim is handed them: a temporary file and a rename (about a
    tenth of a millisecond each on a start's path) would protect no reader.
    """
    text = document.model_dump_json() if isinstance(document, BaseModel) else json.dumps(document)
    path.write_text(text)


def read_json(path: Path, model: type[M]) -> M | None:
    """Return the document at ``path``, or None when it is missing or unreadable."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ContainerFiles:
    """The files of one container (see the module docstring)."""

    directory: Path
    log: Path

    @property
    def rootfs(self) -> Path:
        """The container's root filesystem (mount point or copy)."""
        return self.directory / "rootfs"

    @property
    def config(self) -> Path:
        """The bundle's ``config.json``."""
        return self.directory / "config.json"

    @property
    def shim_config(self) -> Path:
        """What the shim is told."""
        return self.directory / "shim.json"

    @property
    def shim_pid(self) -> Path:
        """The shim's process id."""
        return self.directory / "shim.pid"

    @property
    def init_pid(self) -> Path:
        """The container init's host process id (written by the shim, which adopted the init)."""
        return self.directory / "init.pid"

    @property
    def started(self) -> Path:
        """The agent's :class:`StartRecord`."""
        return self.directory / "started.json"

    @property
    def exit(self) -> Path:
        """The shim's :class:`ExitRecord`."""
        return self.directory / "exit.json"

    def shim_settings(self) -> dict[str, str]:
        """Return the per-container paths the shim needs."""
        return {
            "log": str(self.log),
            "exit_file": str(self.exit),
            "pid_file": str(self.init_pid),
            "shim_pid_file": str(self.shim_pid),
            "runc_log": str(self.directory / "runc.log"),
            "diagnostics": str(self.directory / "shim.err"),
            "bundle": str(self.directory),
        }

    def ended(self) -> bool:
        """Return whether the container's init has exited (or cannot be running any more).

        Normally that is ``exit.json`` existing; if the shim died, it is the
        init process being gone, since no exit file will ever come.
        """
        if self.exit.exists():
            return True
        if self.shim_alive():
            return False
        try:
            pid = int(self.init_pid.read_text().strip())
        except (OSError, ValueError):
            return True
        return not process_start_time(pid)

    def shim_alive(self) -> bool:
        """Return whether the container's shim process still runs."""
        try:
            pid, started = self.shim_pid.read_text().split()
        except (OSError, ValueError):
            return False
        return started == process_start_time(int(pid))

    def open_shim(self) -> int | None:
        """Return a pidfd of the container's shim (readable once it exits), or None if it is gone.

        The shim exits after it wrote ``exit.json``: the container has ended
        then. The pid's start time is checked after the pidfd is open, so a pid
        reused meanwhile by another process is never taken for the shim.
        """
        try:
            pid, started = self.shim_pid.read_text().split()
            pidfd = os.pidfd_open(int(pid))
        except (OSError, ValueError, AttributeError):  # no pid file, gone, or no pidfds
            return None
        if started != process_start_time(int(pid)):
            os.close(pidfd)
            return None
        return pidfd


class PodFiles:
    """The on-disk home of every pod under one runtime root.

    Args:
        root: The runtime's root directory; pods live in ``root/pods``.

    """

    def __init__(self, root: Path) -> None:
        self.pods = root / "pods"

    @staticmethod
    def check_uid(uid: str) -> str:
        """Return ``uid`` if it can name a directory and a runc container.

        Raises:
            InvalidInput: it has other characters than letters, digits, ``_.-``.

        """
        if not _SAFE_UID.match(uid):
            raise InvalidInput(
                f"pod uid {uid!r} cannot name a container: use 1-128 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit",
                field="uid",
            )
        return uid

    @staticmethod
    def valid_uid(uid: str) -> bool:
        """Return whether ``uid`` can name a directory and a runc container."""
        return bool(_SAFE_UID.match(uid))

    def directory(self, uid: str) -> Path:
        """Return the pod's directory."""
        return self.pods / self.check_uid(uid)

    def exists(self, uid: str) -> bool:
        """Return whether pod ``uid`` has a directory (false for a uid that cannot have one)."""
        return bool(_SAFE_UID.match(uid)) and (self.pods / uid).exists()

    def record_path(self, uid: str) -> Path:
        """Return the pod's ``pod.json``."""
        return self.directory(uid) / "pod.json"

    def load(self, uid: str) -> PodRecord | None:
        """Return the pod's record, or None when there is no such pod."""
        if not _SAFE_UID.match(uid):
            return None
        record = read_json(self.record_path(uid), PodRecord)
        if record is not None and not record.complete:
            record.complete = (self.directory(uid) / _COMPLETE).exists()
        return record

    def save(self, record: PodRecord) -> None:
        """Write the pod's record."""
        write_json(self.record_path(record.spec.uid), record)

    def mark_complete(self, record: PodRecord) -> None:
        """Record that every container of the pod was created: the empty file ``complete``.

        Not ``pod.json`` written again: replacing a file by a rename makes
        ext4 write the new one out at once (``auto_da_alloc``), about a
        millisecond on every start here; creating an empty file costs a
        tenth of that.
        """
        (self.directory(record.spec.uid) / _COMPLETE).touch()
        record.complete = True

    def uids(self) -> list[str]:
        """Return the uids of every pod directory."""
        if not self.pods.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.pods.iterdir()
            if entry.is_dir() and _SAFE_UID.match(entry.name)
        )

    def container(self, uid: str, name: str) -> ContainerFiles:
        """Return the files of container ``name`` of pod ``uid``."""
        pod = self.directory(uid)
        return ContainerFiles(pod / "containers" / name, pod / f"{name}.log")

    @staticmethod
    def container_id(uid: str, name: str) -> str:
        """Return the runtime's id of container ``name`` of pod ``uid``."""
        return f"{uid}-{name}"

    def create(self, record: PodRecord) -> None:
        """Create the pod's directory with its record in one rename (blocking).

        A crash leaves either nothing or a complete ``pod.json``; a hidden
        ``.new-*`` directory at most, which :meth:`sweep` deletes.

        Raises:
            Conflict: the pod's directory exists already.

        """
        self.pods.mkdir(parents=True, exist_ok=True)
        # Root only: pod.json and each bundle's config.json hold the resolved
        # environment, Secret values included.
        self.pods.chmod(0o700)
        fresh = self.pods / f".new-{uuid.uuid4().hex}"
        fresh.mkdir()
        write_unread_json(fresh / "pod.json", record)
        try:
            fresh.rename(self.directory(record.spec.uid))
        except OSError as exc:
            shutil.rmtree(fresh, ignore_errors=True)
            raise Conflict(
                f"a pod with uid {record.spec.uid!r} exists already", uid=record.spec.uid
            ) from exc

    def write_etc(self, record: PodRecord) -> None:
        """Write the pod's /etc/hostname, /etc/hosts and /etc/resolv.conf (blocking)."""
        etc = self.directory(record.spec.uid) / "etc"
        etc.mkdir(exist_ok=True)
        hostname = record.spec.name[:63]
        (etc / "hostname").write_text(hostname + "\n")
        (etc / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{record.ip or '127.0.0.1'}\t{hostname}\n"
        )
        try:
            resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            resolv = ""
        (etc / "resolv.conf").write_text(resolv)

    def sweep(self) -> None:
        """Delete pod directories a crash left half-made, once older than a minute."""
        if not self.pods.is_dir():
            return
        for leftover in self.pods.glob(".new-*"):
            with contextlib.suppress(OSError):
                if time.time() - leftover.stat().st_mtime > 60:
                    shutil.rmtree(leftover, ignore_errors=True)
