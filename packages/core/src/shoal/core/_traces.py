"""``get_trace`` across nodes: this node's spans of a trace, and those of the nodes it crossed.

Each node keeps the spans it recorded. A request's work crosses nodes: the
apply on the server that took it, the reconcile on the leader, each start on
the worker that runs the instance. So the server that answers asks the
others for their part, and merges it with its own:

1. it asks the other alive servers (the leader's reconcile, the calls
   workers made to them) and the nodes its own spans name as callers (a
   worker's report of its start is a span of the worker's trace here, with
   :data:`~shoal.interfaces.CALLER_NODE`);
2. then, once, the callers the servers' answers name that it has not asked yet.

Never more than :data:`~shoal.interfaces.MAX_TRACE_NODES` nodes, all at once,
each given :data:`~shoal.interfaces.TRACE_QUERY_SECONDS`; a node that cannot be
asked or does not answer is named in ``missing`` with why, never silently
left out. The cost of one ``get_trace`` is that of the nodes the trace
crossed, not of the cluster's size.

.. mermaid::

    flowchart LR
      C[get_trace on server s1] --> L[s1's own spans]
      L -->|caller w1| W1[w1's spans]
      C --> S2[server s2's spans] -->|caller w2| W2[w2's spans]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import anyio

from shoal.interfaces import (
    CALLER_NODE,
    MAX_TRACE_NODES,
    TRACE_QUERY_SECONDS,
    GossipState,
    Member,
    NodeRole,
    ShoalError,
    Tag,
    TraceQuery,
    TraceView,
)

__all__ = ["gather_trace"]

_SERVER_ROLES = frozenset({NodeRole.SERVER.value, NodeRole.BOTH.value})


async def gather_trace(
    local: TraceView,
    members: Sequence[Member],
    reach: Callable[[Member], TraceQuery],
    limit: int,
) -> TraceView:
    """Return ``local`` merged with the spans of the nodes the trace crossed (see the module).

    Args:
        local: This node's view of the trace (``local.node`` is this node).
        members: The cluster's members as gossip reports them.
        reach: The recorded spans of a member, over the network.
        limit: The most spans in the answer (the earliest are kept).
    """
    gathering = _Gathering(local, members, reach, limit)
    servers = [
        m.name
        for m in members
        if m.tags.get(Tag.ROLE) in _SERVER_ROLES and m.state == GossipState.ALIVE
    ]
    answers = await gathering.ask([*servers, *_callers([local])])
    await gathering.ask(list(_callers(answers)))  # the callers of the other servers
    return _merged(local, gathering.views, gathering.missing, limit)


def _callers(views: Iterable[TraceView]) -> Iterable[str]:
    """Yield the nodes named as callers by the spans of ``views``."""
    for view in views:
        for span in view.spans:
            caller = span.attributes.get(CALLER_NODE)
            if isinstance(caller, str) and caller:
                yield caller


class _Gathering:
    """The nodes asked so far for their spans of one trace, their answers, and who is missing."""

    def __init__(
        self,
        local: TraceView,
        members: Sequence[Member],
        reach: Callable[[Member], TraceQuery],
        limit: int,
    ) -> None:
        self.trace_id, self.limit, self.reach = local.trace_id, limit, reach
        self.members = {m.name: m for m in members}
        self.asked = {local.node}
        self.room = MAX_TRACE_NODES
        self.views = [local]
        self.missing: dict[str, str] = {}
        """Nodes the trace crossed whose spans are not in the answer, and why."""

    async def ask(self, names: Iterable[str]) -> list[TraceView]:
        """Ask the nodes of ``names`` not asked yet, all at once; return their answers."""
        answers: list[TraceView] = []

        async def ask(member: Member) -> None:
            with anyio.move_on_after(TRACE_QUERY_SECONDS):
                try:
                    answers.append(await self.reach(member).trace(self.trace_id, self.limit))
                except ShoalError as exc:
                    self.missing[member.name] = exc.message
                return
            self.missing[member.name] = f"no answer within {TRACE_QUERY_SECONDS:g} s"

        async with anyio.create_task_group() as tg:
            for name in dict.fromkeys(names):
                if name in self.asked:
                    continue
                self.asked.add(name)
                member = self.members.get(name)
                if member is None:
                    self.missing[name] = "not a member of the cluster (any more)"
                elif member.state != GossipState.ALIVE:
                    self.missing[name] = f"{member.state.value} in gossip"
                elif self.room <= 0:
                    self.missing[name] = (
                        f"not asked: one answer asks at most {MAX_TRACE_NODES} other nodes"
                    )
                else:
                    self.room -= 1
                    tg.start_soon(ask, member)
        self.views += answers
        return answers


def _merged(
    local: TraceView, views: list[TraceView], missing: dict[str, str], limit: int
) -> TraceView:
    """Return one view of ``views``: spans once each, earliest first, at most ``limit``."""
    seen: set[tuple[str, str]] = set()
    spans = []
    for view in views:
        for span in view.spans:
            if (span.trace_id, span.span_id) not in seen:
                seen.add((span.trace_id, span.span_id))
                spans.append(span)
    spans.sort(key=lambda s: s.start)
    linked = dict.fromkeys(t for v in views for t in v.linked_traces)
    causes = dict.fromkeys(t for v in views for t in v.cause_traces)
    nodes = [local.node, *(v.node for v in views[1:] if v.spans)]
    return TraceView(
        trace_id=local.trace_id,
        spans=spans[:limit],
        linked_traces=[t for t in linked if t != local.trace_id],
        cause_traces=[t for t in causes if t != local.trace_id],
        truncated=sum(v.truncated for v in views) + max(0, len(spans) - limit),
        node=local.node,
        nodes=list(dict.fromkeys(nodes)),
        missing=missing,
    )
