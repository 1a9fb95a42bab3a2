"""The ClusterManager protocol: who is in the cluster, and who failed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Final, Protocol, runtime_checkable

from pydantic import Field

from ._base import Model
from ._node import GossipState
from ._roles import NodeRole

__all__ = ["SERVER_ROLES", "ClusterManager", "Member", "MemberEvent", "MemberEventKind", "Tag"]

SERVER_ROLES: Final = frozenset({NodeRole.SERVER, NodeRole.BOTH})
"""The roles of the nodes that serve (keep the state, answer the API), as a member's
:attr:`Tag.ROLE` names them."""


class Tag:
    """The keys of a node's gossip tags: what ``shoal.cluster`` publishes and its readers read.

    Short, because memberlist caps a member's metadata at 512 bytes.
    """

    ID: Final = "id"
    """The node id: the fingerprint of its ed25519 key."""
    ROLE: Final = "role"
    """``server``, ``worker`` or ``both``."""
    API: Final = "api"
    """The REST API address, ``host:port``."""
    GRPC: Final = "grpc"
    """The node-to-node gRPC address, ``host:port``."""
    CPU: Final = "cpu"
    """Capacity, millicores (``4000m``)."""
    MEMORY: Final = "mem"
    """Capacity, bytes."""
    PODS: Final = "pods"
    """Capacity, instances."""
    LABEL_PREFIX: Final = "l."
    """Prefix of one tag per node label."""
    CLUSTER_ID: Final = "cid"
    """Servers: the id of the cluster state they keep (set at admission)."""
    LEAVING: Final = "bye"
    """``1`` once the node has begun a graceful leave."""


class Member(Model):
    """A cluster member as gossip reports it."""

    name: str
    """Node name."""
    address: str
    """Gossip address, host:port."""
    state: GossipState
    """alive, suspect, failed or left."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Published metadata (keys in :class:`Tag`): node id, role, addresses, capacity, labels."""


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
