"""How the dashboard joins the agent: an agent mount serving ``/ui`` and everything under it.

The shape matches ``shoal.core.AgentMount`` structurally (a factory taking the
agent's context, yielding ``(path, ASGI app)``), so this package needs
neither the agent nor the core, only the ``Service`` protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from starlette.types import ASGIApp

from shoal.interfaces import StatuszSource

from ._app import create_ui_app
from ._auth import ActsAs, Authenticate, Enrol

__all__ = ["UI_PATH", "ActsAs", "Authenticate", "UiHost", "ui_mount"]

UI_PATH = "/ui"


class UiHost(Protocol):
    """What the dashboard needs of the agent's context (``shoal.core.AgentContext``)."""

    @property
    def service(self) -> ActsAs:
        """The node's service layer."""
        ...


def ui_mount(
    authenticate: Authenticate,
    enrol: Enrol | None = None,
    statusz: StatuszSource | None = None,
) -> Callable[[UiHost], AbstractAsyncContextManager[tuple[str, ASGIApp]]]:
    """Return the agent mount that serves the dashboard at ``/ui``.

    Args:
        authenticate: Checks a request's RFC 9421 signature and returns its caller.
        enrol: Redeems one-time enrolment codes; ``None`` refuses them.
        statusz: The node's status (leader, uptime, store), shown on the overview.
    """

    @asynccontextmanager
    async def mount(host: UiHost) -> AsyncIterator[tuple[str, ASGIApp]]:
        # The agent serves a mount at exactly its path: a path parameter makes
        # the route cover the pages, fragments and static files beneath it.
        yield (
            UI_PATH + "{shoal_ui_path:path}",
            create_ui_app(host.service, authenticate, enrol, statusz),
        )

    return mount
