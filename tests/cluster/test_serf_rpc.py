"""SerfRpcClient: user events, queries and streams against real agents; framing against a fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
from anyio.abc import SocketAttribute, SocketStream

from shoal.cluster import QueryEventRecord, QueryRecord, SerfRpcClient, UserEventRecord
from shoal.cluster.serf._serf_wire import tidy_error
from shoal.interfaces import Forbidden, Unavailable
from tests.cluster.serf_support import WAIT, SerfNodes
from tests.ports import free_tcp_udp_port

pytestmark = pytest.mark.anyio


async def test_a_user_event_reaches_a_stream_that_filters_for_it(serf_root: Path) -> None:
    nodes = SerfNodes(serf_root)
    async with nodes.cluster("node-a", "node-b"):
        async with (
            SerfRpcClient.connect(nodes.rpc_addrs["node-a"], auth_key=nodes.rpc_auth) as a,
            SerfRpcClient.connect(nodes.rpc_addrs["node-b"], auth_key=nodes.rpc_auth) as b,
            b.stream("user:deploy") as events,
        ):
            await a.user_event("ignored", b"x", coalesce=False)
            await a.user_event("deploy", b"\x00v1\xff", coalesce=False)
            with anyio.fail_after(WAIT):
                record = await anext(events)
    assert isinstance(record, UserEventRecord)
    assert (record.name, record.payload, record.coalesce) == ("deploy", b"\x00v1\xff", False)


async def test_a_query_collects_acks_and_the_responses_of_other_members(
    serf_root: Path,
) -> None:
    nodes = SerfNodes(serf_root)
    async with nodes.cluster("node-a", "node-b"):
        async with (
            SerfRpcClient.connect(nodes.rpc_addrs["node-a"], auth_key=nodes.rpc_auth) as a,
            SerfRpcClient.connect(nodes.rpc_addrs["node-b"], auth_key=nodes.rpc_auth) as b,
            b.stream("query:load") as queries,
            anyio.create_task_group() as group,
        ):

            async def answer() -> None:
                async for query in queries:
                    assert isinstance(query, QueryEventRecord)
                    await b.respond(query.id, b"load of " + query.payload)

            group.start_soon(answer)
            with anyio.fail_after(WAIT):
                async with a.query("load", b"1m", request_ack=True, timeout=1.0) as records:
                    received = [record async for record in records]
            group.cancel_scope.cancel()
    assert QueryRecord("response", "node-b", b"load of 1m") in received
    assert {r.source for r in received if r.type == "ack"} == {"node-a", "node-b"}


async def test_a_stopped_stream_leaves_the_connection_usable(serf_root: Path) -> None:
    nodes = SerfNodes(serf_root)
    async with (
        nodes.cluster("node-a"),
        SerfRpcClient.connect(nodes.rpc_addrs["node-a"], auth_key=nodes.rpc_auth) as client,
    ):
        async with client.stream("user") as events:
            await client.user_event("first", coalesce=False)
            with anyio.fail_after(WAIT):
                assert isinstance(await anext(events), UserEventRecord)
        for index in range(5):  # records the agent may still send are read and dropped
            await client.user_event(f"late-{index}", coalesce=False)
        assert [m.name for m in await client.members()] == ["node-a"]
        assert "agent" in await client.stats()


async def test_an_unreachable_agent_is_unavailable() -> None:
    address = f"127.0.0.1:{free_tcp_udp_port()}"
    with pytest.raises(Unavailable, match=f"cannot reach the serf agent's RPC at {address}"):
        async with SerfRpcClient.connect(address, auth_key="x"):
            pass


Handler = Callable[[dict[str, Any], Callable[..., Awaitable[None]]], Awaitable[None]]


@asynccontextmanager
async def fake_agent(handle: Handler) -> AsyncIterator[str]:
    """Serve one RPC connection: answer the handshake, pass other requests to ``handle``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def serve(stream: SocketStream) -> None:
        unpacker = msgpack.Unpacker(raw=False)

        async def reply(*objects: Any) -> None:
            await stream.send(b"".join(msgpack.packb(obj) for obj in objects))

        async with stream:
            async for chunk in stream:
                unpacker.feed(chunk)
                for header in unpacker:
                    if header["Command"] == "handshake":
                        next(unpacker)
                        await reply({"Seq": header["Seq"], "Error": ""})
                    else:
                        await handle(header, reply)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        yield f"127.0.0.1:{port}"
        group.cancel_scope.cancel()


async def test_a_bare_error_header_where_a_body_was_due_does_not_hang_the_reader() -> None:
    async def handle(header: dict[str, Any], reply: Callable[..., Awaitable[None]]) -> None:
        await reply({"Seq": header["Seq"], "Error": "Authentication required"})

    async with fake_agent(handle) as address, SerfRpcClient.connect(address) as client:
        with anyio.fail_after(WAIT), pytest.raises(Forbidden, match="needs an RPC auth key"):
            await client.members()


async def test_records_of_an_unknown_sequence_are_skipped() -> None:
    member = {"Name": "n1", "Addr": bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 7]), "Port": 7946}

    async def handle(header: dict[str, Any], reply: Callable[..., Awaitable[None]]) -> None:
        late = {"Event": "user", "Name": "late", "Payload": b"", "LTime": 1}
        await reply({"Seq": 999, "Error": ""}, late, {"Seq": 998, "Error": ""})
        body = {"Members": [{**member, "Tags": {"a": "b"}, "Status": "alive"}]}
        await reply({"Seq": header["Seq"], "Error": ""}, body)

    async with fake_agent(handle) as address, SerfRpcClient.connect(address) as client:
        with anyio.fail_after(WAIT):
            (found,) = await client.members()
    assert (found.name, found.address, found.tags, found.status) == (
        "n1",
        "10.0.0.7:7946",
        {"a": "b"},
        "alive",
    )


def test_go_multi_errors_are_flattened() -> None:
    text = "2 errors occurred:\n\t* Failed to join a: refused\n\t* Failed to join b: EOF\n\n"
    assert tidy_error(text) == "Failed to join a: refused; Failed to join b: EOF"
