"""The default scheduler: filter the nodes, then score the ones that fit.

Filters, in order (the first that rejects a node is its reason): gossip state
alive, not cordoned, not server-only, placement constraints (node labels),
pod count, CPU, memory, host ports. A request pinned to a node (a daemon's
instance) is checked against that node alone, before the others are placed.
Scores: ``binpack`` prefers the node that is fullest after placement (CPU,
memory and pod count, equally weighted); ``spread`` prefers the node with
fewest instances of the same workload, then the emptiest. Ties go to the node
name, so placement is deterministic.

Requests of one workload with equal shape are placed as a batch: the static
filters run once per batch, and the candidate nodes sit in a heap keyed by
score (one heap per set of constraints, shared by the batches that have it).
A node that cannot take one more instance of the batch can take none (usage
only grows), so it is set aside until the batch is placed. A batch of ``m``
requests over ``n`` nodes costs ``O((m + n) log n)`` instead of ``O(m · n)``.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shoal.interfaces import (
    GossipState,
    Node,
    NodeRole,
    NodeUsage,
    PlacementRequest,
    Placements,
    PlacementStrategy,
    ScheduleFailure,
    format_cpu,
    format_memory,
)

__all__ = ["DefaultScheduler"]

_EMPTY = NodeUsage()
_BatchKey = tuple[
    str, int, int, tuple[tuple[int, str], ...], tuple[tuple[str, str], ...], PlacementStrategy
]


def _static_reason(node: Node, request: PlacementRequest) -> str | None:
    if node.state != GossipState.ALIVE:
        return f"node is {node.state.value}"
    if node.cordoned:
        return "node is cordoned"
    if node.role == NodeRole.SERVER:
        return "node is server-only and runs no instances"
    for label, wanted in request.constraints.items():
        have = node.labels.get(label)
        if have != wanted:
            shown = "missing" if have is None else repr(have)
            return f"constraint {label}={wanted!r} not met (node has {shown})"
    return None


def _fit_reason(node: Node, used: NodeUsage, request: PlacementRequest) -> str | None:
    alloc = node.allocatable
    if used.pods + 1 > alloc.pods:
        return f"too many instances ({used.pods} of {alloc.pods})"
    if request.cpu and used.cpu + request.cpu > alloc.cpu:
        free = max(alloc.cpu - used.cpu, 0)
        return (
            f"insufficient cpu: requests {format_cpu(request.cpu)}, "
            f"free {format_cpu(free)} of {format_cpu(alloc.cpu)}"
        )
    if request.memory and used.memory + request.memory > alloc.memory:
        free = max(alloc.memory - used.memory, 0)
        return (
            f"insufficient memory: requests {format_memory(request.memory)}, "
            f"free {format_memory(free)} of {format_memory(alloc.memory)}"
        )
    clash = sorted(request.host_ports & used.host_ports)
    if clash:
        shown = ", ".join(f"{port}/{proto}" for port, proto in clash)
        return f"host port {shown} already in use"
    return None


def _room(node: Node, used: NodeUsage, shape: PlacementRequest) -> int:
    """Return how many more requests of ``shape`` fit on ``node``: what ``_fit_reason`` checks."""
    alloc = node.allocatable
    room = alloc.pods - used.pods
    if shape.cpu:
        room = min(room, (alloc.cpu - used.cpu) // shape.cpu)
    if shape.memory:
        room = min(room, (alloc.memory - used.memory) // shape.memory)
    if shape.host_ports:
        room = min(room, 0 if shape.host_ports & used.host_ports else 1)
    return max(room, 0)


def _by_instance(request: PlacementRequest) -> str:
    return request.instance


def _summary(total: int, reasons: Mapping[str, str]) -> str:
    kinds = Counter(reason.split(":")[0].split(" (")[0] for reason in reasons.values())
    parts = ", ".join(_counted(count, kind) for kind, count in kinds.most_common())
    return f"0/{total} nodes fit: {parts}" if total else "no nodes in the cluster"


def _counted(count: int, kind: str) -> str:
    """Say ``kind`` of ``count`` nodes: "4 nodes are cordoned", "1 insufficient cpu"."""
    if count > 1 and kind.startswith("node is "):
        kind = "nodes are " + kind.removeprefix("node is ").replace(" runs ", " run ")
    return f"{count} {kind}"


class DefaultScheduler:
    """Filter-then-score placement with batching of equal requests. Pure and deterministic."""

    def place(
        self,
        requests: Sequence[PlacementRequest],
        nodes: Sequence[Node],
        usage: Mapping[str, NodeUsage],
    ) -> Placements:
        """Place ``requests`` on ``nodes``; see the module docstring for the rules."""
        result = Placements()
        state = _State(sorted(nodes, key=lambda n: n.name), usage)
        batches: dict[_BatchKey, list[PlacementRequest]] = defaultdict(list)
        # Pinned requests first: they have no other node to go to.
        for request in sorted((r for r in requests if r.node is not None), key=_by_instance):
            state.place_pinned(request, result)
        for request in requests:
            if request.node is not None:
                continue
            key = (
                request.group,
                request.cpu,
                request.memory,
                tuple(sorted(request.host_ports)),  # sortable (a frozenset's < is "subset of")
                tuple(sorted(request.constraints.items())),
                request.strategy,  # a str: its .value would cost a descriptor call per request
            )
            batches[key].append(request)
        # Sorted, so the answer depends on what is asked, not on the order it is asked in.
        for key in sorted(batches):
            batch = sorted(batches[key], key=lambda r: r.instance)
            if batch[0].strategy == PlacementStrategy.SPREAD:
                state.place_spread(batch, result)
            else:
                state.place_binpack(batch, result)
        return result


@dataclass(slots=True)
class _Heap:
    """The binpack candidates of one set of constraints, fullest first."""

    entries: list[tuple[float, str, int]]
    """``(-fullness, node, version)``: a node's current entry, maybe stale ones too."""
    nodes: set[str]
    """The nodes that pass the static filters for these constraints."""
    seen: int = 0
    """How much of ``_State.placed`` the entries reflect."""


