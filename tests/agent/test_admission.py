"""A server checks, before it serves, that it keeps the cluster's state and holds its token."""

from __future__ import annotations

import anyio
import pytest

from shoal.agent._admission import CLUSTER_ID_KEY, admit_server, cluster_id
from shoal.cluster import CLUSTER_ID_TAG
from shoal.interfaces import (
    Conflict,
    GossipState,
    Member,
    MemberEventKind,
    Unauthenticated,
    Unavailable,
)
from shoal.state import MemoryStore
from tests.cluster.test_grpc_state import TOKEN, identity, serving
from tests.core.support import FakeCluster, FlakyStore
from tests.ports import free_port

pytestmark = pytest.mark.anyio

ME = identity("s1")
OTHER_ID = "0123456789abcdef"


def server(name: str, state: GossipState = GossipState.ALIVE, **tags: str) -> Member:
    """A gossip member with role server (unless ``tags`` say otherwise)."""
    return Member(
        name=name, address="198.18.0.9:7946", state=state, tags={"role": "server", **tags}
    )


def me() -> Member:
    return server("s1", id=ME.node_id)


async def admit(store: MemoryStore | FlakyStore, cluster: FakeCluster, token: str = TOKEN) -> None:
    await admit_server(store, cluster, ME, token, recheck=0)


async def test_the_first_server_creates_the_cluster_id_and_the_others_read_it() -> None:
    async with MemoryStore() as store:
        ids: list[tuple[str, bool]] = []

        async def read() -> None:
            ids.append(await cluster_id(store))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(read)
        assert len({cid for cid, _ in ids}) == 1
        assert sorted(created for _, created in ids) == [False] * 4 + [True]
        stored = await store.get(CLUSTER_ID_KEY)
        assert stored is not None
        assert stored.value.decode() == ids[0][0]
        assert await cluster_id(store) == (ids[0][0], False)


async def test_a_server_publishes_its_cluster_id_and_joins_servers_that_share_it() -> None:
    async with MemoryStore() as store:
        own, _ = await cluster_id(store)
        cluster = FakeCluster(
            me(),
            server("s2", cid=own),
            server("s3"),  # still starting: no id published yet
            server("gone", GossipState.FAILED, cid="another"),
            server("bye", cid="another", bye="1"),  # leaving: not asked
            server("w1", role="worker", cid="x"),
        )
        await admit(store, cluster)
        assert (await cluster.local_node()).tags[CLUSTER_ID_TAG] == own


async def test_a_server_with_another_cluster_state_is_refused_naming_the_others() -> None:
    async with MemoryStore() as store:
        cluster = FakeCluster(me(), server("s2", cid=OTHER_ID))
        refused = rf"server\(s\) s2 \(cluster id {OTHER_ID}\) keep another cluster state"
        with pytest.raises(Conflict, match=refused) as err:
            await admit(store, cluster)
        assert "whose store was created just now" in str(err.value)
        assert "--state etcd" in str(err.value)
        assert err.value.details["servers"] == ["s2"]


async def test_a_conflict_that_leaves_within_the_recheck_does_not_stand() -> None:
    async with MemoryStore() as store:
        cluster = FakeCluster(me(), server("stray", cid=OTHER_ID))
        events = cluster.events()

        async def stray_leaves() -> None:
            async for event in events:
                if event.kind == MemberEventKind.UPDATED:  # s1 published its id
                    cluster.set_state("stray", GossipState.LEFT)
                    return

        async with cluster, anyio.create_task_group() as tg:
            tg.start_soon(stray_leaves)
            await admit_server(store, cluster, ME, TOKEN, recheck=0.01)


async def test_a_member_with_this_nodes_id_is_itself_whatever_its_name() -> None:
    async with MemoryStore() as store:
        cluster = FakeCluster(me(), server("renamed", id=ME.node_id, cid=OTHER_ID))
        await admit(store, cluster)


async def test_an_unreachable_store_stops_the_admission() -> None:
    async with MemoryStore() as inner:
        store = FlakyStore(inner)
        cluster = FakeCluster(me())
        store.go_down()
        with pytest.raises(Unavailable, match="injected outage"):
            await admit(store, cluster)
        assert CLUSTER_ID_TAG not in (await cluster.local_node()).tags


async def test_a_server_whose_token_the_cluster_refuses_is_refused() -> None:
    async with MemoryStore() as store, serving(store) as address:
        cluster = FakeCluster(me(), server("s2", grpc=address))
        with pytest.raises(Unauthenticated, match="server s2 of the cluster refuses this server"):
            await admit(store, cluster, "another cluster's token")
        assert CLUSTER_ID_TAG not in (await cluster.local_node()).tags
        await admit(store, cluster)


async def test_servers_that_cannot_be_reached_prove_nothing_and_one_acceptance_is_enough() -> None:
    async with MemoryStore() as store, serving(store) as good:
        async with serving(store, "yet another token") as rogue:
            nobody = f"127.0.0.1:{free_port()}"
            cluster = FakeCluster(me(), server("s2", grpc=nobody), server("s3", grpc=rogue))
            with pytest.raises(Unauthenticated, match="server s3"):
                await admit(store, cluster)
            cluster.set(server("s4", grpc=good), FakeCluster.kind(GossipState.ALIVE))
            await admit(store, cluster)
