"""The logs of a pod's previous run, kept when the node loop removes it to start it again.

Kubernetes keeps a restarting container's last ended run, so ``kubectl logs
--previous`` shows why it ended. Shoal starts a pod again as a new pod under
the same uid, so a runtime that writes logs to files moves them aside when it
removes the pod with ``keep_logs``, one run deep: ``ROOT/previous/UID/NAME.log``
(and its rotated files, ``NAME.log.1`` …, in the same format as the live log,
read by the same reader). They go when the pod is removed for good (``remove``
without ``keep_logs``), when the node loop finds no instance claims them
(:meth:`PreviousLogs.prune`), and with the data directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Container, Mapping
from pathlib import Path

from shoal.runtime._keptlogs import no_previous_log

from ._ocifiles import PodFiles

__all__ = ["PreviousLogs"]

log = logging.getLogger(__name__)


class PreviousLogs:
    """The kept logs of every pod under one runtime root (blocking file operations)."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "previous"

    def keep(self, uid: str, logs: Mapping[str, Path]) -> None:
        """Make ``logs`` (container name → its log file) the pod's previous run's.

        Called as the pod is removed, its directory still there. The files
        (with their rotated ``.1``, ``.2`` … beside them) are moved, not
        copied, in place of what was kept before: a container that wrote
        nothing leaves nothing, so a run that printed nothing shows nothing,
        never an older run. They are gathered beside the kept ones and swapped
        in by two renames, so a reader meanwhile finds one run or the other.
        Best effort: a file system that refuses (full, or another mount) loses
        these logs, with a warning, and the pod's removal goes on.
        """
        kept = self.directory / PodFiles.check_uid(uid)
        fresh, old = self.directory / f".new-{uid}", self.directory / f".old-{uid}"
        try:
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
            # Root only, as the pods' own directory: a log may show what a Secret holds.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh.mkdir(mode=0o700)
            for name, current in logs.items():
                for path in [current, *current.parent.glob(f"{current.name}.*")]:
                    rotated = path.name.removeprefix(current.name)
                    if rotated and not rotated[1:].isdigit():
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(path, fresh / f"{name}.log{rotated}")
            with contextlib.suppress(FileNotFoundError):
                kept.rename(old)
            fresh.rename(kept)
        except OSError as exc:
            log.warning(
                "cannot keep the logs of pod %s as its previous run's (%s): they go with it",
                uid,
                exc,
            )
            shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    def drop(self, uid: str) -> None:
        """Remove the pod's kept logs; none kept is fine."""
        shutil.rmtree(self.directory / PodFiles.check_uid(uid), ignore_errors=True)

    def prune(self, keep: Container[str], pod_exists: Callable[[str], bool]) -> list[str]:
        """Remove the kept logs of every pod but ``keep`` (uids) whose pod is gone; return those.

        A pod that still exists keeps them: its own removal decides.
        """
        if not self.directory.is_dir():
            return []
        gone: list[str] = []
        for entry in self.directory.iterdir():
            # ".new-UID" and ".old-UID": what a keep cut short by a crash left.
            uid = entry.name.split("-", 1)[-1] if entry.name.startswith(".") else entry.name
            if uid not in keep and not pod_exists(uid):
                shutil.rmtree(entry, ignore_errors=True)
                if uid == entry.name:
                    gone.append(uid)
        return sorted(gone)

    def log(self, uid: str, container: str) -> Path:
        """Return the kept log of the pod's container (its rotated files beside it).

        Raises:
            NotFound: none is kept (the message says which are).

        """
        kept = self.directory / PodFiles.check_uid(uid)
        if not kept.is_dir():
            raise no_previous_log(uid, container, None)
        names = sorted({path.name.split(".", 1)[0] for path in kept.iterdir()})
        if container not in names:
            raise no_previous_log(uid, container, names)
        return kept / f"{container}.log"
