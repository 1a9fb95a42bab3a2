"""The node: one machine running a Shoal agent.

Gossip states and their transitions mirror ``ontology/node.yaml``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Model
from ._quantity import Cpu, Memory
from ._roles import NodeRole

__all__ = ["NODE_CLUSTER_FIELDS", "NODE_TRANSITIONS", "Capacity", "GossipState", "Node", "NodeRole"]

NODE_CLUSTER_FIELDS = ("cordoned", "draining", "state", "role")
"""Fields of a node record that are not the node's to say, kept as stored when it rewrites it.

Cordon and drain are the operator's, the gossip state is written by the
leader's membership sync, and the role is what the node registered as. A
contract between the node loop and the servers' worker scope.
"""


class GossipState(StrEnum):
    """Membership state as the cluster manager sees it."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    FAILED = "failed"
    LEFT = "left"


_G = GossipState

NODE_TRANSITIONS: dict[GossipState, frozenset[GossipState]] = {
    _G.ALIVE: frozenset({_G.SUSPECT, _G.FAILED, _G.LEFT}),
    _G.SUSPECT: frozenset({_G.ALIVE, _G.FAILED, _G.LEFT}),
    _G.FAILED: frozenset({_G.ALIVE, _G.LEFT}),
    _G.LEFT: frozenset({_G.ALIVE}),
}
"""For each gossip state, the states it may move to."""


class Capacity(Model):
    """Resources of a node."""

    cpu: Cpu = 0
    """CPU in millicores."""
    memory: Memory = 0
    """Memory in bytes."""
    pods: int = 110
    """Most instances the node runs at once."""


class Node(Model):
    """A member of the cluster."""

    name: str
    """Unique node name (the host name unless configured)."""
    node_id: str = ""
    """Fingerprint of the node's ed25519 public key; stable across restarts."""
    addresses: dict[str, str] = Field(default_factory=dict)
    """Endpoints by purpose, e.g. {'api': '127.0.0.1:7070'}."""
    role: NodeRole = NodeRole.BOTH
    """server, worker or both."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Matched by workload placement constraints."""
    capacity: Capacity = Capacity()
    """Total resources."""
    allocatable: Capacity = Capacity()
    """What the scheduler may hand out (capacity minus reserved)."""
    state: GossipState = GossipState.ALIVE
    """Membership state from gossip; ``suspect`` also when alive in gossip but silent."""
    cordoned: bool = False
    """No new instances are placed on a cordoned node."""
    draining: bool = False
    """Instances are being moved off this node."""
    runtime: str = ""
    """Container runtime in use, e.g. 'mock' or 'runc'."""
    heartbeat_at: datetime | None = None
    """When the node loop last reported."""

    @property
    def schedulable(self) -> bool:
        """Return whether new instances may be placed here."""
        return (
            self.state == GossipState.ALIVE and not self.cordoned and self.role != NodeRole.SERVER
        )
