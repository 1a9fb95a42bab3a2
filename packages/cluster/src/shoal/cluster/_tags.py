"""How a node describes itself in gossip tags, and how to read it back.

Serf carries each member's tags in its gossip metadata, which memberlist caps
at 512 bytes (Serf's encoding: one magic byte, then a msgpack map). So the
keys are short and only what the control loop needs before it reaches the
node over gRPC travels here:

=========  ==============================================
``id``     node id (fingerprint of its ed25519 key)
``role``   ``server``, ``worker`` or ``both``
``api``    REST API address, ``host:port``
``grpc``   node-to-node gRPC address, ``host:port``
``cpu``    capacity, millicores (``4000m``)
``mem``    capacity, bytes
``pods``   capacity, instances
``l.KEY``  one per node label
``cid``    servers: the id of the cluster state they keep
``bye``    ``1`` once the node has begun a graceful leave
=========  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack

from shoal.interfaces import SERVER_ROLES, Capacity, InvalidInput, Member, Node, NodeRole, Tag

__all__ = [
    "CLUSTER_ID_TAG",
    "LABEL_PREFIX",
    "LEAVING_TAG",
    "MAX_TAGS_BYTES",
    "check_tags",
    "is_server",
    "node_from_member",
    "node_tags",
]

MAX_TAGS_BYTES = 512
"""memberlist's limit on a member's metadata, which holds the encoded tags."""

LABEL_PREFIX = Tag.LABEL_PREFIX
"""Tag key prefix for node labels."""

CLUSTER_ID_TAG = Tag.CLUSTER_ID
"""A server's cluster id: see :mod:`shoal.agent._admission`."""

LEAVING_TAG = Tag.LEAVING
"""Set (to ``1``) by a node just before it leaves (:mod:`shoal.cluster.serf._serf_membership`)."""

_LATER_TAGS = {CLUSTER_ID_TAG: "0" * 16, LEAVING_TAG: "1"}
"""Tags published after start, at their largest: :func:`check_tags` keeps room for them."""

_ADDRESS_TAGS = (Tag.API, Tag.GRPC)


def node_tags(node: Node) -> dict[str, str]:
    """Return the tags that publish ``node``: id, role, addresses, capacity, labels."""
    tags = {
        Tag.ID: node.node_id,
        Tag.ROLE: node.role.value,
        Tag.CPU: f"{node.capacity.cpu}m",
        Tag.MEMORY: str(node.capacity.memory),
        Tag.PODS: str(node.capacity.pods),
    }
    tags.update({key: node.addresses[key] for key in _ADDRESS_TAGS if key in node.addresses})
    tags.update({f"{LABEL_PREFIX}{key}": value for key, value in node.labels.items()})
    return tags


def is_server(member: Member) -> bool:
    """Return whether ``member``'s ``role`` tag says it serves (role server or both)."""
    return member.tags.get(Tag.ROLE) in SERVER_ROLES


def node_from_member(member: Member) -> Node:
    """Return the :class:`~shoal.interfaces.Node` a member's tags describe.

    Tags it does not know are ignored; missing ones take the model's defaults.

    Raises:
        InvalidInput: a tag holds a value the model rejects (e.g. an unknown role).

    """
    tags = member.tags
    try:
        capacity = Capacity.model_validate(
            {
                key: value
                for key, value in (
                    ("cpu", tags.get(Tag.CPU)),
                    ("memory", tags.get(Tag.MEMORY)),
                    ("pods", tags.get(Tag.PODS)),
                )
                if value is not None
            }
        )
        return Node(
            name=member.name,
            node_id=tags.get(Tag.ID, ""),
            addresses={key: tags[key] for key in _ADDRESS_TAGS if key in tags},
            role=NodeRole(tags.get(Tag.ROLE, NodeRole.BOTH.value)),
            labels={
                key.removeprefix(LABEL_PREFIX): value
                for key, value in tags.items()
                if key.startswith(LABEL_PREFIX)
            },
            capacity=capacity,
            allocatable=capacity,
            state=member.state,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidInput(
            f"member {member.name!r} publishes tags that do not describe a node: {exc}",
            member=member.name,
        ) from exc


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Return ``tags`` as a dict if Serf can carry them, with room left for ``cid`` and ``bye``.

    Those two are added later (at admission and on leaving), and must never
    be what tips a node's tags over the limit.

    Raises:
        InvalidInput: a key or value is not a string, or the encoded tags
            exceed :data:`MAX_TAGS_BYTES`.

    """
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidInput("tags must map strings to strings", field="tags")
    size = 1 + len(msgpack.packb({**_LATER_TAGS, **tags}))
    if size > MAX_TAGS_BYTES:
        raise InvalidInput(
            f"tags take {size} bytes encoded; serf carries at most {MAX_TAGS_BYTES}: "
            "use fewer or shorter labels",
            field="tags",
            size=size,
        )
    return dict(tags)
