"""Node-to-node calls in a trace: signed context, a server span only for an authenticated node."""

from __future__ import annotations

import secrets

import anyio
import grpc
import pytest
from nacl.signing import SigningKey
from opentelemetry import baggage
from opentelemetry import context as otel_context

from shoal.agent import SpanRecorder, install_tracing
from shoal.cluster import CallVerifier, NodeChannel, NodeIdentity, serve_grpc
from shoal.cluster.grpc._grpc_base import authenticate
from shoal.cluster.grpc._pb import shoal_node_pb2 as pb
from shoal.cluster.grpc._tracing import TRACER as CLUSTER_TRACER
from shoal.cluster.grpc._tracing import authenticated
from shoal.interfaces import CALLER_NODE, ORIGIN_BAGGAGE, Unauthenticated

pytestmark = pytest.mark.anyio

PING = "/shoal.cluster.v1.NodeState/Ping"
Context = grpc.aio.ServicerContext[pb.PingRequest, pb.PingReply]
TOKEN = "the-join-token"


def pinged(verifier: CallVerifier) -> grpc.GenericRpcHandler:
    """A NodeState service whose Ping authenticates and admits its caller, then answers."""

    async def ping(request: pb.PingRequest, context: Context) -> pb.PingReply:
        caller = await authenticate(verifier, context, PING, request)
        authenticated(caller.name)  # admitted: what the services do once a caller may call them
        return pb.PingReply()

    return grpc.method_handlers_generic_handler(
        "shoal.cluster.v1.NodeState",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(
                ping,
                request_deserializer=pb.PingRequest.FromString,
                response_serializer=pb.PingReply.SerializeToString,
            )
        },
    )


@pytest.fixture
def spans() -> SpanRecorder:
    """The process's span buffer, as the agent sets it up (once per process)."""
    recorder = install_tracing("test")
    assert recorder is not None, "tracing is off (OTEL_SDK_DISABLED=true?)"
    return recorder


async def call_in_a_trace(token: str, origin: str) -> tuple[str, BaseException | None]:
    """Ping a server with ``token`` from inside a span serving the request ``origin``."""
    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_grpc, "127.0.0.1:0", [pinged(CallVerifier(TOKEN))])
        channel = NodeChannel(NodeIdentity("w1", SigningKey.generate()), token, f"127.0.0.1:{port}")
        attached = otel_context.attach(baggage.set_baggage(ORIGIN_BAGGAGE, origin))
        try:
            with CLUSTER_TRACER.start_as_current_span("shoal.start") as root:
                trace_id = f"{root.get_span_context().trace_id:032x}"
                try:
                    await channel.unary(PING, pb.PingRequest(), pb.PingReply)
                except Unauthenticated as exc:
                    failure = exc
        finally:
            otel_context.detach(attached)
            await channel.aclose()
            tg.cancel_scope.cancel()
    return trace_id, failure


async def test_a_nodes_call_is_a_server_span_of_its_trace_linked_to_the_request(
    spans: SpanRecorder,
) -> None:
    origin_trace = secrets.token_hex(16)
    origin = f"00-{origin_trace}-{secrets.token_hex(8)}-01"
    trace_id, failure = await call_in_a_trace(TOKEN, origin)
    assert failure is None
    view = spans.trace(trace_id)
    calls = {s.kind: s for s in view.spans if s.name == f"grpc {PING.strip('/')}"}
    client, server = calls["client"], calls["server"]
    assert server.trace_id == trace_id and server.parent_span_id == client.span_id
    assert [link.trace_id for link in server.links] == [origin_trace]
    assert server.attributes["rpc.method"] == "Ping"
    assert server.attributes[CALLER_NODE] == "w1"  # where get_trace finds the caller's spans
    assert CALLER_NODE not in client.attributes


async def test_a_call_that_fails_authentication_leaves_no_span_on_the_server(
    spans: SpanRecorder,
) -> None:
    origin = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    trace_id, failure = await call_in_a_trace("not-the-token", origin)
    assert isinstance(failure, Unauthenticated)
    kinds = [s.kind for s in spans.trace(trace_id).spans if s.name.startswith("grpc ")]
    assert kinds == ["client"]
