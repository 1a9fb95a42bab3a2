"""Restart policy: whether a finished instance runs again, and after how long."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from shoal.interfaces import Instance, InstanceState, RestartPolicy

__all__ = ["BACKOFF_REASONS", "BACKOFF_RESET", "IMAGE_PULL_FAILED", "restart", "should_restart"]

BACKOFF_RESET = timedelta(minutes=10)
"""A run at least this long resets the backoff, as in Kubernetes."""
IMAGE_PULL_FAILED = "ImagePullFailed"
"""The reason of an instance whose image could not be pulled (its node reports it)."""
CRASH_LOOP, IMAGE_PULL_BACKOFF = "CrashLoopBackOff", "ImagePullBackOff"
BACKOFF_REASONS = frozenset({CRASH_LOOP, IMAGE_PULL_BACKOFF})
"""The reasons of an instance waiting out a growing backoff after failing again and again:
it counts as failing until it starts (as Kubernetes names them: a crash, a pull)."""


def should_restart(policy: RestartPolicy, inst: Instance) -> bool:
    """Return whether a finished ``inst`` is restarted under ``policy``."""
    if policy == RestartPolicy.ALWAYS:
        return True
    return policy == RestartPolicy.ON_FAILURE and inst.state == InstanceState.FAILED


def restart(inst: Instance, now: datetime, backoff: Callable[[int], float]) -> Instance:
    """Return ``inst`` scheduled again on its node after its backoff.

    The backoff grows with consecutive restarts (``backoff(n)``); a long run
    before this exit starts the streak over. The reason is ``Restarting`` for
    the first restart of a streak and ``CrashLoopBackOff`` after that
    (``ImagePullBackOff`` when it is the image that cannot be pulled).
    """
    count = inst.restart_count
    ran = (inst.finished_at - inst.started_at) if inst.finished_at and inst.started_at else None
    streak = 0 if ran is not None and ran >= BACKOFF_RESET else count
    delay = backoff(streak)
    if inst.exit_code is not None:
        why = f"exited with code {inst.exit_code}"
    else:  # it never ran: the image could not be pulled, the start failed, ...
        why = f"{inst.reason}: {inst.message}" if inst.message else inst.reason
    looping = IMAGE_PULL_BACKOFF if inst.reason == IMAGE_PULL_FAILED else CRASH_LOOP
    restarted = inst.transition(
        InstanceState.SCHEDULED,
        looping if streak else "Restarting",
        f"{why}; restarting in {delay:g}s",
    )
    return restarted.model_copy(
        update={
            "restart_count": count + 1,
            "not_before": now + timedelta(seconds=delay),
            "ready": False,
        }
    )
