"""A worker refused by one server tries another; refused by all, it stops."""

from __future__ import annotations

import pytest

from shoal.cluster import RemoteNodeState
from shoal.interfaces import Unauthenticated, Unavailable
from shoal.state import MemoryStore
from tests.cluster.test_grpc_state import TOKEN, identity, known, node_record, serving

pytestmark = pytest.mark.anyio


async def test_a_server_with_another_token_is_skipped_for_one_that_accepts() -> None:
    async with MemoryStore() as store, serving(store, "another cluster's token") as rogue:
        async with serving(store) as good:
            ident = identity("w1")
            async with RemoteNodeState(ident, TOKEN, known(rogue, good)) as remote:
                with pytest.raises(Unavailable, match=f"server {rogue} refused this node"):
                    await remote.register(node_record(ident))
                assert await remote.register(node_record(ident))
                assert remote.server == good


async def test_a_node_refused_by_every_server_gets_the_refusal() -> None:
    async with MemoryStore() as store, serving(store) as first, serving(store) as second:
        ident = identity("w1")
        async with RemoteNodeState(ident, "a wrong token", known(first, second)) as remote:
            with pytest.raises(Unavailable, match="trying another server"):
                await remote.register(node_record(ident))
            with pytest.raises(Unauthenticated, match="presented a wrong join token"):
                await remote.register(node_record(ident))


async def test_a_stream_refused_by_one_server_moves_on_like_a_call() -> None:
    async with MemoryStore() as store, serving(store, "another cluster's token") as rogue:
        async with serving(store) as good:
            ident = identity("w1")
            async with RemoteNodeState(ident, TOKEN, known(rogue, good)) as remote:
                with pytest.raises(Unavailable, match=f"server {rogue} refused this node"):
                    async for _ in remote.watch_assignments(1):
                        pass
                assert await remote.register(node_record(ident))
                assert remote.server == good
