"""Shoal's cluster managers: who is in the cluster, and who failed.

:class:`StaticCluster` is the one-node cluster of a single machine; its
:meth:`~StaticCluster.events` returns :class:`MemberEvents` iterators. The
serf cluster manager joins it later.
"""

from ._static import MemberEvents, StaticCluster

__all__ = ["MemberEvents", "StaticCluster"]
