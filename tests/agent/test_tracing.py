"""Traces: one apply from the REST door to the runtime, linked across the loops; OTLP export.

The agent installs OpenTelemetry's SDK for the whole process (once), with a
bounded span buffer; these tests read it through ``GET /v1/traces/{id}``,
the way an operator or an agent does.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shoal.agent import NodeConfig, ShoalNode, SpanRecorder, run_agent
from shoal.agent._logging import JsonFormatter
from shoal.agent._tracing import tracing_exporter
from shoal.api import bind, serve_api
from shoal.cli._cmd_trace import render
from shoal.client import ShoalClient, init_keypair, load_keypair
from shoal.core import MeteredStore
from shoal.interfaces import (
    EVENT_DURATION,
    EVENT_OUTCOME,
    MAX_SPAN_EVENTS,
    NO_METRICS,
    Compare,
    CompareTarget,
    InstanceState,
    InvalidInput,
    NotFound,
    PutOp,
    RevisionConflict,
    Role,
    SpanRecord,
    TraceView,
    Via,
    WorkloadSpec,
)
from shoal.state import MemoryStore
from tests.shoal_cli import run_shoal

pytestmark = pytest.mark.anyio

HELLO = WorkloadSpec.model_validate(
    {
        "name": "traced",
        "replicas": 1,
        "template": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }
)


@dataclass
class Agent:
    node: ShoalNode
    admin: ShoalClient
    operator: ShoalClient
    url: str
    homes: dict[Role, Path]

    def env(self, role: Role) -> dict[str, str]:
        """The environment of a `shoal` command run with ``role``'s key against this agent."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "TRACE"))}
        return {**base, "SHOAL_SERVER": self.url, "SHOAL_HOME": str(self.homes[role])}


@asynccontextmanager
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    homes = {role: tmp_path / role.value for role in (Role.ADMIN, Role.OPERATOR)}
    pairs = {role: init_keypair(home, f"{role.value}@test") for role, home in homes.items()}
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    lines = [f"{role.value} {pair.public_line}\n" for role, pair in pairs.items()]
    (data / "authorized_keys").write_text("".join(lines))
    (data / "authorized_keys").chmod(0o600)
    config = NodeConfig(
        data_dir=data, name="t1", runtime="mock", state="memory", api_addr="127.0.0.1:0"
    )
    async with anyio.create_task_group() as tg:
        node: ShoalNode = await tg.start(run_agent, config, homes[Role.ADMIN])
        url = f"http://{node.config.api_addr}"
        async with (
            ShoalClient(url, pairs[Role.ADMIN]) as admin,
            ShoalClient(url, pairs[Role.OPERATOR]) as operator,
        ):
            yield Agent(node, admin, operator, url, homes)
        tg.cancel_scope.cancel()


def named(view: TraceView, name: str) -> list[SpanRecord]:
    return [s for s in view.spans if s.name == name]


def ancestors(view: TraceView, span: SpanRecord) -> list[str]:
    by_id = {s.span_id: s for s in view.spans}
    chain = []
    while span.parent_span_id is not None:
        chain.append(span.parent_span_id)
        if span.parent_span_id not in by_id:
            break
        span = by_id[span.parent_span_id]
    return chain


async def trace_with(client: ShoalClient, trace_id: str, *names: str) -> TraceView:
    """Read the trace until spans of every name in ``names`` were recorded (bounded)."""
    with anyio.fail_after(20):
        while True:
            view = await client.get_trace(trace_id)
            if all(named(view, n) for n in names):
                return view
            await anyio.sleep(0.05)


