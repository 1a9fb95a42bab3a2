"""A node's recorded spans over real gRPC: its TraceGateway serves them, RemoteTraces reads them.

A server's ``get_trace`` reaches the spans of the other nodes a trace crossed
this way (``ShoalService(remote_traces=...)``, see tests/core/test_traces.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import pytest
from nacl.signing import SigningKey

from shoal.cluster import PodGateway, RemoteTraces, TraceGateway
from shoal.cluster.grpc._grpc_base import NodeChannel
from shoal.cluster.grpc._nodeauth import CallVerifier, NodeIdentity
from shoal.interfaces import (
    MAX_TRACE_SPANS,
    Forbidden,
    InvalidInput,
    SpanRecord,
    TraceQuery,
    TraceView,
    Unavailable,
)
from shoal.runtime import MockRuntime
from tests.cluster.grpc_support import serving
from tests.cluster.test_grpc_pods import SERVER, START, TOKEN, WAIT, Authorizer

pytestmark = pytest.mark.anyio

TRACE = "0123456789abcdef0123456789abcdef"


class Buffer:
    """A node's span buffer holding two spans of TRACE; remembers the limits asked for."""

    def __init__(self) -> None:
        self.limits: list[int] = []

    def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
        self.limits.append(limit)
        spans = [
            SpanRecord(
                trace_id=trace_id,
                span_id=f"{n:016x}",
                name=name,
                start=START + timedelta(milliseconds=n),
                end=START + timedelta(milliseconds=n + 1),
                duration_ms=1.0,
                attributes={"shoal.instance": "default/web-1a2b3", "shoal.attempt": n},
                node="w1",
            )
            for n, name in enumerate(["shoal.start", "runtime.run"], start=1)
        ]
        return TraceView(trace_id=trace_id, spans=spans[:limit], node="w1", truncated=0)


@asynccontextmanager
async def worker(source: Buffer | None) -> AsyncIterator[str]:
    """Serve a Traces service over ``source``; yield its address."""
    gateway = TraceGateway(source, CallVerifier(TOKEN), Authorizer({SERVER}))
    async with serving(gateway.handler()) as address:
        yield address


def remote(address: str, name: str = SERVER) -> RemoteTraces:
    return RemoteTraces(NodeChannel(NodeIdentity(name, SigningKey.generate()), TOKEN, address))


async def test_a_servers_query_returns_the_nodes_own_view_of_the_trace() -> None:
    source = Buffer()
    async with worker(source) as address, remote(address) as traces:
        reader: TraceQuery = traces  # what the service layer takes
        with anyio.fail_after(WAIT):
            shown = await reader.trace(TRACE, 1)
            whole = await reader.trace(TRACE)
    assert source.limits == [1, MAX_TRACE_SPANS]
    assert [s.name for s in shown.spans] == ["shoal.start"]
    assert whole == source.trace(TRACE)  # every field and attribute, as the node has it


async def test_a_caller_not_admitted_or_a_bad_question_is_refused() -> None:
    source = Buffer()
    async with worker(source) as address:
        async with remote(address, "worker-2") as traces:
            with anyio.fail_after(WAIT), pytest.raises(Forbidden, match="not a server"):
                await traces.trace(TRACE)
        async with remote(address) as traces:
            with anyio.fail_after(WAIT), pytest.raises(InvalidInput, match="32 hex digits"):
                await traces.trace("not-a-trace")
            with anyio.fail_after(WAIT), pytest.raises(InvalidInput, match="between 1 and"):
                await traces.trace(TRACE, MAX_TRACE_SPANS + 1)
    assert source.limits == []  # none of them reached the buffer


async def test_a_node_whose_tracing_is_off_says_so() -> None:
    async with worker(None) as address, remote(address) as traces:
        with anyio.fail_after(WAIT), pytest.raises(Unavailable, match="OTEL_SDK_DISABLED"):
            await traces.trace(TRACE)


async def test_a_node_without_the_service_is_named_as_older_not_as_a_grpc_code() -> None:
    gateway = PodGateway(MockRuntime(), CallVerifier(TOKEN), Authorizer({SERVER}))
    async with serving(gateway.handler()) as address, remote(address) as traces:  # no Traces
        with anyio.fail_after(WAIT), pytest.raises(Unavailable, match="older Shoal"):
            await traces.trace(TRACE)
