"""Before a server serves: is it a server of the cluster it joined?

Two mistakes make a server that gossips with a cluster without being of it:

* **Another store.** Every store holds a cluster id, created by the first
  server that uses it (key ``/cluster/id``), and each server publishes it as
  its ``cid`` tag. A server whose store holds another id keeps a second,
  separate cluster state — on SQLite (or in memory) every server has its
  own, so more than one server needs etcd, and a wrong ``--etcd-prefix``
  does the same on etcd. Its leader would schedule the same workers from
  another state.
* **Another join token.** The cluster's servers refuse its calls, and it
  would refuse the workers' calls in turn.

:func:`admit_server` checks both once the node is in gossip and before it
serves anything, against the alive servers it knows then (with ``--join``,
every member: a join exchanges the full member list; a server restarted
without ``--join`` may not have met the others again yet, and then passes).
A server that is refused is told what to fix; the running servers are not
disturbed. Servers that are leaving (tag ``bye``) are not asked, and a
conflict is looked at twice, a gossip round apart, before it stands — so a
misconfigured server that starts beside a good one and leaves again does not
take the good one with it. The check runs at start only. Part of the
composition root (with :mod:`shoal.agent._node`): it reaches other servers
over gRPC.
"""

from __future__ import annotations

import logging
import secrets

import anyio

from shoal.cluster import CLUSTER_ID_TAG, LEAVING_TAG, NodeIdentity, check_accepted, is_server
from shoal.interfaces import (
    ClusterManager,
    Conflict,
    GossipState,
    Member,
    RevisionConflict,
    ShoalError,
    StateStore,
    Tag,
    Unauthenticated,
)

__all__ = ["CLUSTER_ID_KEY", "admit_server", "cluster_id"]

log = logging.getLogger(__name__)

CLUSTER_ID_KEY = "/cluster/id"
_TOKEN_CHECK = 5.0
"""Seconds the token check waits for the other servers' answers, all together."""


async def cluster_id(store: StateStore) -> tuple[str, bool]:
    """Return the id of the cluster state in ``store``, and whether this call created it.

    Raises:
        Unavailable: the store cannot be reached.
    """
    while True:
        stored = await store.get(CLUSTER_ID_KEY)
        if stored is not None:
            return stored.value.decode(), False
        new = secrets.token_hex(8)
        try:
            await store.put(CLUSTER_ID_KEY, new.encode(), expected_revision=0)
        except RevisionConflict:
            continue  # another server created it first: read theirs
        return new, True


async def admit_server(
    store: StateStore,
    cluster: ClusterManager,
    identity: NodeIdentity,
    token: str,
    *,
    recheck: float = 2.0,
) -> None:
    """Check this server's join token, then publish its cluster id and compare it.

    ``recheck``: seconds before a conflict is looked at again.

    Raises:
        Unauthenticated: the alive servers that answer all refuse this
            node's join token (then no cluster id is published).
        Conflict: other alive servers keep another cluster state.
        Unavailable: the store or the cluster manager cannot be reached.
    """
    await _check_token(identity, token, await _servers(cluster, identity))
    own, created = await cluster_id(store)
    await cluster.set_tags({CLUSTER_ID_TAG: own})
    strangers = await _strangers(cluster, identity, own)
    if strangers:
        await anyio.sleep(recheck)
        strangers = await _strangers(cluster, identity, own)
    if strangers:
        listed = ", ".join(f"{m.name} (cluster id {m.tags[CLUSTER_ID_TAG]})" for m in strangers)
        raise Conflict(
            f"server(s) {listed} keep another cluster state than this server, whose store "
            f"{'was created just now' if created else 'holds cluster id ' + own}: servers of "
            "one cluster share one etcd (--state etcd --etcd HOST:PORT, same --etcd-prefix); "
            "a server on SQLite or in memory must be the cluster's only one",
            cluster_id=own,
            servers=[m.name for m in strangers],
        )


async def _servers(cluster: ClusterManager, identity: NodeIdentity) -> list[Member]:
    """Return the alive servers other than this node that are not leaving."""
    return [
        m
        for m in await cluster.members()
        if m.tags.get(Tag.ID) != identity.node_id
        and m.state == GossipState.ALIVE
        and is_server(m)
        and not m.tags.get(LEAVING_TAG)
    ]


async def _strangers(cluster: ClusterManager, identity: NodeIdentity, own: str) -> list[Member]:
    """Return the servers that publish a cluster id other than ``own``."""
    servers = await _servers(cluster, identity)
    return sorted(
        (m for m in servers if m.tags.get(CLUSTER_ID_TAG, own) != own), key=lambda m: m.name
    )


async def _check_token(identity: NodeIdentity, token: str, servers: list[Member]) -> None:
    """Refuse if the servers that answer all refuse this node's join token.

    Asks them all at once, for :data:`_TOKEN_CHECK` seconds at most. Servers
    that do not answer (still starting, partitioned, or failing otherwise)
    prove nothing either way; one that accepts is enough.
    """
    accepted: list[str] = []
    refusals: dict[str, str] = {}

    async def ask(server: Member) -> None:
        try:
            await check_accepted(identity, token, server.tags[Tag.GRPC], deadline=_TOKEN_CHECK)
        except Unauthenticated as exc:
            refusals[server.name] = exc.message
        except ShoalError as exc:  # Unavailable, or an error of the server's own
            log.info("cannot check the join token with server %s: %s", server.name, exc)
        else:
            accepted.append(server.name)

    with anyio.move_on_after(_TOKEN_CHECK + 1):
        async with anyio.create_task_group() as tg:
            for server in servers:
                if Tag.GRPC in server.tags:
                    tg.start_soon(ask, server)
    if accepted:
        if refusals:
            log.warning(
                "server(s) %s refuse this node's join token, but %s accept it",
                ", ".join(sorted(refusals)),
                ", ".join(sorted(accepted)),
            )
        return
    if refusals:
        name = min(refusals)
        raise Unauthenticated(
            f"server {name} of the cluster refuses this server: {refusals[name]}",
            servers=sorted(refusals),
        )