async def test_an_apply_is_a_trace_that_links_its_reconcile_and_its_start_on_the_node(
    tmp_path: Path,
) -> None:
    async with agent(tmp_path) as a:
        result = await a.operator.apply([HELLO])
        trace_id = a.operator.last_trace_id
        assert trace_id is not None and result.trace_id == trace_id
        with anyio.fail_after(20):
            while True:
                (inst,) = await a.operator.list_instances(workload="traced")
                if inst.state == InstanceState.RUNNING:
                    break
                await anyio.sleep(0.05)
        view = await trace_with(
            a.operator,
            trace_id,
            "POST /v1/workloads/apply",
            "shoal.reconcile",
            "shoal.schedule",
            "shoal.start",
            "runtime.run",
        )
        explained = await a.operator.explain(inst.name)
        shown = await anyio.to_thread.run_sync(
            lambda: run_shoal(a.env(Role.OPERATOR), "trace", trace_id).stdout
        )
        assert explained.start_trace_id is not None
        from_start = await a.operator.get_trace(explained.start_trace_id)
        started = await anyio.to_thread.run_sync(
            lambda: run_shoal(a.env(Role.OPERATOR), "trace", str(explained.start_trace_id)).stdout
        )
        events = await a.operator.list_events(kind="Instance", name=inst.name)
        events += await a.operator.list_events(kind="Workload", name="traced")
        audit = await a.admin.audit_entries()

    (request,) = named(view, "POST /v1/workloads/apply")
    assert request.trace_id == trace_id and request.parent_span_id is None
    assert request.kind == "server" and request.attributes["http.route"] == "/v1/workloads/apply"
    (service,) = named(view, "shoal.apply")
    assert request.span_id in ancestors(view, service)  # FastAPI's own spans come between
    assert service.attributes["shoal.object"] == "Workload default/traced"
    # Its store calls are events of the span they served, each timed.
    assert "store.txn" in [e.name for e in service.events]
    assert all(isinstance(e.attributes[EVENT_DURATION], float) for e in service.events)
    assert all(service.start <= e.time <= service.end for e in service.events)

    # Asynchronous work: traces of their own, linked to the request.
    start = named(view, "shoal.start")[0]
    assert start.trace_id != trace_id and start.parent_span_id is None
    assert [link.trace_id for link in start.links] == [trace_id]
    assert start.attributes["shoal.instance"] == f"default/{inst.name}"
    runtime = {s.name for s in view.spans if s.trace_id == start.trace_id}
    assert {"runtime.pull", "runtime.run"} <= runtime
    assert "store.put" in [e.name for e in start.events]  # 'starting', then 'running'
    reconcile = [s for s in named(view, "shoal.reconcile") if s.trace_id != trace_id]
    assert reconcile and all(trace_id in [k.trace_id for k in s.links] for s in reconcile)
    # Only passes that acted have a span (not the one its 'starting' report woke), and
    # each began before what it did (it decides before it knows it is worth a span).
    for batch in reconcile:
        acted = [s.start for s in view.spans if s.parent_span_id == batch.span_id]
        acted += [e.time for e in batch.events]  # its writes
        assert acted and batch.start <= min(acted), batch
    assert {start.trace_id, reconcile[0].trace_id} <= set(view.linked_traces)

    # What the request caused names its trace: events, the instance, the audit trail.
    assert explained.cause_trace_id == trace_id
    assert explained.start_trace_id == start.trace_id == inst.start_trace_id
    assert {"Created", "Scheduled", "Started"} <= {
        e.reason for e in events if e.trace_id == trace_id
    }
    (entry,) = [e for e in audit if e.verb == "apply"]
    assert entry.trace_id == trace_id

    # The CLI draws the same: the request's trace, then the linked ones, as trees.
    assert shown.startswith(f"trace {trace_id}\n  POST /v1/workloads/apply")
    assert f"linked trace {start.trace_id}\n  shoal.start" in shown
    assert "    runtime.run" in shown
    assert "· store.txn  " in shown  # an event, under the span it served
    # From the start's side: its trace, and the apply it was done for.
    assert from_start.cause_traces == [trace_id] and from_start.linked_traces == []
    assert {"POST /v1/workloads/apply", "shoal.start"} <= {s.name for s in from_start.spans}
    assert started.startswith(f"caused by trace {trace_id}\n  POST /v1/workloads/apply")
    assert f"\ntrace {start.trace_id}\n  shoal.start" in started


async def test_shoal_apply_names_the_trace_of_its_request(tmp_path: Path) -> None:
    manifest = tmp_path / "traced.yaml"
    manifest.write_text(HELLO.model_dump_json())  # JSON is YAML
    async with agent(tmp_path) as a:
        env = a.env(Role.OPERATOR)
        done = await anyio.to_thread.run_sync(lambda: run_shoal(env, "apply", "-f", str(manifest)))
        assert done.stdout.splitlines() == ["workload default/traced created (+1 instance(s))"]
        named = re.search(r"^trace ([0-9a-f]{32}): `shoal trace \1` shows", done.stderr, re.M)
        assert named is not None, done.stderr
        shown = await anyio.to_thread.run_sync(lambda: run_shoal(env, "trace", named[1]).stdout)
    assert "POST /v1/workloads/apply" in shown


