"""Shoal's cluster managers: who is in the cluster, and who failed.

:class:`StaticCluster` is the one-node cluster of a single machine.
:class:`SerfCluster` supervises a ``serf agent`` per node and speaks Serf's RPC
protocol through :class:`SerfRpcClient`, an async client usable on its own.
Both return :class:`MemberEvents` iterators from ``events()``.

:func:`new_gossip_key` and :func:`new_join_token` make a cluster's secrets
(``shoal cluster init``); :func:`node_tags` and :func:`node_from_member`
publish a node in gossip tags and read it back.

Node-to-node gRPC: every call is signed with the caller's
:class:`NodeIdentity` (its ed25519 key; :func:`fingerprint` is its node id)
and the join token, and checked by a :class:`CallVerifier`, which names the
:class:`Caller`. :class:`NodeChannel` makes such calls and :func:`serve_grpc`
serves them. Servers serve :class:`NodeStateGateway`: exactly what a worker's
node loop needs of the cluster state, as typed calls checked against the
caller, with its instances streamed from :class:`Assignments` (one watch of
the store, a stream per worker); a worker's node loop uses it through
:class:`RemoteNodeState`, the :class:`~shoal.interfaces.NodeState` of a node
that keeps no store. Nodes that keep images serve
:class:`ImageGateway`, and a worker fetches an image it lacks from a server
through :class:`RemoteImages`. Every node serves :class:`TraceGateway`, the
spans it recorded, which a server reads through :class:`RemoteTraces`.
"""

from ._fanout import MemberEvents
from ._secrets import check_gossip_key, new_gossip_key, new_join_token
from ._static import StaticCluster
from ._tags import (
    CLUSTER_ID_TAG,
    LEAVING_TAG,
    check_tags,
    is_server,
    node_from_member,
    node_tags,
)
from .grpc._assignments import Assignments
from .grpc._grpc_base import NodeChannel, check_listenable, serve_grpc
from .grpc._grpc_images import ImageGateway, RemoteImages
from .grpc._grpc_pods import PodGateway, RemotePods
from .grpc._grpc_remote_state import RemoteNodeState, check_accepted
from .grpc._grpc_state import NodeStateGateway
from .grpc._grpc_traces import RemoteTraces, TraceGateway
from .grpc._nodeauth import Caller, CallVerifier, NodeIdentity, fingerprint
from .serf._serf import SerfCluster
from .serf._serf_records import (
    MemberEventRecord,
    QueryEventRecord,
    QueryRecord,
    SerfEventRecord,
    SerfMember,
    SerfProtocolError,
    UserEventRecord,
)
from .serf._serf_rpc import SerfRpcClient
from .serf._serf_subscription import SerfSubscription

__all__ = [
    "CLUSTER_ID_TAG",
    "LEAVING_TAG",
    "Assignments",
    "CallVerifier",
    "Caller",
    "ImageGateway",
    "MemberEventRecord",
    "MemberEvents",
    "NodeChannel",
    "NodeIdentity",
    "NodeStateGateway",
    "PodGateway",
    "QueryEventRecord",
    "QueryRecord",
    "RemoteImages",
    "RemoteNodeState",
    "RemotePods",
    "RemoteTraces",
    "SerfCluster",
    "SerfEventRecord",
    "SerfMember",
    "SerfProtocolError",
    "SerfRpcClient",
    "SerfSubscription",
    "StaticCluster",
    "TraceGateway",
    "UserEventRecord",
    "check_accepted",
    "check_gossip_key",
    "check_listenable",
    "check_tags",
    "fingerprint",
    "is_server",
    "new_gossip_key",
    "new_join_token",
    "node_from_member",
    "node_tags",
    "serve_grpc",
]
