"""What every runtime says when a pod's previous run's log is asked for and none is kept."""

from __future__ import annotations

from collections.abc import Sequence

from shoal.interfaces import NotFound

__all__ = ["no_previous_log"]


def no_previous_log(uid: str, container: str, kept: Sequence[str] | None) -> NotFound:
    """Return the error for ``logs(previous=True)`` of ``container``.

    ``kept`` names the containers whose logs of the previous run are kept:
    None when no previous run is kept at all.
    """
    if kept is None:
        message = (
            f"pod {uid!r} has no previous run's logs: it has not been started again "
            "since it was created"
        )
    elif not kept:
        message = f"pod {uid!r}'s previous run wrote no log"
    else:
        message = (
            f"pod {uid!r} kept its previous run's logs of {', '.join(kept)}, not of {container!r}"
        )
    return NotFound(message, uid=uid, container=container)