async def test_a_callers_traceparent_is_honoured_for_admin_keys_only(tmp_path: Path) -> None:
    theirs = secrets.token_hex(16)
    traceparent = f"00-{theirs}-{secrets.token_hex(8)}-01"
    async with agent(tmp_path) as a:
        pairs = {
            r: ShoalClient(a.url, load_keypair(a.homes[r]), traceparent=traceparent)
            for r in a.homes
        }
        async with pairs[Role.ADMIN] as admin, pairs[Role.OPERATOR] as operator:
            await admin.list_workloads()
            await operator.list_workloads()
        assert admin.last_trace_id == theirs
        assert operator.last_trace_id not in (None, theirs)
        joined = await a.admin.get_trace(theirs)
        env = {**a.env(Role.ADMIN), "TRACEPARENT": traceparent}  # as a CI job passes it
        await anyio.to_thread.run_sync(lambda: run_shoal(env, "get", "nodes"))
        cli = await a.admin.get_trace(theirs)
    (span,) = named(joined, "GET /v1/workloads")
    assert span.parent_span_id == traceparent.split("-")[2]
    assert named(cli, "GET /v1/nodes")


async def test_a_log_line_written_inside_a_request_carries_its_trace_id(tmp_path: Path) -> None:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shoal.core")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with agent(tmp_path) as a:
            await a.operator.apply([HELLO])
            trace_id = a.operator.last_trace_id
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    (line,) = [entry for entry in logged if entry["message"].startswith("apply ")]
    assert line["message"] == "apply Workload default/traced by operator@test via cli: ok"
    assert line["trace_id"] == trace_id


async def test_get_trace_refuses_what_is_not_a_trace_id(tmp_path: Path) -> None:
    async with agent(tmp_path) as a:
        with pytest.raises(InvalidInput, match="32 hex digits"):
            await a.operator.get_trace("not-a-trace")
        empty = await a.operator.get_trace("0af7651916cd43dd8448eb211c80319c")
        env = a.env(Role.OPERATOR)
        shown = await anyio.to_thread.run_sync(
            lambda: run_shoal(env, "trace", "0af7651916cd43dd8448eb211c80319c", check=False)
        )
    assert empty.spans == [] and empty.linked_traces == []
    assert shown.returncode == 1 and "no spans of trace" in shown.stdout
    assert "none from before" in shown.stdout  # when the agent started: a restart forgets


def test_the_cli_shows_the_traces_a_trace_caused_earliest_first() -> None:
    began = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)

    def span(trace_id: str, after: float, name: str) -> SpanRecord:
        start = began + timedelta(seconds=after)
        return SpanRecord(
            trace_id=trace_id,
            span_id=trace_id[:16],
            name=name,
            start=start,
            end=start,
            duration_ms=0.0,
        )

    request, late, early = "a" * 32, "1" * 32, "f" * 32  # by id, late sorts first
    view = TraceView(
        trace_id=request,
        spans=[span(request, 0, "apply"), span(late, 240, "late"), span(early, 5, "early")],
        linked_traces=[late, early],
    )
    titles = [block[0] for block in render(view)]
    assert titles == [f"trace {request}", f"linked trace {early}", f"linked trace {late}"]


def test_the_span_buffer_keeps_the_last_spans_and_forgets_their_links() -> None:
    began = datetime.now(UTC)
    recorder = SpanRecorder(capacity=10)
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("cause") as cause:
        pass
    cause_id = f"{cause.get_span_context().trace_id:032x}"
    kept_since = recorder.trace(cause_id).kept_since
    assert kept_since is not None and began <= kept_since <= view_start(recorder, cause_id)
    from opentelemetry.trace import Link

    for i in range(24):
        with tracer.start_as_current_span(f"work-{i}", links=[Link(cause.get_span_context())]):
            pass
    assert len(recorder) == 10
    view = recorder.trace(cause_id)
    assert [s.name for s in view.spans] == [f"work-{i}" for i in range(14, 24)]
    assert view.kept_since == view.spans[0].start  # full: since its oldest span
    assert len(view.linked_traces) == 10
    for i in range(10):  # push out the linking spans: their index entries go too
        with tracer.start_as_current_span(f"other-{i}"):
            pass
    assert recorder.trace(cause_id).linked_traces == []
    assert recorder.trace(cause_id, limit=3).spans == []


def view_start(recorder: SpanRecorder, trace_id: str) -> datetime:
    """When the first span of ``trace_id`` the buffer holds began."""
    return recorder.trace(trace_id).spans[0].start


