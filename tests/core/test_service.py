"""ShoalService's view of gossip membership: list_members."""

import pytest

from shoal.cluster import StaticCluster
from shoal.core import ManualClock, ShoalService
from shoal.interfaces import Actor, GossipState, InvalidInput, Member, Unavailable
from shoal.kube import parse_documents
from shoal.state import MemoryStore
from tests.core.support import Cluster, FakeCluster, spec

pytestmark = pytest.mark.anyio


def member(name: str, state: GossipState = GossipState.ALIVE, **tags: str) -> Member:
    return Member(name=name, address=f"198.18.0.{len(name)}:7946", state=state, tags=tags)


async def test_list_members_returns_the_gossip_view_sorted_by_name(cluster: Cluster) -> None:
    await cluster.add_node("worker1")
    # "refused" gossips but never registered: only the members list shows it.
    gossip = FakeCluster(
        member("worker1", role="worker", id="b" * 64),
        member("server", role="server", id="a" * 64, grpc="198.18.0.6:7947"),
        member("refused", GossipState.FAILED, role="worker"),
    )
    service = ShoalService(cluster.store, cluster.clock, members=gossip.members)

    members = await service.list_members()

    assert [(m.name, m.state) for m in members] == [
        ("refused", GossipState.FAILED),
        ("server", GossipState.ALIVE),
        ("worker1", GossipState.ALIVE),
    ]
    assert members[1].tags == {"role": "server", "id": "a" * 64, "grpc": "198.18.0.6:7947"}
    assert [n.name for n in await service.list_nodes()] == ["worker1"]


async def test_a_node_alone_lists_just_itself() -> None:
    clock = ManualClock()
    async with (
        MemoryStore(clock=clock) as store,
        StaticCluster("n1", "127.0.0.1:7946", tags={"role": "both"}) as static,
    ):
        service = ShoalService(store, clock, members=static.members)
        assert await service.list_members() == [
            Member(
                name="n1", address="127.0.0.1:7946", state=GossipState.ALIVE, tags={"role": "both"}
            )
        ]
        await static.leave()
        (left,) = await service.list_members()
    assert left.state == GossipState.LEFT


async def test_the_members_provider_survives_a_change_of_actor() -> None:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store, StaticCluster("n1") as static:
        service = ShoalService(store, clock, members=static.members)
        as_caller = service.with_actor(Actor(id="viewer@test", via="rest"))
        assert [m.name for m in await as_caller.list_members()] == ["n1"]


async def test_without_a_cluster_manager_list_members_is_unavailable(cluster: Cluster) -> None:
    with pytest.raises(Unavailable, match="this service has no cluster manager"):
        await cluster.service.list_members()
    with pytest.raises(Unavailable):
        await cluster.service.with_actor(Actor(id="x", via="rest")).list_members()


@pytest.mark.parametrize(
    ("mode", "extra", "says"),
    [
        ("daemon", {}, "is a daemon: it runs one instance on each node"),
        ("job", {"restart_policy": "Never"}, "is a job: job.completions and job.parallelism"),
    ],
)
async def test_scaling_a_daemon_or_a_job_is_refused_with_what_counts_instead(
    mode: str, extra: dict[str, object], says: str
) -> None:
    async with MemoryStore() as store:
        service = ShoalService(store, ManualClock())
        await service.apply([spec("agent", 1, "busybox", mode=mode, **extra)])
        before = await service.get_workload("agent")
        with pytest.raises(InvalidInput, match=says) as refused:
            await service.scale("agent", 3)
        assert refused.value.details.get("field") == "replicas"
        after = await service.get_workload("agent")
        assert after.spec.replicas == 1 and after.revision == before.revision


async def test_a_workload_applied_as_another_kind_is_replaced_with_a_warning(
    cluster: Cluster,
) -> None:
    """Kubernetes keeps a Deployment and a Workload of one name apart; Shoal cannot."""
    await cluster.service.apply([spec("hello", replicas=2)])
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello"},
        "spec": {
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    }
    (translated,) = parse_documents([deployment], "hello.yaml").objects
    planned = await cluster.service.apply([translated], dry_run=True)
    expected = (
        "Deployment default/hello replaces the Workload of that name: Shoal keeps one "
        "workload per namespace and name, whatever its kind"
    )
    assert expected in planned.warnings
    assert expected in (await cluster.service.apply([translated])).warnings
    again = await cluster.service.apply([translated])
    assert not any("replaces" in w for w in again.warnings)  # a Deployment now: nothing to say
