"""A server checks, before it serves, that it keeps the cluster's state and holds its token."""

from __future__ import annotations

import anyio
import pytest

from shoal.cluster import CLUSTER_ID_TAG
from shoal.core._admission import CLUSTER_ID_KEY, admit_server, check_cluster_id, cluster_id
from shoal.interfaces import Conflict, GossipState, Member, Unauthenticated
from shoal.state import MemoryStore
from tests.cluster.test_grpc_state import TOKEN, identity, serving
from tests.core.support import FakeCluster, FlakyStore
from tests.ports import free_port

pytestmark = pytest.mark.anyio

ME = identity("s1")


def server(name: str, state: GossipState = GossipState.ALIVE, **tags: str) -> Member:
    """A gossip member with role server (unless ``tags`` say otherwise)."""
    return Member(
        name=name, address="198.18.0.9:7946", state=state, tags={"role": "server", **tags}
    )


async def test_the_first_server_creates_the_cluster_id_and_the_others_read_it() -> None:
    async with MemoryStore() as store:
        ids: list[str] = []

        async def read() -> None:
            ids.append(await cluster_id(store))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(read)
        assert len(set(ids)) == 1
        stored = await store.get(CLUSTER_ID_KEY)
        assert stored is not None
        assert stored.value.decode() == ids[0] == await cluster_id(store)


async def test_a_server_publishes_its_cluster_id_and_joins_servers_that_share_it() -> None:
    async with MemoryStore() as store:
        own = await cluster_id(store)
        cluster = FakeCluster(
            server("s1"),
            server("s2", cid=own),
            server("s3"),  # still starting: no id published yet
            server("gone", GossipState.FAILED, cid="another"),
            server("w1", role="worker", cid="x"),
        )
        assert await admit_server(store, cluster, ME, TOKEN) is True
        assert (await cluster.local_node()).tags[CLUSTER_ID_TAG] == own


async def test_a_server_with_another_cluster_state_is_refused_naming_the_others() -> None:
    async with MemoryStore() as store:
        cluster = FakeCluster(server("s1"), server("s2", cid="0123456789abcdef"))
        with pytest.raises(Conflict, match=r"server\(s\) s2 of the cluster keep another") as err:
            await admit_server(store, cluster, ME, TOKEN)
        assert "--state etcd" in str(err.value)
        assert err.value.details["servers"] == ["s2"]


async def test_with_the_store_down_the_id_is_checked_before_the_server_leads() -> None:
    async with MemoryStore() as inner:
        store = FlakyStore(inner)
        cluster = FakeCluster(server("s1"), server("s2", cid="0123456789abcdef"))
        store.go_down()
        assert await admit_server(store, cluster, ME, TOKEN) is False
        assert CLUSTER_ID_TAG not in (await cluster.local_node()).tags
        store.come_back()
        with pytest.raises(Conflict, match="s2"):
            await check_cluster_id(store, cluster, "s1")


async def test_a_server_whose_token_the_cluster_refuses_is_refused() -> None:
    async with MemoryStore() as store, serving(store) as address:
        cluster = FakeCluster(server("s1"), server("s2", grpc=address))
        with pytest.raises(Unauthenticated, match="server s2 of the cluster refuses this server"):
            await admit_server(store, cluster, ME, "another cluster's token")
        assert await admit_server(store, cluster, ME, TOKEN) is True


async def test_servers_that_cannot_be_reached_prove_nothing_and_one_acceptance_is_enough() -> None:
    async with MemoryStore() as store, serving(store) as good:
        async with serving(store, "yet another token") as rogue:
            nobody = f"127.0.0.1:{free_port()}"
            cluster = FakeCluster(server("s1"), server("s2", grpc=nobody), server("s3", grpc=rogue))
            with pytest.raises(Unauthenticated, match="server s3"):
                await admit_server(store, cluster, ME, TOKEN)
            cluster.set(server("s4", grpc=good), FakeCluster.kind(GossipState.ALIVE))
            assert await admit_server(store, cluster, ME, TOKEN) is True
