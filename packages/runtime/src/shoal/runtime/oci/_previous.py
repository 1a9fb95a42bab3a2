"""The logs of a pod's previous run, kept when the node loop removes it to start it again.

Kubernetes keeps a restarting container's last ended run, so ``kubectl logs
--previous`` shows why it ended. Shoal starts a pod again as a new pod under
the same uid, so a runtime that writes logs to files moves them aside when it
removes the pod with ``keep_logs``, one run deep: ``ROOT/previous/UID/NAME.log``
(the same format as the live log, read by the same reader). They go when the
pod is removed for good (``remove`` without ``keep_logs``), and with the data
directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from shoal.runtime._previous import no_previous_log

from ._ocifiles import PodFiles

__all__ = ["PreviousLogs"]


class PreviousLogs:
    """The kept logs of every pod under one runtime root (blocking file operations)."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "previous"

    def keep(self, uid: str, logs: Mapping[str, Path]) -> None:
        """Make ``logs`` (container name → its log file) the pod's previous run's.

        The files are moved, not copied; what was kept before goes first. A
        log that does not exist (its container never started) is left out;
        when none does, what was kept before stays (the last run that wrote).
        """
        kept = self.directory / PodFiles.check_uid(uid)
        written = {name: log for name, log in logs.items() if log.exists()}
        if not written:
            return
        shutil.rmtree(kept, ignore_errors=True)
        # Root only, as the pods' own directory: a log may show what a Secret holds.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept.mkdir(mode=0o700)
        for name, log in written.items():
            with contextlib.suppress(FileNotFoundError):
                os.replace(log, kept / f"{name}.log")

    def drop(self, uid: str) -> None:
        """Remove the pod's kept logs; none kept is fine."""
        shutil.rmtree(self.directory / PodFiles.check_uid(uid), ignore_errors=True)

    def log(self, uid: str, container: str) -> Path:
        """Return the kept log of the pod's container.

        Raises:
            NotFound: none is kept (the message says which are).

        """
        kept = self.directory / PodFiles.check_uid(uid)
        names = sorted(path.stem for path in kept.glob("*.log"))
        if container in names:
            return kept / f"{container}.log"
        raise no_previous_log(uid, container, names)
