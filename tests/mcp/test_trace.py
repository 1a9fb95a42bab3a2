"""MCP and traces: a change tool's trace, get_trace, and whose params._meta trace is joined.

Change tools return their trace id, get_trace shows what the call caused,
and an admin's trace context in params._meta is joined (anyone else's is not).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client

from shoal.agent import SpanRecorder, install_tracing
from shoal.interfaces import Role
from shoal.mcp import Caller
from tests.mcp.support import HELLO, OPERATOR, Live, call, eventually, refused

pytestmark = pytest.mark.anyio


@pytest.fixture
def traced(live: Live) -> Iterator[SpanRecorder]:
    recorder = install_tracing("n1")  # the process's SDK, once, as the agent sets it up
    assert recorder is not None, "tracing is off (OTEL_SDK_DISABLED=true?)"
    live.service.traces = recorder
    yield recorder


async def test_a_change_tool_returns_its_trace_and_get_trace_shows_what_it_caused(
    live: Live, traced: SpanRecorder
) -> None:
    async with Client(live.server()) as client:
        applied = await call(client, "apply_workload", workload=HELLO)
        trace_id = applied["trace_id"]
        assert isinstance(trace_id, str) and len(trace_id) == 32

        async def started() -> dict[str, Any] | None:
            view = await call(client, "get_trace", trace_id=trace_id)
            names = {s["name"] for s in view["spans"]}
            wanted = {"tools/call apply_workload", "shoal.apply", "shoal.reconcile", "shoal.start"}
            return view if wanted <= names else None

        view = await eventually(started)
        (instance, _) = (await call(client, "list_instances", workload="hello"))["instances"]
        diagnosis = await call(client, "explain_instance", name=instance["name"])
        caused = await call(client, "list_events", trace_id=trace_id.upper(), limit=100)
        assert "should match pattern" in await refused(client, "get_trace", trace_id="z" * 32)
    spans = view["spans"]
    assert view["missing"] == {} and view["kept_since"] is not None  # the view's every field
    tool = next(s for s in spans if s["name"] == "tools/call apply_workload")
    assert tool["trace_id"] == trace_id and tool["attributes"]["gen_ai.tool.name"] == (
        "apply_workload"
    )
    starts = [s for s in spans if s["name"] == "shoal.start"]
    assert len(starts) == 2 and all(s["links"][0]["trace_id"] == trace_id for s in starts)
    assert all(not k.startswith("http.") for s in spans for k in s["attributes"])
    reasons = {e["reason"] for e in caused["events"]}
    assert {"Created", "Scheduled", "Started"} <= reasons
    assert all(e["trace_id"] == trace_id for e in caused["events"])
    assert diagnosis["cause_trace_id"] == trace_id
    assert diagnosis["start_trace_id"] in {s["trace_id"] for s in starts}


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "operator"])
async def test_trace_context_in_meta_is_joined_for_admins_only(
    live: Live, traced: SpanRecorder, admin: bool
) -> None:
    theirs = secrets.token_hex(16)
    meta = {"traceparent": f"00-{theirs}-{secrets.token_hex(8)}-01"}
    caller = Caller("admin@test", Role.ADMIN) if admin else OPERATOR
    async with Client(live.server(caller)) as client:
        result = await client.call_tool(
            "scale_workload",
            {"name": "ghost", "replicas": 1},
            meta=meta,  # type: ignore[arg-type]
        )
    assert result.is_error  # no such workload: the call is traced all the same
    joined = traced.trace(theirs)
    names = [s.name for s in joined.spans]
    assert ("tools/call scale_workload" in names) is admin
