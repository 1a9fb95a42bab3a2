"""get_trace across nodes: whom a server asks for their spans, and how the answers merge.

The nodes here are TraceQuery fakes (the gRPC one is tested in
tests/cluster/test_grpc_traces.py, the whole path in
tests/multinode/test_tracing.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from shoal.core import LocalNode, ManualClock, ShoalService
from shoal.core import _traces as traces_module
from shoal.core._traces import OTHER_NODES, gather_trace
from shoal.interfaces import (
    CALLER_NODE,
    MAX_TRACE_NODES,
    MAX_TRACE_SPANS,
    GossipState,
    Member,
    SpanRecord,
    Tag,
    TraceQuery,
    TraceView,
    Unavailable,
)
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

TRACE = "a" * 32
START_TRACE = "b" * 32
RECONCILE_TRACE = "c" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def span(node: str, name: str, at: int, trace_id: str = TRACE, caller: str = "") -> SpanRecord:
    """A span of ``node`` begun ``at`` ms after T0 (a server span of ``caller``'s call if set)."""
    begun = T0 + timedelta(milliseconds=at)
    return SpanRecord(
        trace_id=trace_id,
        span_id=f"{hash((node, name, at)) & (2**64 - 1):016x}",
        name=name,
        start=begun,
        end=begun + timedelta(milliseconds=1),
        duration_ms=1.0,
        attributes={CALLER_NODE: caller} if caller else {},
        node=node,
    )


def member(name: str, role: str = "worker", state: GossipState = GossipState.ALIVE) -> Member:
    return Member(
        name=name,
        address="198.18.0.1:7946",
        state=state,
        tags={Tag.ROLE: role, Tag.GRPC: "198.18.0.1:7947"},
    )


class Nodes:
    """The other nodes' span buffers, reached as ``reach(member)`` (and who was asked)."""

    def __init__(self, views: dict[str, TraceView]) -> None:
        self.views = views
        self.asked: list[str] = []
        self.failing: dict[str, str] = {}
        self.silent: set[str] = set()
        self.broken: set[str] = set()

    def reach(self, member: Member) -> TraceQuery:
        nodes = self

        class Remote:
            async def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
                nodes.asked.append(member.name)
                if member.name in nodes.failing:
                    raise Unavailable(nodes.failing[member.name])
                if member.name in nodes.silent:
                    await anyio.sleep_forever()
                if member.name in nodes.broken:
                    raise RuntimeError("a bug")
                return nodes.views.get(member.name, TraceView(trace_id=trace_id, node=member.name))

        return Remote()


def listed(*reported: Member) -> Callable[[], Awaitable[list[Member]]]:
    """What gossip reports, as ShoalService(members=...) takes it."""

    async def members() -> list[Member]:
        return list(reported)

    return members


def view(node: str, *spans: SpanRecord, **fields: object) -> TraceView:
    return TraceView.model_validate({"trace_id": TRACE, "node": node, "spans": spans, **fields})


async def test_a_server_asks_the_callers_its_spans_name_and_merges_their_spans_in_time() -> None:
    local = view(
        "s1",
        span("s1", "POST /v1/workloads/apply", 0),
        span("s1", "grpc NodeState/ReportInstance", 30, START_TRACE, caller="w1"),
        linked_traces=[START_TRACE],
    )
    start = span("w1", "shoal.start", 20, START_TRACE)
    run = span("w1", "runtime.run", 21, START_TRACE)
    nodes = Nodes({"w1": view("w1", start, run, linked_traces=[START_TRACE])})
    members = listed(member("s1", "server"), member("w1"), member("w2"))

    merged = await gather_trace(local, members, nodes.reach, MAX_TRACE_SPANS)

    assert nodes.asked == ["w1"]  # not w2: the trace never crossed it
    assert [(s.node, s.name) for s in merged.spans] == [
        ("s1", "POST /v1/workloads/apply"),
        ("w1", "shoal.start"),
        ("w1", "runtime.run"),
        ("s1", "grpc NodeState/ReportInstance"),
    ]
    assert (merged.node, merged.nodes, merged.missing) == ("s1", ["s1", "w1"], {})
    assert merged.linked_traces == [START_TRACE]


async def test_other_servers_are_asked_and_then_the_callers_they_name() -> None:
    local = view("s1", span("s1", "POST /v1/workloads/apply", 0))
    nodes = Nodes(
        {
            "s2": view(
                "s2",
                span("s2", "shoal.reconcile", 5, RECONCILE_TRACE),
                span("s2", "grpc NodeState/ReportInstance", 40, START_TRACE, caller="w2"),
                linked_traces=[RECONCILE_TRACE, START_TRACE],
            ),
            "w2": view("w2", span("w2", "shoal.start", 30, START_TRACE)),
        }
    )
    members = listed(member("s1", "both"), member("s2", "server"), member("w1"), member("w2"))

    merged = await gather_trace(local, members, nodes.reach, MAX_TRACE_SPANS)

    assert nodes.asked == ["s2", "w2"]  # round one, then round two
    assert merged.nodes == ["s1", "s2", "w2"]
    assert [s.name for s in merged.spans] == [
        "POST /v1/workloads/apply",
        "shoal.reconcile",
        "shoal.start",
        "grpc NodeState/ReportInstance",
    ]
    assert merged.linked_traces == [RECONCILE_TRACE, START_TRACE]


async def test_nodes_whose_spans_cannot_be_had_are_named_with_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(traces_module, "TRACE_QUERY_SECONDS", 0.05)
    callers = ["w-down", "w-silent", "w-failed", "w-gone", "w-suspect", "w-buggy"]
    local = view("s1", *(span("s1", "grpc x", i, caller=c) for i, c in enumerate(callers)))
    nodes = Nodes({})
    nodes.failing["w-down"] = "node at 198.18.0.1:7947 cannot be reached"
    nodes.silent.add("w-silent")
    nodes.broken.add("w-buggy")
    members = listed(
        member("s1", "server"),
        member("w-down"),
        member("w-silent"),
        member("w-failed", state=GossipState.FAILED),
        member("w-suspect", state=GossipState.SUSPECT),  # still asked: it may answer
        member("w-buggy"),
        member("s8", "server", state=GossipState.FAILED),  # may hold the reconcile: named
        member("s9", "server", state=GossipState.LEFT),  # gone with its spans: not named
    )

    with anyio.fail_after(5):
        merged = await gather_trace(local, members, nodes.reach, MAX_TRACE_SPANS)

    assert merged.missing == {
        "s8": "failed in gossip",
        "w-down": "node at 198.18.0.1:7947 cannot be reached",
        "w-silent": "no answer within 0.05 s",
        "w-failed": "failed in gossip",
        "w-gone": "not a member of the cluster (any more)",
        "w-buggy": "reading its spans failed: RuntimeError('a bug')",
    }
    assert merged.nodes == ["s1", "w-suspect"] and len(merged.spans) == len(callers)


async def test_one_answer_asks_a_bounded_number_of_nodes_and_holds_a_bounded_number_of_spans() -> (
    None
):
    callers = [f"w{i:02d}" for i in range(MAX_TRACE_NODES + 3)]
    local = view("s1", *(span("s1", "grpc x", i, caller=c) for i, c in enumerate(callers)))
    nodes = Nodes({c: view(c, span(c, "shoal.start", 100 + i)) for i, c in enumerate(callers)})
    members = listed(member("s1", "server"), *(member(c) for c in callers))

    merged = await gather_trace(local, members, nodes.reach, limit=20)

    assert sorted(nodes.asked) == callers[:MAX_TRACE_NODES]
    assert set(merged.missing) == set(callers[MAX_TRACE_NODES:])
    assert all(why.startswith("not asked") for why in merged.missing.values())
    assert len(merged.spans) == 20  # the earliest: the server's own, then the first starts
    assert merged.truncated == len(callers) + MAX_TRACE_NODES - 20


async def test_a_span_recorded_once_is_shown_once_whoever_returns_it() -> None:
    shared = span("s1", "POST /v1/workloads/apply", 0)
    local = view("s1", shared, span("s1", "grpc x", 1, caller="s2"))
    nodes = Nodes({"s2": view("s2", shared)})  # two nodes of one process share a buffer

    merged = await gather_trace(local, listed(member("s2", "server")), nodes.reach, MAX_TRACE_SPANS)

    assert [s.span_id for s in merged.spans].count(shared.span_id) == 1


async def test_a_node_alone_answers_with_its_own_spans() -> None:
    class Buffer:
        def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
            return view("solo", span("solo", "shoal.apply", 0))

    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        service = ShoalService(store, clock, traces=Buffer())
        shown = await service.get_trace(TRACE)
    assert (shown.nodes, shown.missing, [s.name for s in shown.spans]) == (
        ["solo"],
        {},
        ["shoal.apply"],
    )


async def test_a_server_holding_none_of_the_trace_names_itself_and_asks_only_the_others() -> None:
    class Empty:  # a buffer with no span of the trace names no node
        def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
            return TraceView(trace_id=trace_id)

    nodes = Nodes({"s2": view("s2", span("s2", "shoal.reconcile", 1, RECONCILE_TRACE))})

    members = listed(member("s1", "server"), member("s2", "server"))
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        service = ShoalService(
            store,
            clock,
            local=LocalNode("s1", MockRuntime(clock), None),
            members=members,
            traces=Empty(),
            remote_traces=nodes.reach,
        )
        shown = await service.get_trace(TRACE)
    assert nodes.asked == ["s2"]  # not itself, over the network
    assert (shown.node, shown.nodes, [s.name for s in shown.spans]) == (
        "s1",
        ["s1", "s2"],
        ["shoal.reconcile"],
    )


async def test_without_the_clusters_members_a_server_answers_with_its_own_spans_and_says_so() -> (
    None
):
    async def members() -> list[Member]:
        raise Unavailable("serf is restarting")

    local = view("s1", span("s1", "POST /v1/workloads/apply", 0), span("s1", "x", 1, caller="w1"))
    nodes = Nodes({})

    merged = await gather_trace(local, members, nodes.reach, MAX_TRACE_SPANS)

    assert nodes.asked == [] and len(merged.spans) == 2 and merged.nodes == ["s1"]
    assert merged.missing == {
        OTHER_NODES: "not asked: the cluster's members could not be listed: serf is restarting"
    }


async def test_a_node_that_restarted_since_the_trace_passed_it_is_named_not_taken_as_whole() -> (
    None
):
    local = view(
        "s1",
        span("s1", "grpc NodeState/ReportInstance", 30, START_TRACE, caller="w1"),
        span("s1", "grpc NodeState/ReportInstance", 40, START_TRACE, caller="w2"),
        kept_since=T0 - timedelta(hours=1),
    )
    restarted = TraceView(trace_id=TRACE, kept_since=T0 + timedelta(seconds=60))
    kept = view("w2", span("w2", "shoal.start", 35, START_TRACE), kept_since=T0)
    nodes = Nodes({"w1": restarted, "w2": kept})

    merged = await gather_trace(
        local, listed(member("w1"), member("w2")), nodes.reach, MAX_TRACE_SPANS
    )

    assert merged.nodes == ["s1", "w1", "w2"]
    assert merged.kept_since == T0 - timedelta(hours=1)  # the answering node's
    assert set(merged.missing) == {"w1"}
    assert merged.missing["w1"].startswith("keeps spans only since 2026-01-01 00:01:00 UTC")
