"""``get_trace`` across nodes: this node's spans of a trace, and those of the nodes it crossed.

Each node keeps the spans it recorded. A request's work crosses nodes: the
apply on the server that took it, the reconcile on the leader, each start on
the worker that runs the instance. So the server that answers asks the
others for their part, and merges it with its own:

1. it asks the other servers (the leader's reconcile, the calls workers made
   to them) and the nodes its own spans name as callers (a worker's report
   of its start is a span of the worker's trace here, with
   :data:`~shoal.interfaces.CALLER_NODE`);
2. then, once, the callers that those answers name and it has not asked yet.

Never more than :data:`~shoal.interfaces.MAX_TRACE_NODES` other nodes, each
round's all at once, each given :data:`~shoal.interfaces.TRACE_QUERY_SECONDS`.
A node is asked while gossip holds it alive or suspect; one that cannot be
asked (failed, gone, past the bound) or does not answer is named in
``missing`` with why, never silently left out — but for a server that left
the cluster, whose spans went with it. The cost of one ``get_trace`` is that of
the nodes the trace crossed, not of the cluster's size.

.. mermaid::

    flowchart LR
      C[get_trace on server s1] --> L[s1's own spans]
      L -->|caller w1| W1[w1's spans]
      C --> S2[server s2's spans] -->|caller w2| W2[w2's spans]
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio

from shoal.interfaces import (
    CALLER_NODE,
    MAX_TRACE_NODES,
    SERVER_ROLES,
    TRACE_QUERY_SECONDS,
    GossipState,
    Member,
    ShoalError,
    Tag,
    TraceQuery,
    TraceView,
)

__all__ = ["OTHER_NODES", "gather_trace"]

log = logging.getLogger(__name__)

OTHER_NODES = "(other nodes)"
"""The key of ``missing`` when the cluster's members could not be listed at all."""

_ASKED_STATES = (GossipState.ALIVE, GossipState.SUSPECT)


async def gather_trace(
    local: TraceView,
    members: Callable[[], Awaitable[Sequence[Member]]],
    reach: Callable[[Member], TraceQuery],
    limit: int,
) -> TraceView:
    """Return ``local`` merged with the spans of the nodes the trace crossed (see the module).

    Args:
        local: This node's view of the trace (``local.node`` is this node).
        members: The cluster's members as gossip reports them. When they cannot
            be listed, the answer is ``local``, saying so in ``missing``.
        reach: The recorded spans of a member, over the network.
        limit: The most spans in the answer (the earliest are kept).
    """
    try:
        listed = await members()
    except ShoalError as exc:
        why = f"not asked: the cluster's members could not be listed: {exc.message}"
        return _merged(local, [local], {OTHER_NODES: why}, limit)
    gathering = _Gathering(local, listed, reach, limit)
    servers = [
        m.name
        for m in listed
        if m.tags.get(Tag.ROLE) in SERVER_ROLES and m.state != GossipState.LEFT
    ]
    answers = await gathering.ask([*servers, *_callers([local])])
    await gathering.ask(_callers(answers))  # the callers the others' spans name
    gathering.note_forgotten()
    return _merged(local, gathering.views, gathering.missing, limit)


def _callers(views: Iterable[TraceView]) -> list[str]:
    """Return the nodes named as callers by the spans of ``views``."""
    return [
        caller
        for view in views
        for span in view.spans
        if isinstance(caller := span.attributes.get(CALLER_NODE), str) and caller
    ]


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
                    answer = await self.reach(member).trace(self.trace_id, self.limit)
                    answers.append(answer.model_copy(update={"node": member.name}))
                except ShoalError as exc:
                    self.missing[member.name] = exc.message
                except Exception as exc:  # a bug, on either side: one node's spans, not all
                    log.exception("get_trace: reading the spans of node %s failed", member.name)
                    self.missing[member.name] = f"reading its spans failed: {exc!r}"
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
                elif member.state not in _ASKED_STATES:
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

    def note_forgotten(self) -> None:
        """Name in ``missing`` each node that answered but lost its part of the trace.

        One that keeps spans only since after the trace's calls from it (it
        restarted, or its buffer turned over): its part is gone, not absent.
        """
        for view in self.views[1:]:
            since = view.kept_since
            if since is None or view.node in self.missing:
                continue
            calls = [
                span.start
                for seen in self.views
                for span in seen.spans
                if span.attributes.get(CALLER_NODE) == view.node
            ]
            if calls and min(calls) < since:
                self.missing[view.node] = (
                    f"keeps spans only since {since:%Y-%m-%d %H:%M:%S} UTC (it restarted, or "
                    "its buffer turned over): its earlier part of this trace is gone"
                )


def _merged(
    local: TraceView, views: list[TraceView], missing: dict[str, str], limit: int
) -> TraceView:
    """Return one view of ``views``: spans once each, earliest first, at most ``limit``.

    ``truncated`` adds up what each node left out and what this merge leaves out.
    "Earliest" is by each node's own clock. ``kept_since`` is the answering node's.
    """
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
    return TraceView(
        trace_id=local.trace_id,
        spans=spans[:limit],
        linked_traces=[t for t in linked if t != local.trace_id],
        cause_traces=[t for t in causes if t != local.trace_id],
        truncated=sum(v.truncated for v in views) + max(0, len(spans) - limit),
        node=local.node,
        nodes=[view.node for view in views if view.node],
        missing=missing,
        kept_since=local.kept_since,
    )
