"""Shoal's cluster managers: who is in the cluster, and who failed.

:class:`StaticCluster` is the one-node cluster of a single machine.
:class:`SerfCluster` supervises a ``serf agent`` per node and speaks Serf's RPC
protocol through :class:`SerfRpcClient`, an async client usable on its own.
Both return :class:`MemberEvents` iterators from ``events()``.

:func:`new_gossip_key` and :func:`new_join_token` make a cluster's secrets
(``shoal cluster init``); :func:`node_tags` and :func:`node_from_member`
publish a node in gossip tags and read it back.
"""

from ._fanout import MemberEvents
from ._secrets import check_gossip_key, new_gossip_key, new_join_token
from ._serf import SerfCluster
from ._serf_records import (
    MemberEventRecord,
    QueryEventRecord,
    QueryRecord,
    SerfEventRecord,
    SerfMember,
    SerfProtocolError,
    UserEventRecord,
)
from ._serf_rpc import SerfRpcClient
from ._serf_subscription import SerfSubscription
from ._static import StaticCluster
from ._tags import check_tags, node_from_member, node_tags

__all__ = [
    "MemberEventRecord",
    "MemberEvents",
    "QueryEventRecord",
    "QueryRecord",
    "SerfCluster",
    "SerfEventRecord",
    "SerfMember",
    "SerfProtocolError",
    "SerfRpcClient",
    "SerfSubscription",
    "StaticCluster",
    "UserEventRecord",
    "check_gossip_key",
    "check_tags",
    "new_gossip_key",
    "new_join_token",
    "node_from_member",
    "node_tags",
]
