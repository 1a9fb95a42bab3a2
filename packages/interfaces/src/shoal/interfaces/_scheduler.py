"""The Scheduler protocol: a pure function from a cluster snapshot to placements.

Plain dataclasses and a named tuple rather than pydantic models: the
scheduler handles tens of thousands of these per pass and never serialises them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable

from ._instance import ScheduleFailure
from ._node import Node
from ._workload import PlacementStrategy

__all__ = ["NodeUsage", "PlacementRequest", "Placements", "Scheduler"]


_NO_CONSTRAINTS: Mapping[str, str] = MappingProxyType({})


class PlacementRequest(NamedTuple):
    """One instance that needs a node.

    Requests of one ``group`` (a workload) with equal resources, ports and
    constraints are interchangeable; schedulers may place them as a batch.
    A named tuple: immutable, and made in a third of a frozen dataclass's
    time (a pass may make one per instance of ten thousand).
    """

    instance: str
    """Instance key, ``namespace/name``."""
    group: str
    """Workload key, ``namespace/name``; spread scoring separates a group's instances."""
    cpu: int
    """Requested millicores."""
    memory: int
    """Requested bytes."""
    host_ports: frozenset[tuple[int, str]] = frozenset()
    """(port, protocol) pairs the instance publishes on its node."""
    constraints: Mapping[str, str] = _NO_CONSTRAINTS
    """Node labels that must match."""
    strategy: PlacementStrategy = PlacementStrategy.BINPACK
    """How to rank the nodes that fit."""
    node: str | None = None
    """Pinned: only this node is considered (a daemon's instance); its failure names why
    that node does not fit. None: any node that fits."""


@dataclass(slots=True)
class NodeUsage:
    """What is already placed on a node."""

    cpu: int = 0
    memory: int = 0
    pods: int = 0
    host_ports: set[tuple[int, str]] = field(default_factory=set)
    groups: dict[str, int] = field(default_factory=dict)
    """Workload key → how many of its instances the node has."""


@dataclass(slots=True)
class Placements:
    """The scheduler's answer."""

    assigned: dict[str, str] = field(default_factory=dict)
    """Instance key → node name."""
    failed: dict[str, ScheduleFailure] = field(default_factory=dict)
    """Instance key → why no node fits, per node."""


@runtime_checkable
class Scheduler(Protocol):
    """Places instances on nodes. Pure: no I/O, no clock, no randomness."""

    def place(
        self,
        requests: Sequence[PlacementRequest],
        nodes: Sequence[Node],
        usage: Mapping[str, NodeUsage],
    ) -> Placements:
        """Place ``requests`` on ``nodes`` given what each already runs (``usage`` by node name).

        Every request ends up in exactly one of ``assigned`` or ``failed``.
        """
        ...