async def test_store_calls_are_timed_events_of_the_span_they_served() -> None:
    recorder = SpanRecorder()
    provider = TracerProvider()  # the SDK's own limit: 128 events a span
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("test")
    async with MemoryStore() as memory:
        store = MeteredStore(memory, NO_METRICS)
        await store.put("/outside", b"0")  # no span: nothing recorded
        with tracer.start_as_current_span("work") as work:
            await store.put("/k", b"1")
            with pytest.raises(RevisionConflict):
                await store.put("/k", b"2", expected_revision=99)
            stale = Compare("/k", CompareTarget.MOD_REVISION, 99)
            assert not (await store.txn([stale], [PutOp("/k", b"3")])).succeeded
        with tracer.start_as_current_span("busy") as busy:  # a reconcile of many workloads
            for _ in range(200):
                await store.get("/k")
            await store.revision()
    (record,) = recorder.trace(f"{work.get_span_context().trace_id:032x}").spans
    assert [e.name for e in record.events] == ["store.put", "store.put", "store.txn"]
    outcomes = [e.attributes.get(EVENT_OUTCOME) for e in record.events]
    assert outcomes == [None, "conflict", "conflict"]  # a failed compare is a lost CAS too
    assert all(isinstance(e.attributes[EVENT_DURATION], float) for e in record.events)
    assert [e.time for e in record.events] == sorted(e.time for e in record.events)
    assert record.start <= record.events[0].time and record.dropped_events == 0
    # A node keeps a span's last events and counts the earlier ones.
    (crowded,) = recorder.trace(f"{busy.get_span_context().trace_id:032x}").spans
    assert len(crowded.events) == MAX_SPAN_EVENTS
    assert crowded.events[-1].name == "store.revision"
    assert crowded.dropped_events == 201 - MAX_SPAN_EVENTS


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def test_spans_stay_local_unless_the_otel_variables_ask_for_an_exporter(
    otel_env: pytest.MonkeyPatch,
) -> None:
    assert tracing_exporter() is None
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing_exporter() is None
    otel_env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(InvalidInput, match="zipkin is not supported: use otlp"):
        tracing_exporter()
    otel_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(InvalidInput, match=r"grpc is not supported.*http/protobuf"):
        tracing_exporter()


async def test_spans_reach_an_otlp_collector_over_http(otel_env: pytest.MonkeyPatch) -> None:
    received: list[ExportTraceServiceRequest] = []
    got = anyio.Event()

    async def traces(request: Request) -> Response:
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.body())
        received.append(body)
        got.set()
        return Response(b"", media_type="application/x-protobuf")

    async with anyio.create_task_group() as tg:
        collector = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
        port = await tg.start(serve_api, collector, bind("127.0.0.1:0"))
        otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        exporter = tracing_exporter()
        assert exporter is not None
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        await anyio.to_thread.run_sync(_one_span, provider)
        with anyio.fail_after(10):
            await got.wait()
        tg.cancel_scope.cancel()
    provider.shutdown()
    names = [
        span.name
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert names == ["exported"]


def _one_span(provider: TracerProvider) -> None:
    with provider.get_tracer("test").start_as_current_span("exported"):
        pass


async def test_a_failed_call_marks_its_span_with_the_error_code_not_its_message(
    tmp_path: Path,
) -> None:
    async with agent(tmp_path) as a:
        with pytest.raises(NotFound, match="ghost"):
            await a.operator.scale("ghost", 2)
        trace_id = a.operator.last_trace_id
        assert trace_id is not None
        view = await trace_with(a.operator, trace_id, "shoal.scale")
    (service,) = named(view, "shoal.scale")
    assert (service.status, service.status_message) == ("error", "not_found")
    (request,) = named(view, "POST /v1/workloads/{namespace}/{name}/scale")
    assert request.attributes["http.response.status_code"] == 404
    assert all("ghost" not in s.status_message for s in view.spans)


async def test_the_events_of_one_trace_one_actor_or_one_door_are_listed_by_the_server(
    tmp_path: Path,
) -> None:
    async with agent(tmp_path) as a:
        await a.operator.apply([HELLO])
        trace_id = a.operator.last_trace_id
        assert trace_id is not None
        with anyio.fail_after(20):
            while True:  # until the node's Started is in, the last event of this apply
                traced = await a.operator.list_events(trace_id=trace_id)
                if "Started" in {e.reason for e in traced}:
                    break
                await anyio.sleep(0.05)
        await a.admin.list_workloads()
        by_operator = await a.operator.list_events(actor="operator@test")
        by_cli = await a.operator.list_events(via=Via.CLI)
        with pytest.raises(InvalidInput, match="32 hex digits"):
            await a.operator.list_events(trace_id="nope")
        shown = await anyio.to_thread.run_sync(
            lambda: run_shoal(a.env(Role.OPERATOR), "events", "--trace", trace_id, "-o", "json")
        )
    assert {e.reason for e in traced} >= {"Created", "Scheduled", "Started"}
    assert all(e.trace_id == trace_id for e in traced)
    assert {e.object.kind for e in traced} == {"Workload", "Instance"}
    assert [e.reason for e in by_operator] == ["Created"]
    assert all(e.actor.via == Via.CLI for e in by_cli) and by_cli
    assert [e["id"] for e in json.loads(shown.stdout)] == [e.id for e in traced]
