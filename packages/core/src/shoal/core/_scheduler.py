"""The default scheduler: filter the nodes, then score the ones that fit.

Filters, in order (the first that rejects a node is its reason): gossip state
alive, not cordoned, not server-only, placement constraints (node labels),
pod count, CPU, memory, host ports. Scores: ``binpack`` prefers the node that
is fullest after placement (CPU, memory and pod count, equally weighted);
``spread`` prefers the node with fewest instances of the same workload, then
the emptiest. Ties go to the node name, so placement is deterministic.

Requests of one workload with equal shape are placed as a batch: the static
filters run once per batch, and the candidate nodes sit in a heap keyed by
score. A node that cannot take one more instance of the batch can take none
(usage only grows), so it leaves the heap for good. A batch of ``m`` requests
over ``n`` nodes costs ``O((m + n) log n)`` instead of ``O(m · n)``.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

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

_BatchKey = tuple[str, int, int, frozenset[tuple[int, str]], tuple[tuple[str, str], ...], str]


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


def _utilisation(node: Node, used: NodeUsage, request: PlacementRequest) -> float:
    alloc = node.allocatable
    cpu = (used.cpu + request.cpu) / alloc.cpu if alloc.cpu else 0.0
    memory = (used.memory + request.memory) / alloc.memory if alloc.memory else 0.0
    pods = (used.pods + 1) / alloc.pods if alloc.pods else 0.0
    return (cpu + memory + pods) / 3


def _summary(total: int, reasons: Mapping[str, str]) -> str:
    kinds = Counter(reason.split(":")[0].split(" (")[0] for reason in reasons.values())
    parts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    return f"0/{total} nodes fit: {parts}" if total else "no nodes in the cluster"


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
        ordered = sorted(nodes, key=lambda n: n.name)
        used: dict[str, NodeUsage] = {
            n.name: _copy(usage.get(n.name, NodeUsage())) for n in ordered
        }
        batches: dict[_BatchKey, list[PlacementRequest]] = defaultdict(list)
        for request in requests:
            key = (
                request.group,
                request.cpu,
                request.memory,
                request.host_ports,
                tuple(sorted(request.constraints.items())),
                request.strategy.value,
            )
            batches[key].append(request)
        # Sorted, so the answer depends on what is asked, not on the order it is asked in.
        for key in sorted(batches):
            batch = sorted(batches[key], key=lambda r: r.instance)
            self._place_batch(batch, ordered, used, result)
        return result

    def _place_batch(
        self,
        batch: list[PlacementRequest],
        nodes: list[Node],
        used: dict[str, NodeUsage],
        result: Placements,
    ) -> None:
        shape = batch[0]
        reasons: dict[str, str] = {}
        heap: list[tuple[tuple[float, ...], str]] = []
        by_name: dict[str, Node] = {}
        for node in nodes:
            reason = _static_reason(node, shape) or _fit_reason(node, used[node.name], shape)
            if reason is not None:
                reasons[node.name] = reason
                continue
            by_name[node.name] = node
            heap.append((self._score(node, used[node.name], shape), node.name))
        heapq.heapify(heap)
        for request in batch:
            if not heap:
                result.failed[request.instance] = ScheduleFailure(
                    message=_summary(len(nodes), reasons), nodes=dict(reasons)
                )
                continue
            _, name = heapq.heappop(heap)
            node, node_used = by_name[name], used[name]
            node_used.cpu += request.cpu
            node_used.memory += request.memory
            node_used.pods += 1
            node_used.host_ports |= request.host_ports
            node_used.groups[request.group] = node_used.groups.get(request.group, 0) + 1
            result.assigned[request.instance] = name
            reason = _fit_reason(node, node_used, shape)
            if reason is None:
                heapq.heappush(heap, (self._score(node, node_used, shape), name))
            else:
                reasons[name] = reason

    @staticmethod
    def _score(node: Node, used: NodeUsage, request: PlacementRequest) -> tuple[float, ...]:
        util = _utilisation(node, used, request)
        if request.strategy == PlacementStrategy.SPREAD:
            return (float(used.groups.get(request.group, 0)), util)
        return (-util,)


def _copy(usage: NodeUsage) -> NodeUsage:
    return NodeUsage(
        cpu=usage.cpu,
        memory=usage.memory,
        pods=usage.pods,
        host_ports=set(usage.host_ports),
        groups=dict(usage.groups),
    )
