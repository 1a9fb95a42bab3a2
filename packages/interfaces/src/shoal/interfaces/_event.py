"""Events: the persisted, streamable audit trail of everything that happened."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Model
from ._tracing import TRACE_ID_PATTERN
from ._wire import Via

__all__ = ["MAX_EVENT_BYTES", "Actor", "Event", "EventType", "ObjectRef"]

MAX_EVENT_BYTES = 16 * 1024
"""The largest event (as JSON) a worker may record: the servers refuse more, so a node's
event budget (600 a minute) cannot carry megabytes."""


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
    trace_id: str | None = Field(default=None, pattern=TRACE_ID_PATTERN)
    """The trace of the request whose work this event records (see ``get_trace``): the
    request's own trace, also for what its controllers did later; None without tracing."""
