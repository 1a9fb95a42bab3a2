"""NodeChannel: a call whose channel is closed under it fails as Unavailable."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import grpc
import grpc.aio
import pytest
from nacl.signing import SigningKey

from shoal.cluster import NodeChannel, NodeIdentity, serve_grpc
from shoal.cluster.grpc._pb import shoal_node_pb2 as pb
from shoal.interfaces import Unavailable

pytestmark = pytest.mark.anyio

PING = "/shoal.cluster.v1.NodeState/Ping"
WATCH = "/shoal.cluster.v1.NodeState/WatchAssignments"


def hanging_state(both_arrived: anyio.Event | None = None) -> grpc.GenericRpcHandler:
    """A NodeState service whose calls never answer; ``both_arrived`` is set once both ran."""
    seen: list[str] = []

    def note(call: str) -> None:
        seen.append(call)
        if both_arrived is not None and len(seen) == 2:
            both_arrived.set()

    async def ping(_: pb.PingRequest, __: object) -> pb.PingReply:
        note("ping")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def watch(_: pb.WatchAssignmentsRequest, __: object) -> AsyncIterator[pb.AssignmentEvent]:
        note("watch")
        await anyio.sleep_forever()
        yield pb.AssignmentEvent()

    return grpc.method_handlers_generic_handler(
        "shoal.cluster.v1.NodeState",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(
                ping,
                request_deserializer=pb.PingRequest.FromString,
                response_serializer=pb.PingReply.SerializeToString,
            ),
            "WatchAssignments": grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=pb.WatchAssignmentsRequest.FromString,
                response_serializer=pb.AssignmentEvent.SerializeToString,
            ),
        },
    )


async def test_calls_in_flight_when_the_channel_closes_fail_as_unavailable() -> None:
    # A RemoteNodeState closes a server's channel when one call finds the server
    # gone; grpc then cancels the other calls on it. Those must fail as
    # Unavailable (retried), never as a bare cancellation that ends the task.
    failures: list[BaseException] = []
    arrived = anyio.Event()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_grpc, "127.0.0.1:0", [hanging_state(arrived)])
        channel = NodeChannel(NodeIdentity("w1", SigningKey.generate()), "t", f"127.0.0.1:{port}")

        async def unary() -> None:
            try:
                await channel.unary(PING, pb.PingRequest(), pb.PingReply)
            except Unavailable as exc:
                failures.append(exc)

        async def stream() -> None:
            try:
                request = pb.WatchAssignmentsRequest(from_revision=1)
                async for _ in channel.stream(WATCH, request, pb.AssignmentEvent):
                    pass
            except Unavailable as exc:
                failures.append(exc)

        async with anyio.create_task_group() as calls:
            calls.start_soon(unary)
            calls.start_soon(stream)
            with anyio.fail_after(10):
                await arrived.wait()  # both calls reach the server before the close
            await channel.aclose()
        tg.cancel_scope.cancel()
    assert len(failures) == 2, failures
    assert all("its channel was closed" in str(exc) for exc in failures), failures


async def test_a_caller_cancelled_by_its_own_scope_stays_cancelled() -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_grpc, "127.0.0.1:0", [hanging_state()])
        channel = NodeChannel(NodeIdentity("w1", SigningKey.generate()), "t", f"127.0.0.1:{port}")
        with anyio.move_on_after(0.3) as scope:
            await channel.unary(PING, pb.PingRequest(), pb.PingReply)
        assert scope.cancelled_caught
        await channel.aclose()
        tg.cancel_scope.cancel()
