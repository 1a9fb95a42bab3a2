"""Typed records for the bodies a Serf agent sends over its RPC protocol.

The agent encodes Go structs with msgpack: field names are map keys
(``Name``, ``Addr``, ``Status``, ...), ``[]byte`` fields arrive as msgpack
``bin`` and a member's ``Addr`` is a Go ``net.IP`` (4 or 16 raw bytes). The
decoders here turn those maps into frozen dataclasses and are lenient about
what they do not use, so an agent that adds fields keeps working; a map that
lacks a field they need is a protocol error (:class:`SerfProtocolError`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from shoal.interfaces import InternalError

__all__ = [
    "MemberEventRecord",
    "QueryEventRecord",
    "QueryRecord",
    "SerfEventRecord",
    "SerfMember",
    "SerfProtocolError",
    "UserEventRecord",
    "decode_event",
    "decode_member",
    "decode_query_record",
]


class SerfProtocolError(InternalError):
    """The agent sent something this client cannot read (a bug on one side)."""

    code = "serf_protocol_error"


@dataclass(frozen=True, slots=True)
class SerfMember:
    """One member as the agent reports it (``members`` and member events)."""

    name: str
    """Node name, unique in the cluster."""
    host: str
    """Gossip IP address, e.g. ``127.0.0.1``."""
    port: int
    """Gossip port."""
    status: str
    """Serf's member status: ``alive``, ``leaving``, ``left``, ``failed`` or ``none``."""
    tags: dict[str, str] = field(default_factory=dict)
    """The member's published tags."""

    @property
    def address(self) -> str:
        """Return ``host:port``, bracketing an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MemberEventRecord:
    """A membership change from a ``stream`` subscription."""

    event: str
    """``member-`` + ``join``, ``leave``, ``failed``, ``update`` or ``reap``."""
    members: tuple[SerfMember, ...]
    """The members it happened to."""


@dataclass(frozen=True, slots=True)
class UserEventRecord:
    """A user event (``serf event``) from a ``stream`` subscription."""

    name: str
    """The event's name."""
    payload: bytes
    """Opaque payload."""
    ltime: int
    """Lamport time of the event."""
    coalesce: bool
    """Whether the sender allowed coalescing."""


@dataclass(frozen=True, slots=True)
class QueryEventRecord:
    """A query another member asked, from a ``stream`` subscription; answer with ``respond``."""

    id: int
    """Opaque id to pass to ``respond``; valid on this connection only."""
    name: str
    """The query's name."""
    payload: bytes
    """Opaque payload."""
    ltime: int
    """Lamport time of the query."""


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One record of a query's response stream: an ack, a response, or done."""

    type: str
    """``ack``, ``response`` or ``done``."""
    source: str = ""
    """The member that acked or responded (empty for ``done``)."""
    payload: bytes = b""
    """The response payload (empty for ``ack`` and ``done``)."""


SerfEventRecord = MemberEventRecord | UserEventRecord | QueryEventRecord
"""Anything a ``stream`` subscription delivers."""


def _field(body: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise SerfProtocolError(
            f"the serf agent sent a record without a valid {name!r} field: {body!r}",
            field=name,
        )
    return value


def _as_bytes(value: Any) -> bytes:
    """Return ``value`` as bytes: ``bin`` normally, ``str`` from old raw-string encoders."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return b""


def _decode_ip(raw: Any) -> str:
    data = _as_bytes(raw)
    try:
        ip = ipaddress.ip_address(data)
    except ValueError:
        return data.decode("ascii", "replace")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # Go's 16-byte form of an IPv4 address
    return str(ip)


def decode_member(body: Any) -> SerfMember:
    """Decode one member map.

    Raises:
        SerfProtocolError: ``body`` is not a member map.

    """
    if not isinstance(body, dict):
        raise SerfProtocolError(f"the serf agent sent a member that is not a map: {body!r}")
    tags = body.get("Tags") or {}
    return SerfMember(
        name=_field(body, "Name", str),
        host=_decode_ip(body.get("Addr")),
        port=int(body.get("Port") or 0),
        status=str(body.get("Status") or "none"),
        tags={str(key): str(value) for key, value in tags.items()},
    )


def decode_event(body: Any) -> SerfEventRecord:
    """Decode one record of a ``stream`` subscription.

    Raises:
        SerfProtocolError: ``body`` is not an event record this client knows.

    """
    if not isinstance(body, dict):
        raise SerfProtocolError(f"the serf agent sent an event that is not a map: {body!r}")
    event = _field(body, "Event", str)
    if event.startswith("member-"):
        members = tuple(decode_member(member) for member in body.get("Members") or [])
        return MemberEventRecord(event=event, members=members)
    if event == "user":
        return UserEventRecord(
            name=_field(body, "Name", str),
            payload=_as_bytes(body.get("Payload")),
            ltime=int(body.get("LTime") or 0),
            coalesce=bool(body.get("Coalesce")),
        )
    if event == "query":
        return QueryEventRecord(
            id=_field(body, "ID", int),
            name=_field(body, "Name", str),
            payload=_as_bytes(body.get("Payload")),
            ltime=int(body.get("LTime") or 0),
        )
    raise SerfProtocolError(f"the serf agent sent an unknown event type {event!r}", event=event)


def decode_query_record(body: Any) -> QueryRecord:
    """Decode one record of a query's response stream.

    Raises:
        SerfProtocolError: ``body`` is not a query record.

    """
    if not isinstance(body, dict):
        raise SerfProtocolError(f"the serf agent sent a query record that is not a map: {body!r}")
    return QueryRecord(
        type=_field(body, "Type", str),
        source=str(body.get("From") or ""),
        payload=_as_bytes(body.get("Payload")),
    )
