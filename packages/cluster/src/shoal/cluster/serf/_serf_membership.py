"""How Serf's members and member events read as Shoal's Member and MemberEvent.

Serf's member statuses map onto :class:`~shoal.interfaces.GossipState`:

==========  ==========
serf        shoal
==========  ==========
alive       alive
leaving     left
left        left
failed      failed
(other)     suspect
==========  ==========

A ``failed`` member whose last tags carry ``bye`` (:data:`LEAVING_TAG`) is
``left``: it announced its leave in its tags before asking Serf to leave, and
Serf's leave intent was overtaken by memberlist's own goodbye or by its
failure detector (both travel separately; Serf turns such a member ``left``
when the intent arrives late, but a leader acting in between would replace
the node's instances with warnings, as after a crash).

Serf keeps memberlist's suspicion to itself (a suspect member stays
``alive`` until declared ``failed``), so no ``suspect`` event comes from it.
``member-join``, ``member-update``, ``member-leave`` and ``member-failed``
become ``joined``, ``updated``, ``left`` and ``failed``; ``member-reap`` (a
failed or left member forgotten after Serf's reap timeout) becomes none:
subscribers already had its ``failed`` or ``left``.

:func:`membership_changes` is what a reconnecting cluster manager tells its
subscribers: the difference between what they were told and what the agent
knows now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shoal.cluster._tags import LEAVING_TAG
from shoal.interfaces import GossipState, Member, MemberEventKind

from ._serf_records import SerfMember

__all__ = ["MEMBER_EVENTS", "event_kind", "membership_changes", "to_member"]

MEMBER_EVENTS = "member-join,member-leave,member-failed,member-update,member-reap"
"""The ``stream`` filter for every membership event."""

_KINDS = {
    "member-join": MemberEventKind.JOINED,
    "member-update": MemberEventKind.UPDATED,
    "member-leave": MemberEventKind.LEFT,
    "member-failed": MemberEventKind.FAILED,
}
_STATES = {
    "alive": GossipState.ALIVE,
    "leaving": GossipState.LEFT,
    "left": GossipState.LEFT,
    "failed": GossipState.FAILED,
}
_KIND_OF_STATE = {
    GossipState.ALIVE: MemberEventKind.JOINED,
    GossipState.SUSPECT: MemberEventKind.SUSPECT,
    GossipState.FAILED: MemberEventKind.FAILED,
    GossipState.LEFT: MemberEventKind.LEFT,
}


def to_member(member: SerfMember) -> Member:
    """Return ``member`` as a :class:`~shoal.interfaces.Member`."""
    state = _STATES.get(member.status, GossipState.SUSPECT)
    if state is GossipState.FAILED and member.tags.get(LEAVING_TAG):
        state = GossipState.LEFT
    return Member(name=member.name, address=member.address, state=state, tags=member.tags)


def event_kind(event: str, member: Member) -> MemberEventKind | None:
    """Return the kind of a Serf member event for ``member``, or None if it raises none.

    ``member-failed`` of a member that said goodbye (see :func:`to_member`) is ``left``.
    """
    kind = _KINDS.get(event)
    if kind is MemberEventKind.FAILED and member.state is GossipState.LEFT:
        return MemberEventKind.LEFT
    return kind


def membership_changes(
    known: Mapping[str, Member], current: Iterable[Member], *, rejoined: str | None = None
) -> dict[MemberEventKind, list[Member]]:
    """Return the events that take subscribers from ``known`` to ``current``.

    A member that is new, or alive again after failing or leaving, ``joined``;
    one whose tags or address changed ``updated``; one that failed or left
    since is ``failed`` or ``left``. Members missing from ``current`` raise
    nothing (a restarted agent may simply not have met them again yet).
    ``rejoined`` names a member that ``joined`` whatever it was before: this
    node, whose agent was restarted.
    """
    changes: dict[MemberEventKind, list[Member]] = {}
    for member in current:
        before = known.get(member.name)
        if member.name != rejoined:
            if before == member:
                continue
            if before is not None and before.state == member.state == GossipState.ALIVE:
                changes.setdefault(MemberEventKind.UPDATED, []).append(member)
                continue
        kind = MemberEventKind.JOINED if member.name == rejoined else _KIND_OF_STATE[member.state]
        changes.setdefault(kind, []).append(member)
    return changes
