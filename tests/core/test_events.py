"""Events filed under their object: one object's events are one prefix; pruning reads keys only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shoal.core import ManualClock, ShoalService
from shoal.core._repo import Repository
from shoal.interfaces import Actor, Event, ListResult, ObjectRef
from shoal.state import MemoryStore
from tests.core.support import Cluster, spec

pytestmark = pytest.mark.anyio

ACTOR = Actor(id="tester", via="rest")


class CountingStore(MemoryStore):
    """A MemoryStore that remembers which prefixes were listed."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.listed: list[str] = []

    async def list(self, prefix: str) -> ListResult:
        self.listed.append(prefix)
        return await super().list(prefix)


def ref(kind: str, name: str, namespace: str | None = "default") -> ObjectRef:
    return ObjectRef(kind=kind, name=name, namespace=namespace)


async def test_one_objects_events_are_read_from_its_own_prefix_only() -> None:
    clock = ManualClock()
    async with CountingStore(clock) as store:
        repo = Repository(store, clock)
        for n in range(50):  # noise: other instances' events
            await repo.record(ref("Instance", f"other-{n}"), "Started", "started", ACTOR)
        for reason in ("Scheduled", "Started", "Ready"):
            await repo.record(ref("Instance", "web-1"), reason, reason.lower(), ACTOR)
            clock.advance(1)
        await repo.record(ref("Node", "n1", None), "Registered", "node joined", ACTOR)
        store.listed.clear()

        service = ShoalService(store, clock, ACTOR)
        mine = await service.list_events(kind="Instance", name="web-1", namespace="default")
        assert [e.reason for e in mine] == ["Scheduled", "Started", "Ready"]  # oldest first
        assert store.listed == ["/events/instance/default/web-1/"]
        nodes = await service.list_events(kind="node", name="n1")
        assert [e.reason for e in nodes] == ["Registered"]
        assert store.listed[-1] == "/events/node/-/n1/"
        # Without a namespace, a namespaced kind's prefix is read and filtered by name.
        anywhere = await service.list_events(kind="Instance", name="web-1")
        assert len(anywhere) == 3 and store.listed[-1] == "/events/instance/"
        everything = await service.list_events(limit=1000)
        assert len(everything) == 54
        assert [e.id for e in everything] == sorted(e.id for e in everything)


async def test_explain_reads_the_instances_and_its_workloads_events_only(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=1)])
    await cluster.settle()
    (inst,) = await cluster.service.list_instances()
    events = (await cluster.service.explain(inst.name)).events
    kinds = {(e.object.kind, e.object.name) for e in events}
    assert kinds <= {("Instance", inst.name), ("Workload", "web")}
    assert ("Instance", inst.name) in kinds and ("Workload", "web") in kinds
    assert [e.id for e in events] == sorted(e.id for e in events)


async def test_pruning_keeps_the_newest_and_drops_the_old_by_their_keys() -> None:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        repo = Repository(store, clock)
        for n in range(300):
            await repo.record(ref("Instance", f"i{n % 7}"), "Tick", str(n), ACTOR)
            clock.advance(60)  # one a minute: 300 minutes of history
        # An event of the layout before events were filed by object.
        old = repo.new_event(ref("Workload", "legacy"), "Old", "old layout", ACTOR)
        await store.put(f"/events/{old.id}", old.model_dump_json().encode())

        assert await repo.prune_events(keep=1000) == 0
        deleted = await repo.prune_events(keep=250)
        assert deleted == 51  # the 51 oldest of 301
        left = await repo.list_events()
        assert len(left) == 250 and left[0].message == "51"
        assert left[-1].reason == "Old"  # the old layout is listed and ordered with the rest
        # By age: everything older than an hour goes, however few there are.
        assert await repo.prune_events(keep=1000, max_age=timedelta(hours=1).total_seconds()) > 0
        recent = await repo.list_events()
        assert recent and all(
            (clock.now() - e.time) <= timedelta(hours=1, minutes=1) for e in recent
        )


def test_an_event_key_names_its_object() -> None:
    event = Event(
        id="00000000000000001-000000001-abcd",
        time=ManualClock().now(),
        object=ref("Instance", "web-1"),
        reason="Started",
        message="m",
        actor=ACTOR,
    )
    from shoal.core._repo import event_store_key

    assert event_store_key(event) == "/events/instance/default/web-1/" + event.id
