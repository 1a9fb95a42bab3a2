"""One apply as a linked set of traces across a server and a worker, exported over OTLP.

Both agents export their spans to a real OTLP/HTTP collector in this process
(the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``): the server's request and
reconcile, the worker's start of the instance, all tied to the request's
trace, the worker's calls to the server in the trace of its start, and the
worker's ``Started`` event carries the request's trace id. Without a
collector, the server's ``get_trace`` shows the same: it asks the worker for
its spans (the gRPC Traces service).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shoal.interfaces import WorkloadSpec
from tests.multinode.support import LocalCluster, running_by_node, wait_until


@dataclass
class Span:
    node: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    links: list[str] = field(default_factory=list)


class Collector:
    """An OTLP/HTTP trace receiver on loopback: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
                node = attributes.get("service.instance.id", "")
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            Span(
                                node,
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                [link.trace_id.hex() for link in span.links],
                            )
                        )

    def seen(self) -> list[Span]:
        with self._lock:
            return list(self.spans)


@pytest.fixture
def collector() -> Iterator[Collector]:
    made = Collector()
    made.thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()


@pytest.mark.slow
def test_an_apply_is_traced_from_the_servers_api_to_the_workers_start(
    cluster: LocalCluster, collector: Collector
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = cluster.add("s1", "server", env=env)
    cluster.start(server)
    worker = cluster.add("w1", "worker", join=[server], env=env)
    cluster.start(worker)
    spec = WorkloadSpec.model_validate(
        {
            "name": "traced",
            "replicas": 1,
            "template": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
        }
    )
    result = cluster.query(server, lambda client: client.apply([spec]))
    trace_id = result.trace_id
    assert trace_id is not None
    wait_until(
        "the instance running on w1",
        lambda: running_by_node(cluster.listing(server, "instances"), "traced") == {"w1": 1},
        context=cluster.logs,
    )

    def linked() -> list[Span] | None:
        spans = collector.seen()
        mine = [s for s in spans if s.trace_id == trace_id]
        starts = [s for s in spans if s.name == "shoal.start" and trace_id in s.links]
        reconciles = [s for s in spans if s.name == "shoal.reconcile" and trace_id in s.links]
        if not (mine and starts and reconciles):
            return None
        start = starts[0].trace_id
        runs = [s for s in spans if s.name == "runtime.run" and s.trace_id == start]
        calls = [s for s in spans if s.name.startswith("grpc ") and s.trace_id == start]
        if not runs or {c.node for c in calls} != {"s1", "w1"}:
            return None
        return [*mine, *starts, *reconciles, *runs, *calls]

    spans = wait_until("the linked spans at the collector", linked, context=cluster.logs)
    request = next(s for s in spans if s.name == "POST /v1/workloads/apply")
    assert request.node == "s1" and request.parent == ""
    assert {s.node for s in spans if s.name == "shoal.reconcile"} == {"s1"}
    start = next(s for s in spans if s.name == "shoal.start")
    assert start.node == "w1" and start.trace_id != trace_id and start.parent == ""
    run = next(s for s in spans if s.name == "runtime.run")
    assert run.node == "w1" and run.trace_id == start.trace_id

    # The worker's report of its start reaches the server in the start's trace, linked too.
    report = "grpc shoal.cluster.v1.NodeState/ReportInstance"
    (served,) = {(s.node, s.trace_id) for s in spans if s.name == report and s.node == "s1"}
    assert served == ("s1", start.trace_id)
    assert all(trace_id in s.links for s in spans if s.name == report and s.node == "s1")

    events = cluster.listing(server, "events")
    started = [e for e in events if e["reason"] == "Started" and e["object"]["kind"] == "Instance"]
    assert started and all(e["trace_id"] == trace_id for e in started)

    # The server's get_trace holds the worker's spans too, asked of the worker over gRPC.
    view = cluster.query(server, lambda client: client.get_trace(trace_id))
    assert view.node == "s1" and view.nodes == ["s1", "w1"] and view.missing == {}
    shown = {(s.node, s.name, s.trace_id) for s in view.spans}
    assert ("s1", "POST /v1/workloads/apply", trace_id) in shown
    assert {("w1", "shoal.start", start.trace_id), ("w1", "runtime.run", start.trace_id)} <= shown
    assert start.trace_id in view.linked_traces
    # And explain's start trace, asked of the server, is the worker's start and its cause.
    (instance,) = [i for i in cluster.listing(server, "instances") if i["workload"] == "traced"]
    assert instance["start_trace_id"] == start.trace_id
    view = cluster.query(server, lambda client: client.get_trace(start.trace_id))
    names = {(s.node, s.name) for s in view.spans if s.trace_id == start.trace_id}
    assert {("w1", "shoal.start"), ("w1", "runtime.run"), ("s1", report)} <= names
    assert view.cause_traces == [trace_id]
