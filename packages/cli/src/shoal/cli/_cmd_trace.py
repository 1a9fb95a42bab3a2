"""`shoal trace TRACE_ID`: the spans of one request and of the work it caused, as a tree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, out, run, with_client

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import SpanRecord, TraceView


@app.command("trace")
def trace(
    trace_id: Annotated[
        str,
        typer.Argument(
            help="A trace id (32 hex digits): an event's trace_id, an apply's, or "
            "explain's start trace."
        ),
    ],
) -> None:
    """Show what one request did and the work it caused (reconcile, scheduling, starts).

    The request a trace served first (for a start's trace, the apply), then
    the trace, then each trace linking to it (the work it caused), every span
    with its duration, its node and, for a failed one, what failed; under a
    span, its store operations (marked ·) with theirs. The spans come from
    every node the trace crossed; a node whose spans could not be had is
    named first, with why.
    """

    async def call(shoal: ShoalClient) -> TraceView:
        return await shoal.get_trace(trace_id)

    view = run(lambda: with_client(call))
    for node, why in view.missing.items():  # said first: the tree below lacks their spans
        out.print(f"spans of node {node} missing: {why}", markup=False, highlight=False)
    if not view.spans:
        out.print(
            f"no spans of trace {view.trace_id} on {', '.join(view.nodes) or 'this server'} "
            f"({kept(view)})",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)
    if not any(s.trace_id == view.trace_id for s in view.spans):
        out.print(
            f"the spans of trace {view.trace_id} itself are no longer kept ({kept(view)}); "
            "what it links to or caused:",
            markup=False,
            highlight=False,
        )
    for number, lines in enumerate(render(view)):
        if number:
            out.print("")
        for line in lines:
            out.print(line, markup=False, highlight=False)
    if view.truncated:
        out.print(f"... {view.truncated} more spans not shown", markup=False, highlight=False)


_EPOCH = datetime.fromtimestamp(0, UTC)


def kept(view: TraceView) -> str:
    """Say which spans a node keeps: the answer's ``kept_since`` names the oldest it could."""
    from shoal.interfaces import SPAN_BUFFER

    since = (
        f", none from before {view.kept_since:%Y-%m-%d %H:%M:%S} UTC (the oldest kept, or "
        "when the agent last started)"
        if view.kept_since is not None
        else ""
    )
    return (
        f"each node keeps its last {SPAN_BUFFER:,} spans{since}; older ones are in your OTLP "
        "collector, if one is set"
    )


def render(view: TraceView) -> list[list[str]]:
    """Return one block of lines per trace: the request it served, itself, the work it caused.

    The traces it served and caused come earliest first (by their first span).
    """
    began: dict[str, datetime] = {}
    for span in view.spans:
        began[span.trace_id] = min(span.start, began.get(span.trace_id, span.start))

    def earliest_first(traces: list[str]) -> list[str]:
        return sorted(traces, key=lambda t: (t not in began, began.get(t, _EPOCH), t))

    order = [
        *earliest_first(view.cause_traces),
        view.trace_id,
        *earliest_first(view.linked_traces),
    ]
    blocks = []
    for trace_id in order:
        spans = [s for s in view.spans if s.trace_id == trace_id]
        if not spans:
            continue
        title = "trace"
        if trace_id in view.cause_traces:
            title = "caused by trace"
        elif trace_id != view.trace_id:
            title = "linked trace"
        lines = [f"{title} {trace_id}"]
        children: dict[str | None, list[SpanRecord]] = {}
        ids = {s.span_id for s in spans}
        for span in spans:  # a parent on another node (or evicted) makes a root here
            parent = span.parent_span_id if span.parent_span_id in ids else None
            children.setdefault(parent, []).append(span)
        lines += _tree(children, None, 1)
        blocks.append(lines)
    return blocks


def _tree(
    children: dict[str | None, list[SpanRecord]], parent: str | None, depth: int
) -> list[str]:
    lines = []
    for span in children.get(parent, []):
        failed = f"  ERROR {span.status_message}".rstrip() if span.status == "error" else ""
        node = f"  [{span.node}]" if span.node else ""
        lines.append(f"{'  ' * depth}{span.name}  {span.duration_ms:.1f} ms{node}{failed}")
        lines += _events(span, depth + 1)
        lines += _tree(children, span.span_id, depth + 1)
    return lines


def _events(span: SpanRecord, depth: int) -> list[str]:
    from shoal.interfaces import EVENT_DURATION, EVENT_OUTCOME

    lines = []
    if span.dropped_events:  # a node keeps a span's last events
        lines.append(f"{'  ' * depth}· … {span.dropped_events} earlier")
    for event in span.events:
        took = event.attributes.get(EVENT_DURATION)
        duration = f"  {took:.1f} ms" if isinstance(took, int | float) else ""
        outcome = event.attributes.get(EVENT_OUTCOME)
        ended = f"  {outcome}" if outcome else ""
        lines.append(f"{'  ' * depth}· {event.name}{duration}{ended}")
    return lines
