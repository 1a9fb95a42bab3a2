"""Events: the persisted, streamable audit trail of everything that happened."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Model

__all__ = ["Actor", "Event", "EventType", "ObjectRef"]


class EventType(StrEnum):
    """Normal for expected changes, Warning for trouble."""

    NORMAL = "Normal"
    WARNING = "Warning"


class ObjectRef(Model):
    """The object an event is about."""

    kind: str
    """Workload, Instance or Node."""
    name: str
    """Object name."""
    namespace: str | None = None
    """Namespace, for namespaced kinds."""

    def __str__(self) -> str:
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()}/{prefix}{self.name}"


class Via(StrEnum):
    """The front door (or the component) a change came through, for events and the audit."""

    REST = "rest"
    """The REST API, called by anything that signs its requests."""
    CLI = "cli"
    """The ``shoal`` command (it calls the REST API and says so in a signed header)."""
    MCP = "mcp"
    """The MCP server: in the agent, or ``shoal mcp`` over stdio (through the REST API)."""
    UI = "ui"
    """The web dashboard at ``/ui``: requests signed in the browser with its own key."""
    CONTROL_LOOP = "control-loop"
    NODE_LOOP = "node-loop"
    SYSTEM = "system"


VIA_HEADER = "shoal-via"
"""The request header in which a signed client says which front door it serves.

The REST API believes it only when the request's signature covers it, and
only for :data:`DECLARED_VIAS`; else the call came via ``rest``.
"""

DECLARED_VIAS = frozenset({Via.CLI, Via.MCP})
"""What a signed client may declare in :data:`VIA_HEADER`."""


class Actor(Model):
    """Who did something, and through which front door."""

    id: str
    """Key id of the caller, or a component name such as 'control-loop'."""
    via: Via
    """The front door or component: set by the front door that took the call."""


class Event(Model):
    """Something that happened to an object."""

    id: str = ""
    """Store key suffix; orders events by time."""
    time: datetime
    """When it happened."""
    type: EventType = EventType.NORMAL
    """Normal or Warning."""
    object: ObjectRef
    """What it is about."""
    reason: str
    """One-word cause, e.g. 'Scheduled', 'Applied', 'FailedScheduling'."""
    message: str
    """What happened, for humans."""
    actor: Actor
    """Who did it."""
    details: dict[str, str] = Field(default_factory=dict)
    """Extra context (e.g. arguments of a call, secrets redacted)."""
    trace_id: str | None = None
    """The trace of the request whose work this event records (see ``get_trace``): the
    request's own trace, also for what its controllers did later; None without tracing."""
