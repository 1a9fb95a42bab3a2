"""The ClusterManager protocol: who is in the cluster, and who failed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import Field

from ._base import Model
from ._node import GossipState

__all__ = ["ClusterManager", "Member", "MemberEvent", "MemberEventKind"]


class Member(Model):
    """A cluster member as gossip reports it."""

    name: str
    """Node name."""
    address: str
    """Gossip address, host:port."""
    state: GossipState
    """alive, suspect, failed or left."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Published metadata: node id, role, API address, capacity, labels."""


class MemberEventKind(StrEnum):
    """Membership changes."""

    JOINED = "joined"
    UPDATED = "updated"
    SUSPECT = "suspect"
    FAILED = "failed"
    LEFT = "left"


class MemberEvent(Model):
    """One membership change."""

    kind: MemberEventKind
    """What happened."""
    members: list[Member]
    """The members it happened to."""


@runtime_checkable
class ClusterManager(Protocol):
    """Membership and failure detection."""

    async def local_node(self) -> Member:
        """Return this node as the cluster sees it."""
        ...

    async def members(self) -> Sequence[Member]:
        """Return every known member, failed and left ones included."""
        ...

    def events(self) -> AsyncIterator[MemberEvent]:
        """Yield membership changes from now on."""
        ...

    async def set_tags(self, tags: dict[str, str]) -> None:
        """Publish ``tags`` for this node (merged with existing ones)."""
        ...

    async def join(self, addresses: Sequence[str]) -> int:
        """Join the cluster through any of ``addresses``; return how many answered.

        Raises:
            Unavailable: none could be reached.

        """
        ...

    async def leave(self) -> None:
        """Leave gracefully: others see this node as left, not failed."""
        ...

    async def aclose(self) -> None:
        """Stop taking part in the cluster."""
        ...
