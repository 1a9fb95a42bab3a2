"""StaticCluster: the one-node ClusterManager.

A single Shoal node (``shoal agent`` on one machine) still talks to a
:class:`~shoal.interfaces.ClusterManager`; this one knows exactly one member,
itself, which is alive until it leaves. It publishes tags like a gossip
cluster would, so the control loop reads node metadata the same way in both
cases, and it refuses to join anyone: growing past one node takes the serf
cluster manager.

Events fan out to any number of subscribers through
:class:`~shoal.cluster._fanout.EventFanout`: each :meth:`StaticCluster.events`
call registers its subscriber *immediately* (not on first iteration), only
``set_tags`` and ``leave`` produce events, and :meth:`StaticCluster.aclose`
ends every iterator cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio.lowlevel

from shoal.interfaces import (
    AsyncClosing,
    GossipState,
    Member,
    MemberEvent,
    MemberEventKind,
    Unavailable,
)

from ._fanout import EventFanout, MemberEvents

__all__ = ["StaticCluster"]


class StaticCluster(AsyncClosing):
    """A cluster of exactly one node: this one.

    Args:
        name: This node's name.
        address: The address it reports as its gossip address.
        tags: Initial published tags (node id, role, API address, ...).

    """

    def __init__(
        self,
        name: str,
        address: str = "127.0.0.1:0",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._member = Member(
            name=name, address=address, state=GossipState.ALIVE, tags=dict(tags or {})
        )
        self._fanout = EventFanout()

    async def local_node(self) -> Member:
        """Return this node, the only member."""
        await anyio.lowlevel.checkpoint()
        return self._member.model_copy(deep=True)

    async def members(self) -> Sequence[Member]:
        """Return the one member, whatever its state."""
        return [await self.local_node()]

    def events(self) -> MemberEvents:
        """Subscribe to membership events from this call on.

        Returns:
            An async iterator of events; it ends when the cluster manager closes
            (at once, if it is closed already).

        """
        return self._fanout.subscribe()

    async def set_tags(self, tags: dict[str, str]) -> None:
        """Merge ``tags`` into this node's tags and emit an UPDATED event.

        Raises:
            Unavailable: the cluster manager is closed.

        """
        await anyio.lowlevel.checkpoint()
        self._check_open("set tags")
        self._member = self._member.model_copy(update={"tags": {**self._member.tags, **tags}})
        self._emit(MemberEventKind.UPDATED)

    async def join(self, addresses: Sequence[str]) -> int:
        """Join nobody: return 0 for no addresses, refuse any others.

        Raises:
            Unavailable: ``addresses`` is not empty; a static cluster has one node.

        """
        await anyio.lowlevel.checkpoint()
        if not addresses:
            return 0
        raise Unavailable(
            f"a static one-node cluster cannot join {', '.join(addresses)}; "
            "use the serf cluster manager to run more than one node",
            addresses=list(addresses),
        )

    async def leave(self) -> None:
        """Mark this node left and emit a LEFT event; leaving twice is a no-op.

        Raises:
            Unavailable: the cluster manager is closed.

        """
        await anyio.lowlevel.checkpoint()
        self._check_open("leave")
        if self._member.state == GossipState.LEFT:
            return
        self._member = self._member.model_copy(update={"state": GossipState.LEFT})
        self._emit(MemberEventKind.LEFT)

    async def aclose(self) -> None:
        """End every event iterator; later calls to ``aclose`` do nothing."""
        self._fanout.close()  # first: a cancelled close still ends the iterators
        await anyio.lowlevel.checkpoint()

    def _check_open(self, action: str) -> None:
        if self._fanout.closed:
            raise Unavailable(f"cannot {action}: the static cluster manager is closed")

    def _emit(self, kind: MemberEventKind) -> None:
        self._fanout.emit(MemberEvent(kind=kind, members=[self._member.model_copy(deep=True)]))
