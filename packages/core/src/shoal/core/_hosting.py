"""How a front door joins the agent process: the contract between ``shoal.agent`` and them.

The agent (the composition root) hosts the REST API; other front doors join
it as an :data:`AgentMount`: a factory that gets an :class:`AgentContext`
and, while its context is entered, serves an ASGI app at a path of the API
(``shoal.mcp`` mounts the MCP endpoint at ``/mcp``). Defined here, beside the
service layer the context carries, so a front door needs neither the agent
nor another front door to take part.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import VerifyKey

from shoal.interfaces import NO_METRICS, Metrics, Role

from ._service import ShoalService

__all__ = ["ASGIApp", "AgentContext", "AgentMount", "KeyLookup"]

_Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [_Message, Callable[[], Awaitable[_Message]], Callable[[_Message], Awaitable[None]]],
    Awaitable[None],
]
"""An ASGI application (the same shape as ``starlette.types.ASGIApp``)."""

KeyLookup = Callable[[str], tuple[Role, VerifyKey] | None]
"""Maps a key id to ``(role, public key)`` from authorized_keys, or None."""


@dataclass(frozen=True)
class AgentContext:
    """What the agent hands a mounted front door."""

    service: ShoalService
    """The node's service layer (bind the caller with ``with_actor``)."""
    keys: KeyLookup
    """The live authorized_keys lookup: key id → (role, public key)."""
    api_addr: str
    """The address the API listens on, HOST:PORT."""
    api_host: str
    """The host part of :attr:`api_addr` (no brackets for IPv6)."""
    metrics: Metrics = field(default=NO_METRICS)
    """The node's metrics (a front door records its calls there)."""


AgentMount = Callable[[AgentContext], AbstractAsyncContextManager[tuple[str, ASGIApp]]]
"""Enters a front door's lifetime and yields ``(path, ASGI app)`` to serve until it exits."""
