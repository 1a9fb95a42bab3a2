"""The logs of a pod's previous run, kept when the node loop removes it to start it again.

Kubernetes keeps a restarting container's last ended run, so ``kubectl logs
--previous`` shows why it ended. Shoal starts a pod again as a new pod under
the same uid, so a runtime that writes logs to files moves them aside when it
removes the pod with ``keep_logs``, one run deep: ``ROOT/previous/UID`` is a
link to the directory of the run kept (``.run-UID-*``), which holds
``NAME.log`` and its rotated files (``NAME.log.1`` …, in the same format as the
live log, read by the same reader). A run is gathered beside the kept one and
the link swapped to it in one rename, so a reader finds one run whole or the
other, never a mix. The logs go when the pod is removed for good (``remove``
without ``keep_logs``), when the node loop finds no instance claims them
(:meth:`PreviousLogs.prune`), and with the data directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Container, Mapping
from pathlib import Path

from shoal.runtime._keptlogs import no_previous_log

from ._ocifiles import PodFiles

__all__ = ["PreviousLogs"]

log = logging.getLogger(__name__)

_RUN, _LINK = ".run-", ".link-"
"""Name prefixes of a kept run's directory and of a link being made."""


class PreviousLogs:
    """The kept logs of every pod under one runtime root (blocking file operations)."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "previous"

    def keep(self, uid: str, logs: Mapping[str, Path], *, ran: bool) -> None:
        """Make ``logs`` (container name → its log file) the pod's previous run's.

        Called as the pod is removed, its files still there. ``ran`` says
        whether any of its containers started: a run none of whose containers
        did (its image could not be pulled) leaves what was kept before, the
        last run that ran. Otherwise the files (with their rotated ``.1``,
        ``.2`` … beside them) are moved, not copied, in place of what was
        kept: a container that wrote nothing leaves nothing, so a run that
        printed nothing shows nothing, never an older run. Best effort: a file
        system that refuses (full, or another mount) loses these logs, with a
        warning, and the pod's removal goes on.
        """
        if not ran:
            return
        link = self.directory / PodFiles.check_uid(uid)
        run = self.directory / f"{_RUN}{uid}-{secrets.token_hex(4)}"
        making = self.directory / f"{_LINK}{uid}"
        try:
            # Root only, as the pods' own directory: a log may show what a Secret holds.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            run.mkdir(mode=0o700)
            for name, current in logs.items():
                for path in [current, *current.parent.glob(f"{current.name}.*")]:
                    rotated = path.name.removeprefix(current.name)
                    if rotated and not rotated[1:].isdigit():
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(path, run / f"{name}.log{rotated}")
            with contextlib.suppress(FileNotFoundError):
                making.unlink()
            making.symlink_to(run.name)
            os.replace(making, link)  # the swap: a reader sees the old run or this one
        except OSError as exc:
            log.warning(
                "cannot keep the logs of pod %s as its previous run's (%s): they go with it",
                uid,
                exc,
            )
            shutil.rmtree(run, ignore_errors=True)
            return
        self._remove_runs(uid, but=run.name)

    def drop(self, uid: str) -> None:
        """Remove the pod's kept logs; none kept is fine."""
        link = self.directory / PodFiles.check_uid(uid)
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # a directory in its place, not a link: it goes too
            shutil.rmtree(link, ignore_errors=True)
        self._remove_runs(uid)

    def prune(self, keep: Container[str], pod_exists: Callable[[str], bool]) -> list[str]:
        """Remove the kept logs of every pod but ``keep`` (uids) whose pod is gone; return those.

        A pod that still exists keeps them: its own removal decides.
        """
        if not self.directory.is_dir():
            return []
        uids = {_uid_of(entry.name) for entry in self.directory.iterdir()}
        gone = sorted(
            uid
            for uid in uids
            if PodFiles.valid_uid(uid) and uid not in keep and not pod_exists(uid)
        )
        for uid in gone:
            self.drop(uid)
        return gone

    def log(self, uid: str, container: str) -> Path:
        """Return the kept log of the pod's container (its rotated files beside it).

        The path is in the kept run's own directory, not through the link: a
        reader reads that run, whatever is kept after.

        Raises:
            NotFound: none is kept (the message says which are).

        """
        link = self.directory / PodFiles.check_uid(uid)
        for _ in range(10):  # a run swapped in (and the last one removed) while looking: again
            try:
                target = os.readlink(link)
                run = self.directory / target
                names = sorted({path.name.split(".", 1)[0] for path in run.iterdir()})
                if os.readlink(link) != target:
                    continue
            except FileNotFoundError:
                if not os.path.lexists(link):
                    break  # none kept
                continue
            if container not in names:
                raise no_previous_log(uid, container, names)
            return run / f"{container}.log"
        raise no_previous_log(uid, container, None)

    def _remove_runs(self, uid: str, but: str = "") -> None:
        for run in self.directory.glob(f"{_RUN}{uid}-*"):
            if run.name != but:
                shutil.rmtree(run, ignore_errors=True)


def _uid_of(name: str) -> str:
    """Return the pod uid an entry of the directory belongs to."""
    if name.startswith(_RUN):
        return name.removeprefix(_RUN).rsplit("-", 1)[0]
    return name.removeprefix(_LINK)
