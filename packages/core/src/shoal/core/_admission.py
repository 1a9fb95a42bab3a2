"""Before a server serves: is it a server of the cluster it joined?

Two mistakes make a server that gossips with a cluster without being of it:

* **Another store.** Every store holds a cluster id, created by the first
  server that uses it (key ``/cluster/id``), and each server publishes it as
  its ``cid`` tag. A server whose store holds another id keeps a second,
  separate cluster state — on SQLite every server has its own (more than one
  server needs etcd), and a wrong ``--etcd-prefix`` does the same on etcd.
  Its leader would schedule the same workers from another state.
* **Another join token.** The cluster's servers refuse its calls, and it
  would refuse the workers' calls in turn.

:func:`admit_server` checks both once the node has joined gossip (a join
exchanges the full member list, tags included) and before it serves
anything. A server that fails leaves gossip gracefully and stops with an
error saying what to fix; the running servers are not disturbed. The check
runs at start only: two misconfigured servers started at the same instant
may each miss the other's tag. Part of the composition root (with
:mod:`shoal.core.node`): it reaches other servers over gRPC.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from shoal.cluster import CLUSTER_ID_TAG, NodeIdentity, check_accepted
from shoal.interfaces import (
    ClusterManager,
    Conflict,
    GossipState,
    Member,
    NodeRole,
    RevisionConflict,
    StateStore,
    Unauthenticated,
    Unavailable,
)

__all__ = ["CLUSTER_ID_KEY", "admit_server", "check_cluster_id", "cluster_id"]

log = logging.getLogger(__name__)

CLUSTER_ID_KEY = "/cluster/id"
_SERVING = (NodeRole.SERVER.value, NodeRole.BOTH.value)


async def cluster_id(store: StateStore) -> str:
    """Return the id of the cluster state in ``store``, creating it on first use.

    Raises:
        Unavailable: the store cannot be reached.
    """
    while True:
        stored = await store.get(CLUSTER_ID_KEY)
        if stored is not None:
            return stored.value.decode()
        try:
            await store.put(CLUSTER_ID_KEY, secrets.token_hex(8).encode(), expected_revision=0)
        except RevisionConflict:
            continue  # another server created it first: read theirs


async def admit_server(
    store: StateStore, cluster: ClusterManager, identity: NodeIdentity, token: str
) -> bool:
    """Check this server's join token and cluster id against the servers already alive.

    Returns whether the cluster id was checked too: not when the store cannot
    be reached yet (then :func:`check_cluster_id` must pass before this
    server leads).

    Raises:
        Conflict: another alive server keeps another cluster state.
        Unauthenticated: the alive servers refuse this node's join token.
        Unavailable: the cluster manager cannot be reached.
    """
    await _check_token(identity, token, await _servers(cluster, identity.name))
    try:
        own = await cluster_id(store)
    except Unavailable as exc:
        log.warning("cannot check the cluster id while the store is unreachable: %s", exc)
        return False
    await _publish(cluster, identity.name, own)
    return True


async def check_cluster_id(store: StateStore, cluster: ClusterManager, name: str) -> None:
    """Publish the store's cluster id as this server's tag; refuse if others keep another.

    Raises:
        Conflict: another alive server keeps another cluster state.
        Unavailable: the store or the cluster manager cannot be reached.
    """
    await _publish(cluster, name, await cluster_id(store))


async def _publish(cluster: ClusterManager, name: str, own: str) -> None:
    await cluster.set_tags({CLUSTER_ID_TAG: own})
    others = await _servers(cluster, name)
    strangers = sorted(m.name for m in others if m.tags.get(CLUSTER_ID_TAG, own) != own)
    if strangers:
        raise Conflict(
            f"server(s) {', '.join(strangers)} of the cluster keep another cluster state than "
            f"this server's (cluster id {own}): servers of one cluster share one etcd "
            "(--state etcd --etcd HOST:PORT, same --etcd-prefix); a server on SQLite must be "
            "the cluster's only one",
            cluster_id=own,
            servers=strangers,
        )


async def _servers(cluster: ClusterManager, name: str) -> list[Member]:
    """Return the alive servers other than ``name``."""
    return [
        m
        for m in await cluster.members()
        if m.name != name and m.state == GossipState.ALIVE and m.tags.get("role") in _SERVING
    ]


async def _check_token(identity: NodeIdentity, token: str, servers: Sequence[Member]) -> None:
    """Refuse if the servers that answer all refuse this node's join token.

    Servers that cannot be reached (still starting, or partitioned) prove
    nothing either way; one that accepts is enough.
    """
    refusals: list[tuple[str, str]] = []
    for server in (s for s in servers if "grpc" in s.tags):
        try:
            await check_accepted(identity, token, server.tags["grpc"])
        except Unavailable as exc:
            log.info("cannot check the join token with server %s: %s", server.name, exc)
            continue
        except Unauthenticated as exc:
            refusals.append((server.name, exc.message))
            continue
        if refusals:
            log.warning(
                "server(s) %s refuse this node's join token, but %s accepts it",
                ", ".join(name for name, _ in refusals),
                server.name,
            )
        return
    if refusals:
        name, why = refusals[0]
        raise Unauthenticated(
            f"server {name} of the cluster refuses this server: {why}",
            servers=[name for name, _ in refusals],
        )
