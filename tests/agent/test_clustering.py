"""The clustered node: what it advertises to the others, and whom it serves its spans."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest
from nacl.signing import SigningKey

from shoal.agent._clustering import Clustering, advertised_host, with_port
from shoal.cluster import (
    NodeChannel,
    NodeIdentity,
    RemoteTraces,
    new_gossip_key,
    new_join_token,
    serve_grpc,
)
from shoal.interfaces import (
    MAX_TRACE_SPANS,
    Forbidden,
    GossipState,
    InvalidInput,
    Member,
    SystemClock,
    Tag,
    TraceView,
)


def test_a_specific_address_is_advertised_as_it_is() -> None:
    assert advertised_host("198.18.0.7") == "198.18.0.7"


def test_an_unspecified_bind_advertises_what_the_host_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "worker1")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "198.18.1.5")
    assert advertised_host("0.0.0.0") == "198.18.1.5"


@pytest.mark.parametrize("resolved", ["127.0.1.1", None])
def test_an_unspecified_bind_without_a_reachable_name_asks_for_grpc_addr(
    monkeypatch: pytest.MonkeyPatch, resolved: str | None
) -> None:
    def resolve(name: str) -> str:
        if resolved is None:
            raise socket.gaierror("Name or service not known")
        return resolved

    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    monkeypatch.setattr(socket, "gethostbyname", resolve)
    with pytest.raises(InvalidInput, match=r"--grpc-addr HOST:PORT") as raised:
        advertised_host("0.0.0.0")
    assert "'box' resolves to" in raised.value.message


def test_addresses_get_their_default_port() -> None:
    assert with_port("127.0.0.2", 7946, field="--bind") == "127.0.0.2:7946"
    assert with_port("127.0.0.2:8000", 7946, field="--bind") == "127.0.0.2:8000"
    with pytest.raises(InvalidInput, match="--bind 'host:port' is not HOST"):
        with_port("host:port", 7946, field="--bind")


@pytest.mark.anyio
async def test_a_nodes_spans_are_served_to_the_servers_gossip_names_and_to_no_one_else(
    tmp_path: Path,
) -> None:
    token = new_join_token()
    clustering = Clustering(
        NodeIdentity("w1", SigningKey.generate()),
        token,
        new_gossip_key(),
        tmp_path,
        bind="127.0.0.1:0",
    )
    server, worker = (
        NodeIdentity("s1", SigningKey.generate()),
        NodeIdentity("w2", SigningKey.generate()),
    )

    async def members() -> list[Member]:  # what gossip says
        return [
            Member(
                name=node.name,
                address="127.0.0.1:7946",
                state=GossipState.ALIVE,
                tags={Tag.ID: node.node_id, Tag.ROLE: role},
            )
            for node, role in ((server, "server"), (worker, "worker"))
        ]

    clustering._members = members  # type: ignore[method-assign]

    class Buffer:
        def trace(self, trace_id: str, limit: int = MAX_TRACE_SPANS) -> TraceView:
            return TraceView(trace_id=trace_id, node="w1")

    handlers = clustering.handlers(None, None, clock=SystemClock(), traces=Buffer())
    trace_id = "ab" * 16
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_grpc, "127.0.0.1:0", handlers)

        async def ask(identity: NodeIdentity) -> TraceView:
            channel = NodeChannel(identity, token, f"127.0.0.1:{port}")
            async with RemoteTraces(channel) as traces:
                return await traces.trace(trace_id)

        with anyio.fail_after(10):
            assert (await ask(server)).node == "w1"
            with pytest.raises(Forbidden, match="not a server"):
                await ask(worker)  # a member, not a server
            with pytest.raises(Forbidden, match="not a server"):  # the server's key, not its name
                await ask(NodeIdentity("s2", server.key))
        tg.cancel_scope.cancel()
