"""Gossip → node records: the leader copies each member's gossip state into ``Node.state``.

The cluster manager (Serf, or the one-node static cluster) knows who is
alive; the control loop reads node records. :class:`MembershipSync` joins the
two on the leader: at start, on every membership event, on every change of a
node record (but a heartbeat) and every ``resync`` seconds it reads the
members and, for each node record, the state it should have:

* the member of the same name and node id (its ``id`` tag): that member's
  state — alive, suspect, failed or left;
* a member of the same name but another id: ``failed`` — another machine
  took the name, and the record's machine is not heard from;
* no member of that name: ``failed`` (a record already ``left`` stays left) —
  but only once the sync has run for ``absent_grace`` seconds: a leader that
  just started may not have heard of every member yet, and must not declare
  the whole cluster failed on a partial view. (Serf keeps failed and left
  members for a day, so a member that is absent from a settled view is a
  record nobody answers for, e.g. a node renamed since.)

One more thing makes an alive node ``suspect``: silence. A node that runs
instances refreshes its record's ``heartbeat_at`` every 10 s (through a
server, for a worker); one whose heartbeat has not changed for
``silent_after`` seconds while gossip still calls it alive cannot reach the
cluster state (e.g. its gRPC path is blocked): it gets no new instances
until it reports again, and keeps those it runs (the control loop moves
those it never started). Silence is timed on this leader's own monotonic
clock from when it saw the value change, so clock skew between machines
does not matter; a new leader (or one whose passes paused) starts counting
afresh, but keeps a suspect node suspect until it sees it beat. Server-only
nodes do not beat and are never silent.

A record changes only along ``NODE_TRANSITIONS`` (so a left node becomes
alive again, never failed), by compare-and-swap, with an event per change
(NodeAlive, NodeSuspect, NodeFailed, NodeLeft). Members without a record are
left alone: a node registers itself. What a state means for instances is the
control loop's business: it replaces the instances of failed nodes and drops
those of nodes that left; a suspect node keeps its instances.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import anyio
from anyio.abc import TaskStatus

from shoal.interfaces import (
    NODE_TRANSITIONS,
    Actor,
    Clock,
    ClusterManager,
    EventType,
    GossipState,
    Member,
    Node,
    NodeRole,
    NotFound,
    ObjectRef,
    StateStore,
    Tag,
    Via,
)

from ._repo import NODES, Repository, Stored, only_heartbeat
from ._wake import run_level_triggered

__all__ = ["MembershipSync", "gossip_state"]

log = logging.getLogger(__name__)

ACTOR = Actor(id="membership", via=Via.CONTROL_LOOP)
_REASONS = {
    GossipState.ALIVE: "NodeAlive",
    GossipState.SUSPECT: "NodeSuspect",
    GossipState.FAILED: "NodeFailed",
    GossipState.LEFT: "NodeLeft",
}
_WARN = frozenset({GossipState.SUSPECT, GossipState.FAILED})


def gossip_state(
    node: Node, member: Member | None, *, settled: bool = True
) -> tuple[GossipState, str]:
    """Return the state gossip gives ``node`` (its member by name, or None), and why.

    Before the view is ``settled``, an absent member changes nothing.
    """
    if member is None:
        if node.state == GossipState.LEFT:
            return GossipState.LEFT, f"node {node.name} left the cluster"
        if not settled:
            return node.state, f"node {node.name} is not in gossip yet"
        return GossipState.FAILED, f"node {node.name} is not a member of the cluster"
    member_id = member.tags.get(Tag.ID, "")
    if member_id != node.node_id:
        return GossipState.FAILED, (
            f"the member named {node.name} has node id {member_id!r}, not {node.node_id!r}: "
            "another machine uses the name, and this node is not heard from; give one of "
            "them another name"
        )
    return member.state, f"gossip reports node {node.name} {member.state.value}"


class MembershipSync:
    """Keeps ``Node.state`` of every node record what gossip (and silence) say. Run on the leader.

    Args:
        store: The store holding the node records (fenced by leadership, on a leader).
        cluster: Who is in the cluster, and in which state.
        clock: Time source for the resync timer and event times.
        resync: Seconds between syncs when nothing happens.
        absent_grace: Seconds after start before a record without a member
            is declared failed (the view of a new leader may be partial).
        silent_after: Seconds without a new heartbeat after which an alive
            node that runs instances is suspect.

    """

    def __init__(
        self,
        store: StateStore,
        cluster: ClusterManager,
        clock: Clock,
        *,
        resync: float = 5.0,
        absent_grace: float = 30.0,
        silent_after: float = 40.0,
    ) -> None:
        self.store = store
        self.absent_grace = absent_grace
        self.silent_after = silent_after
        self._beats: dict[str, tuple[datetime, float, bool]] = {}
        """Per node: the last ``heartbeat_at`` seen, since when (monotonic), and whether
        this sync ever saw it change."""
        self._last_pass: float | None = None
        self._since = clock.now()
        self.repo = Repository(store, clock)
        self.cluster = cluster
        self.clock = clock
        self.resync = resync
        self.passes = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sync now, then on membership events, node record changes and every ``resync`` s.

        An unreachable store or cluster manager is waited out (see
        :mod:`shoal.core._wake`).

        Raises:
            Deposed: the store is fenced by a leadership that ended.

        """
        events = self.cluster.events()  # subscribed from here on: no change slips by

        async def on_events(wake: Callable[[], None]) -> None:
            async for _ in events:
                wake()

        try:
            await run_level_triggered(
                self.store,
                self.clock,
                [NODES],
                self.resync,
                self.sync_once,
                triggers=[on_events],
                ignore=only_heartbeat,
                task_status=task_status,
            )
        finally:
            await _unsubscribe(events)

    async def sync_once(self) -> None:
        """Bring every node record's state in line with the current members."""
        self.passes += 1
        members = {member.name: member for member in await self.cluster.members()}
        if not members:  # a cluster always holds this node: this is no view of it
            log.warning("the cluster manager reports no members, not even this node; waiting")
            return
        settled = (self.clock.now() - self._since).total_seconds() >= self.absent_grace
        records = await self.repo.list_nodes()
        self._watch_the_clock()
        names = {stored.value.name for stored in records}
        for name in set(self._beats) - names:
            del self._beats[name]
        for stored in records:
            await self._sync_node(stored, members.get(stored.value.name), settled)

    def _watch_the_clock(self) -> None:
        """Start counting silence afresh after a gap in this sync's own passes.

        Passes come every ``resync`` s; a much longer gap (the store was
        unreachable, say) is no evidence that the nodes were silent — they
        may have beaten meanwhile without this sync seeing it.
        """
        now = self.clock.monotonic()
        if self._last_pass is not None and now - self._last_pass > 3 * self.resync:
            self._beats = {name: (at, now, seen) for name, (at, _, seen) in self._beats.items()}
        self._last_pass = now

    def _silence(self, node: Node) -> tuple[float, bool]:
        """Return for how long ``node``'s heartbeat has not changed here, and whether it ever did.

        (0, True) for a node that does not beat (server-only, or no heartbeat yet).
        """
        if node.role == NodeRole.SERVER or node.heartbeat_at is None:
            return 0.0, True
        now = self.clock.monotonic()
        seen = self._beats.get(node.name)
        if seen is None:
            self._beats[node.name] = (node.heartbeat_at, now, False)
            return 0.0, False
        at, since, changed = seen
        if at != node.heartbeat_at:
            self._beats[node.name] = (node.heartbeat_at, now, True)
            return 0.0, True
        return now - since, changed

    def _state(self, node: Node, member: Member | None, settled: bool) -> tuple[GossipState, str]:
        """Return the state ``node`` should have, and why: gossip's, or suspect when silent.

        A node that is suspect already stays so until this sync has seen it
        beat: a new leader, which starts counting afresh, must not make a
        silent node alive (and schedulable) for another ``silent_after`` s.
        """
        state, why = gossip_state(node, member, settled=settled)
        if state != GossipState.ALIVE:
            return state, why
        silence, beating = self._silence(node)
        if silence >= self.silent_after:
            return GossipState.SUSPECT, (
                f"node {node.name} is alive in gossip but has not reported for {silence:.0f} s: "
                "its node loop cannot reach the cluster state (see its log; is its gRPC port "
                "reachable from the servers and theirs from it?)"
            )
        if node.state == GossipState.SUSPECT and not beating:
            return GossipState.SUSPECT, f"node {node.name} has not reported again yet"
        return state, why

    async def _sync_node(self, stored: Stored[Node], member: Member | None, settled: bool) -> None:
        why = ""

        def change(node: Node) -> Node | None:
            nonlocal why
            state, why = self._state(node, member, settled)
            if state == node.state or state not in NODE_TRANSITIONS[node.state]:
                return None
            return node.model_copy(update={"state": state})

        try:
            updated = await self.repo.update(stored.key, Node, change)
        except NotFound:
            return  # the record was removed meanwhile
        before = stored.value.state
        if updated.state == before:
            return
        message = f"{before.value} → {updated.state.value}: {why}"
        log.log(logging.WARNING if updated.state in _WARN else logging.INFO, "%s", message)
        await self.repo.record(
            ObjectRef(kind="Node", name=updated.name),
            _REASONS[updated.state],
            message,
            ACTOR,
            event_type=EventType.WARNING if updated.state in _WARN else EventType.NORMAL,
        )


async def _unsubscribe(events: AsyncIterator[object]) -> None:
    """Close a membership subscription, if it can be closed (the cluster managers' can)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()
