"""The listeners of a runtime that announces exits (:class:`~shoal.interfaces.PodExits`).

A listener is told the pod's uid in a context of its own, not in the context
of whoever made the container (its start's span and the request it served
are over by then), and a listener that raises is logged: an exit is one
pod's news, never a reason for the runtime, or the agent around it, to stop.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable

__all__ = ["ExitListeners"]

log = logging.getLogger(__name__)


class ExitListeners:
    """Who is told when a container of a pod exits; empty (falsy) until one is added."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], object]] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """Tell ``listener`` of every exit from now on; return the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def tell(self, uid: str) -> None:
        """Tell every listener that a container of pod ``uid`` exited."""
        for listener in list(self._listeners):
            try:
                contextvars.Context().run(listener, uid)
            except Exception:
                log.exception("a listener of container exits failed on pod %s", uid)