class _State:
    """Usage and candidate heaps for one ``place`` call."""

    def __init__(self, nodes: list[Node], usage: Mapping[str, NodeUsage]) -> None:
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self.usage = usage
        self.mine: dict[str, NodeUsage] = {}
        """Copies of the usage of nodes this call placed on (the caller's is never changed)."""
        self.version = dict.fromkeys(self.by_name, 0)
        self.placed: list[str] = []
        """The nodes placed on, in order (a node once per placement of one or more requests)."""
        self._static: dict[tuple[tuple[str, str], ...], tuple[list[Node], dict[str, str]]] = {}
        self._fullest: dict[tuple[tuple[str, str], ...], _Heap] = {}

    def static(self, shape: PlacementRequest) -> tuple[list[Node], dict[str, str]]:
        """Return the nodes passing the static filters for ``shape``, and the others' reasons."""
        key = tuple(sorted(shape.constraints.items()))
        if key not in self._static:
            eligible: list[Node] = []
            reasons: dict[str, str] = {}
            for node in self.nodes:
                reason = _static_reason(node, shape)
                if reason is None:
                    eligible.append(node)
                else:
                    reasons[node.name] = reason
            self._static[key] = (eligible, reasons)
        return self._static[key]

    def used(self, name: str) -> NodeUsage:
        """Return what is on node ``name``, with this call's placements."""
        used = self.mine.get(name)
        return self.usage.get(name, _EMPTY) if used is None else used

    def fullness(self, name: str) -> float:
        node, used = self.by_name[name], self.used(name)
        alloc = node.allocatable
        cpu = used.cpu / alloc.cpu if alloc.cpu else 0.0
        memory = used.memory / alloc.memory if alloc.memory else 0.0
        pods = used.pods / alloc.pods if alloc.pods else 1.0
        return (cpu + memory + pods) / 3

    def assign(self, name: str, request: PlacementRequest, result: Placements) -> None:
        """Place ``request`` on node ``name``."""
        self.assign_all(name, [request], result)

    def assign_all(self, name: str, batch: list[PlacementRequest], result: Placements) -> None:
        """Place every request of ``batch`` (one shape) on node ``name``."""
        used = self.mine.get(name)
        if used is None:
            used = self.mine[name] = _copy(self.used(name))
        shape, count = batch[0], len(batch)
        used.cpu += count * shape.cpu
        used.memory += count * shape.memory
        used.pods += count
        used.host_ports |= shape.host_ports
        used.groups[shape.group] = used.groups.get(shape.group, 0) + count
        self.version[name] += 1
        self.placed.append(name)
        for request in batch:
            result.assigned[request.instance] = name

    def fail(self, batch: list[PlacementRequest], result: Placements) -> None:
        """Record, for every request of ``batch``, why each node refuses it."""
        shape = batch[0]
        eligible, static_reasons = self.static(shape)
        reasons = dict(static_reasons)
        for node in eligible:
            reasons[node.name] = _fit_reason(node, self.used(node.name), shape) or "no room left"
        failure = ScheduleFailure(message=_summary(len(self.nodes), reasons), nodes=reasons)
        for request in batch:
            result.failed[request.instance] = failure

    def place_pinned(self, request: PlacementRequest, result: Placements) -> None:
        """Place ``request`` on its pinned node, or say why that node does not fit."""
        name = request.node
        assert name is not None
        node = self.by_name.get(name)
        if node is None:
            reason: str | None = "node is not in the cluster"
        else:
            reason = _static_reason(node, request) or _fit_reason(node, self.used(name), request)
        if reason is None:
            self.assign(name, request, result)
            return
        result.failed[request.instance] = ScheduleFailure(
            message=f"node {name} does not fit: {reason}", nodes={name: reason}
        )

    def place_binpack(self, batch: list[PlacementRequest], result: Placements) -> None:
        """Fullest node first, from a heap shared by every batch with the same constraints.

        Entries carry the node's version. Before a batch, the nodes placed on
        since the heap was last used (by batches of other constraints, of the
        spread strategy, pinned requests) get a current entry; an entry made
        stale by a later placement is then skipped, a current one being in the
        heap. The fullest node takes as many of the batch as fit (one at a
        time, each would go there too: a node placed on is only fuller than
        before). Nodes that cannot take this batch's shape are set aside for
        the rest of the batch and put back afterwards.
        """
        shape = batch[0]
        key = tuple(sorted(shape.constraints.items()))
        known = self._fullest.get(key)
        if known is None:
            eligible = {n.name for n in self.static(shape)[0]}
            known = self._fullest[key] = _Heap([self._entry(name) for name in eligible], eligible)
            heapq.heapify(known.entries)
        else:
            for name in set(self.placed[known.seen :]) & known.nodes:
                heapq.heappush(known.entries, self._entry(name))
        heap = known.entries
        set_aside: list[tuple[float, str, int]] = []
        placed = 0
        while placed < len(batch):
            if not heap:
                self.fail(batch[placed:], result)
                break
            entry = heapq.heappop(heap)
            _, name, version = entry
            if version != self.version[name]:
                continue  # out of date: the node's current entry is in the heap too
            room = _room(self.by_name[name], self.used(name), shape)
            if not room:
                set_aside.append(entry)
                continue
            self.assign_all(name, batch[placed : placed + room], result)
            placed += room
            heapq.heappush(heap, self._entry(name))
        for entry in set_aside:
            heapq.heappush(heap, entry)
        known.seen = len(self.placed)

    def _entry(self, name: str) -> tuple[float, str, int]:
        """Return node ``name``'s entry in a binpack heap: fullest first, at its version."""
        return (-self.fullness(name), name, self.version[name])

    def place_spread(self, batch: list[PlacementRequest], result: Placements) -> None:
        """Fewest instances of the workload first, then the emptiest node."""
        shape = batch[0]
        heap = [
            (self.used(n.name).groups.get(shape.group, 0), self.fullness(n.name), n.name)
            for n in self.static(shape)[0]
            if _fit_reason(n, self.used(n.name), shape) is None
        ]
        heapq.heapify(heap)
        for index, request in enumerate(batch):
            if not heap:
                self.fail(batch[index:], result)
                return
            _, _, name = heapq.heappop(heap)
            self.assign(name, request, result)
            if _fit_reason(self.by_name[name], self.used(name), shape) is None:
                count = self.used(name).groups[shape.group]
                heapq.heappush(heap, (count, self.fullness(name), name))


def _copy(usage: NodeUsage) -> NodeUsage:
    return NodeUsage(
        cpu=usage.cpu,
        memory=usage.memory,
        pods=usage.pods,
        host_ports=set(usage.host_ports),
        groups=dict(usage.groups),
    )
