"""The State service over real gRPC: a StateGateway on a server, a RemoteStore on a worker.

Every test starts ``serve_grpc`` on a loopback port with a StateGateway over
a real store (memory and SQLite) and talks to it as a worker would, through a
RemoteStore signed with the worker's own key. The policy's refusals are
checked one by one; the worker's real node loop runs over a RemoteStore.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from nacl.signing import SigningKey

from shoal.cluster import (
    Assignments,
    Caller,
    CallVerifier,
    NodeIdentity,
    RemoteStore,
    StateGateway,
    serve_grpc,
)
from shoal.cluster.grpc._worker_scope import WorkerScope, Write
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    ManualClock,
    NodeLoop,
    ShoalService,
    SystemClock,
)
from shoal.interfaces import (
    INSTANCE_STATUS_FIELDS,
    Actor,
    Capacity,
    Container,
    Event,
    EventKind,
    ExecResult,
    Forbidden,
    GossipState,
    Instance,
    InstanceState,
    InvalidInput,
    KeyValue,
    Node,
    NodeRole,
    ObjectRef,
    PodTemplate,
    PutOp,
    RestartPolicy,
    RevisionConflict,
    StateStore,
    Unauthenticated,
    Unavailable,
    WatchEvent,
    WorkloadSpec,
    event_key,
)
from shoal.runtime import MockRuntime

pytestmark = pytest.mark.anyio

TOKEN = "the-join-token"
START = datetime(2026, 1, 1, tzinfo=UTC)
WAIT = 10.0


@asynccontextmanager
async def serving(
    store: StateStore,
    token: str = TOKEN,
    *,
    events_per_minute: int = 600,
    monotonic: Callable[[], float] = time.monotonic,
    streams: bool = True,
) -> AsyncIterator[str]:
    """Serve a StateGateway over ``store`` on a loopback port; stop it on exit.

    With ``streams`` (as a server runs it), workers' instances come from
    per-node :class:`Assignments`; without, from the store, filtered per call.
    """
    assignments = Assignments(store, SystemClock()) if streams else None
    gateway = StateGateway(
        store,
        CallVerifier(token),
        events_per_minute=events_per_minute,
        monotonic=monotonic,
        assignments=assignments,
    )
    async with anyio.create_task_group() as tg:
        if assignments is not None:
            await tg.start(assignments.run)
        # grace 0: stopping ends open watches at once, as a dying server would.
        port = await tg.start(
            functools.partial(serve_grpc, grace=0), "127.0.0.1:0", [gateway.handler()]
        )
        yield f"127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def known(*addresses: str) -> Callable[[], Awaitable[Sequence[str]]]:
    async def servers() -> Sequence[str]:
        return addresses

    return servers


def using(remote: RemoteStore) -> str | None:
    """The server ``remote`` talks to now (a call, so that mypy does not pin it)."""
    return remote.server


def identity(name: str) -> NodeIdentity:
    return NodeIdentity(name, SigningKey.generate())


def node_record(ident: NodeIdentity) -> Node:
    capacity = Capacity.model_validate({"cpu": "4", "memory": "8Gi"})
    return Node(
        name=ident.name,
        node_id=ident.node_id,
        capacity=capacity,
        allocatable=capacity,
        runtime="mock",
    )


@asynccontextmanager
async def worker(name: str, *addresses: str) -> AsyncIterator[RemoteStore]:
    """A RemoteStore of a new worker that has registered its node record."""
    ident = identity(name)
    async with RemoteStore(ident, TOKEN, known(*addresses)) as remote:
        await remote.put(f"/nodes/{name}", dump(node_record(ident)), expected_revision=0)
        yield remote


def instance(name: str, node: str | None, *, uid: str | None = None) -> Instance:
    return Instance(
        name=name,
        namespace="default",
        uid=uid or f"uid-{name}",
        workload="web",
        workload_uid="wuid-1",
        generation=1,
        template=PodTemplate(containers=[Container(name="main", image="busybox")]),
        restart_policy=RestartPolicy.ALWAYS,
        node=node,
        state=InstanceState.SCHEDULED,
        created_at=START,
    )


def ikey(name: str) -> str:
    return f"/instances/default/{name}"


def dump(model: Instance | Node | Event) -> bytes:
    return model.model_dump_json().encode()


def event(actor: str, event_id: str = "1") -> Event:
    return Event(
        id=event_id,
        time=START,
        object=ObjectRef(kind="Node", name=actor),
        reason="Tested",
        message="a test event",
        actor=Actor(id=actor, via="node-loop"),
    )


def filed(actor: str, event_id: str = "1") -> str:
    """The key an event of ``actor`` is filed under: its object's prefix, then its id."""
    return event_key("Node", None, actor, event_id)


async def place(store: StateStore, inst: Instance) -> int:
    """Write an instance record as the control loop would; return its revision."""
    return await store.put(ikey(inst.name), dump(inst))


async def until(store: StateStore, prefix: str, done: Callable[[], Awaitable[bool]]) -> None:
    """Wait (bounded) until ``done()``, checking again after every change under ``prefix``."""
    with anyio.fail_after(WAIT):
        start = await store.revision()
        if await done():
            return
        async for _ in store.watch(prefix, start + 1):
            if await done():
                return


async def reasons(store: StateStore) -> list[str]:
    """Return the reasons of the stored events, oldest first."""
    return [
        Event.model_validate_json(kv.value).reason for kv in (await store.list("/events/")).items
    ]


# --- registration and the node loop --------------------------------------------


async def test_a_new_node_registers_then_works_in_its_scope(store: StateStore) -> None:
    ident = identity("w1")
    async with serving(store) as address, RemoteStore(ident, TOKEN, known(address)) as remote:
        assert await remote.revision() == 0  # allowed before registering
        with pytest.raises(Unauthenticated, match="unknown node key: node 'w1' has not registered"):
            await remote.list("/instances/")
        assert await remote.get("/nodes/w1") is None
        revision = await remote.put("/nodes/w1", dump(node_record(ident)), expected_revision=0)
        stored = await store.get("/nodes/w1")
        assert stored is not None and stored.mod_revision == revision
        assert Node.model_validate_json(stored.value).node_id == ident.node_id
        mine = await remote.get("/nodes/w1")
        assert mine is not None and mine.value == stored.value
        await place(store, instance("web-1", "w1"))
        listed = await remote.list("/instances/")
        assert [kv.key for kv in listed.items] == [ikey("web-1")]
        assert using(remote) == address


async def test_a_worker_node_loop_runs_its_instances_through_a_server(store: StateStore) -> None:
    ident = identity("w1")
    clock = ManualClock()
    runtime = MockRuntime(clock)
    await place(store, instance("web-1", "w1"))
    await place(store, instance("web-2", "w2"))
    async with (
        serving(store) as address,
        RemoteStore(ident, TOKEN, known(address)) as remote,
        anyio.create_task_group() as tg,
    ):
        # The clock never moves: no resync, heartbeat or probe tick, so only the
        # watch through the server wakes the loop.
        loop = NodeLoop(node_record(ident), remote, runtime, clock, resync=3600)
        await tg.start(loop.run)

        async def running() -> bool:
            kv = await store.get(ikey("web-1"))
            state = None if kv is None else Instance.model_validate_json(kv.value).state
            return state == InstanceState.RUNNING

        await until(store, ikey("web-1"), running)
        assert [pod.name for pod in await runtime.list()] == ["web-1"]

        # The control loop marks it for deletion: the node stops it and deletes the record.
        current = await store.get(ikey("web-1"))
        assert current is not None
        started = Instance.model_validate_json(current.value)
        deleting = started.model_copy(update={"deleting": True})
        await store.put(ikey("web-1"), dump(deleting), expected_revision=current.mod_revision)

        async def removed() -> bool:
            return "Removed" in await reasons(store)

        await until(store, "/events/", removed)
        assert await store.get(ikey("web-1")) is None
        assert list(await runtime.list()) == []
        tg.cancel_scope.cancel()

    other = await store.get(ikey("web-2"))
    assert other is not None
    assert Instance.model_validate_json(other.value).state == InstanceState.SCHEDULED
    stored = (await store.list("/events/")).items
    events = sorted((Event.model_validate_json(kv.value) for kv in stored), key=lambda e: e.id)
    assert [e.reason for e in events] == ["Registered", "Started", "Removed"]
    assert {e.actor.id for e in events} == {"w1"}


async def test_every_report_of_the_real_node_loop_passes_the_policy(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The control loop on the server's store, the node loop through it, pass by pass.

    The instance starts, turns ready, fails its liveness probe, is restarted
    after a backoff, crashes and is deleted: every status the node loop reports
    on the way must be written, not refused.
    """
    clock = ManualClock()
    runtime = MockRuntime(clock)
    control = ControlLoop(store, DefaultScheduler(), clock)
    service = ShoalService(store, clock, Actor(id="tester", via="rest"))
    ident = identity("w1")
    check = {"exec": {"command": ["check"]}, "period_seconds": 1, "failure_threshold": 1}
    container = {"name": "main", "image": "busybox", "readiness_probe": check}
    container["liveness_probe"] = check
    web = WorkloadSpec.model_validate(
        {"name": "web", "replicas": 1, "template": {"containers": [container]}}
    )
    async with serving(store) as address, RemoteStore(ident, TOKEN, known(address)) as remote:
        loop = NodeLoop(node_record(ident), remote, runtime, clock)

        async def settle() -> Instance | None:
            for _ in range(30):
                before = await store.revision()
                await control.reconcile_once()
                await loop.reconcile_once()
                if await store.revision() == before:
                    found = await service.list_instances()
                    return found[0] if found else None
            raise AssertionError("the cluster did not settle in 30 rounds")

        await loop.register()
        await service.apply([web])
        running = await settle()
        assert running is not None
        assert (running.state, running.ready, running.node) == (InstanceState.RUNNING, False, "w1")
        await loop.probe_once()  # both probes pass: ready
        assert (await service.get_instance(running.name)).ready

        runtime.set_exec_result("main", ExecResult(exit_code=1, stdout="sick"))
        clock.advance(1)
        await loop.probe_once()  # the liveness probe fails: killed, reported failed
        runtime.set_exec_result("main", None)
        backing_off = await settle()
        assert backing_off is not None and backing_off.not_before is not None
        clock.advance(1)
        restarted = await settle()
        assert restarted is not None
        assert (restarted.state, restarted.restart_count, restarted.not_before) == (
            InstanceState.RUNNING,
            1,
            None,
        )

        runtime.kill(restarted.uid, "main", exit_code=1)
        crashed = await settle()
        assert crashed is not None
        assert (crashed.reason, crashed.exit_code) == ("CrashLoopBackOff", 1)
        await service.delete_workload("web")
        assert await settle() is None
        assert list(await runtime.list()) == []

    stored = (await store.list("/events/")).items
    events = sorted((Event.model_validate_json(kv.value) for kv in stored), key=lambda e: e.id)
    assert [e.reason for e in events if e.actor.id == "w1"] == [
        "Registered",
        "Started",
        "Ready",
        "Unhealthy",
        "Started",
        "Error",
        "Removed",
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("path", ["direct", "through a server"])
async def test_re_registering_keeps_the_operators_flags_and_the_gossip_state(
    store: StateStore, path: str
) -> None:
    ident = identity("w1")
    clock = ManualClock()
    async with serving(store) as address, RemoteStore(ident, TOKEN, known(address)) as remote:
        loop_store: StateStore = store if path == "direct" else remote
        loop = NodeLoop(node_record(ident), loop_store, MockRuntime(clock), clock)
        await loop.register()
        kv = await store.get("/nodes/w1")
        assert kv is not None
        # The operator cordons and drains the node; the membership sync finds it suspect.
        decided = Node.model_validate_json(kv.value).model_copy(
            update={"cordoned": True, "draining": True, "state": GossipState.SUSPECT}
        )
        await store.put("/nodes/w1", dump(decided), expected_revision=kv.mod_revision)
        clock.advance(30)
        await loop.register()  # the node process restarted
    again = await store.get("/nodes/w1")
    assert again is not None
    node = Node.model_validate_json(again.value)
    assert (node.cordoned, node.draining, node.state) == (True, True, GossipState.SUSPECT)
    assert node.heartbeat_at == clock.now()


@pytest.mark.parametrize("streams", [True, False], ids=["assignments", "filtered-store"])
async def test_watch_forwards_the_callers_instances_and_deletes_key_only(
    store: StateStore, streams: bool
) -> None:
    async with serving(store, streams=streams) as address, worker("w1", address) as remote:
        start = await remote.revision() + 1
        await place(store, instance("theirs", "w2"))
        await place(store, instance("mine", "w1"))
        await store.delete(ikey("theirs"))
        gone = await store.delete(ikey("mine"))
        seen: list[WatchEvent] = []
        with anyio.fail_after(WAIT):
            async for change in remote.watch("/instances/", start):
                seen.append(change)
                if change.kind == EventKind.DELETE:
                    break
    assert [(e.kind, e.kv.key) for e in seen] == [
        (EventKind.PUT, ikey("mine")),
        (EventKind.DELETE, ikey("mine")),
    ]
    assert Instance.model_validate_json(seen[0].kv.value).node == "w1"
    assert (seen[1].kv.value, seen[1].revision) == (b"", gone)


async def test_a_reconnecting_worker_resumes_its_assignments_without_gaps_or_repeats(
    store: StateStore,
) -> None:
    """The worker's connection goes away, changes happen meanwhile, a new one resumes."""
    ident = identity("w1")
    async with serving(store) as address:
        async with RemoteStore(ident, TOKEN, known(address)) as remote:
            await remote.put("/nodes/w1", dump(node_record(ident)), expected_revision=0)
            listed = await remote.list("/instances/")
            await place(store, instance("a", "w1"))
            await place(store, instance("theirs", "w2"))
            await place(store, instance("b", "w1"))
            with anyio.fail_after(WAIT):
                async for change in remote.watch("/instances/", listed.revision + 1):
                    first = change
                    break  # the connection goes away after one change
        await store.delete(ikey("a"))
        await place(store, instance("c", "w1"))
        rest: list[WatchEvent] = []
        async with RemoteStore(ident, TOKEN, known(address)) as back:
            with anyio.fail_after(WAIT):
                async for change in back.watch("/instances/", first.revision + 1):
                    rest.append(change)
                    if len(rest) == 3:
                        break
    assert first.kv.key == ikey("a")
    assert [(e.kind, e.kv.key) for e in rest] == [
        (EventKind.PUT, ikey("b")),
        (EventKind.DELETE, ikey("a")),
        (EventKind.PUT, ikey("c")),
    ]


def test_the_watch_policy_drops_other_nodes_changes_and_hides_moved_instances() -> None:
    scope = WorkerScope(Caller("w1", "id-1", b""), registered_id="id-1")
    mine, theirs = dump(instance("a", "w1")), dump(instance("a", "w2"))

    def change(kind: EventKind, value: bytes, prev: bytes | None) -> WatchEvent | None:
        return scope.forward(WatchEvent(kind, KeyValue(ikey("a"), value, 1, 7, 1), prev))

    put = change(EventKind.PUT, mine, None)
    assert put is not None and (put.kind, put.kv.value) == (EventKind.PUT, mine)
    assert change(EventKind.PUT, theirs, None) is None
    moved = change(EventKind.PUT, theirs, mine)  # it left this node's view: a delete for it
    assert moved is not None and (moved.kind, moved.kv.value, moved.revision) == (
        EventKind.DELETE,
        b"",
        7,
    )
    assert change(EventKind.DELETE, b"", theirs) is None
    for prev in (mine, None):
        deleted = change(EventKind.DELETE, b"", prev)
        assert deleted is not None and (deleted.kind, deleted.prev_value) == (
            EventKind.DELETE,
            None,
        )


def test_registering_and_recording_events_always_create_the_key() -> None:
    ident = identity("w1")
    caller = Caller(ident.name, ident.node_id, ident.public_key)
    record = dump(node_record(ident))
    # Unconditional writes become creates: a record another key made meanwhile survives.
    assert WorkerScope(caller, None).check_put("/nodes/w1", record, None, None) == Write(record, 0)
    registered = WorkerScope(caller, ident.node_id)
    event_value = dump(event("w1"))
    assert registered.check_put(filed("w1"), event_value, None, None) == Write(event_value, 0)
    # Once registered, the record is only ever updated with compare-and-swap.
    stored = KeyValue("/nodes/w1", record, 2, 5, 1)
    with pytest.raises(Forbidden, match="must update /nodes/w1 with compare-and-swap"):
        registered.check_put("/nodes/w1", record, None, stored)
    with pytest.raises(RevisionConflict, match="is at revision 5, not 4"):
        registered.check_put("/nodes/w1", record, 4, stored)
    assert registered.check_put("/nodes/w1", record, 5, stored) == Write(record, 5)


# --- refusals -------------------------------------------------------------------


async def test_another_nodes_instance_is_invisible_and_untouchable(store: StateStore) -> None:
    revision = await place(store, instance("theirs", "w2"))
    await place(store, instance("mine", "w1"))
    async with serving(store) as address, worker("w1", address) as remote:
        assert await remote.get(ikey("theirs")) is None
        assert [kv.key for kv in (await remote.list("/instances/")).items] == [ikey("mine")]
        taken = instance("theirs", "w1")
        with pytest.raises(Forbidden, match="not assigned to node 'w1'"):
            await remote.put(ikey("theirs"), dump(taken), expected_revision=revision)
        with pytest.raises(Forbidden, match="not assigned to node 'w1'"):
            await remote.delete(ikey("theirs"), expected_revision=revision)
    current = await store.get(ikey("theirs"))
    assert current is not None and current.mod_revision == revision


async def test_a_node_reports_status_but_cannot_move_create_or_replace_instances(
    store: StateStore,
) -> None:
    mine = instance("mine", "w1")
    revision = await place(store, mine)
    async with serving(store) as address, worker("w1", address) as remote:
        moved = mine.model_copy(update={"node": "w2"})
        with pytest.raises(Forbidden, match="may not move it to node 'w2'"):
            await remote.put(ikey("mine"), dump(moved), expected_revision=revision)
        replaced = mine.model_copy(update={"uid": "another"})
        with pytest.raises(Forbidden, match="another uid"):
            await remote.put(ikey("mine"), dump(replaced), expected_revision=revision)
        with pytest.raises(Forbidden, match="with compare-and-swap"):
            await remote.put(ikey("mine"), dump(mine))
        with pytest.raises(Forbidden, match="with compare-and-swap"):
            await remote.delete(ikey("mine"))
        with pytest.raises(Forbidden, match="nodes do not create instances"):
            await remote.put(ikey("new"), dump(instance("new", "w1")), expected_revision=0)
        starting = mine.transition(InstanceState.STARTING, "Starting")
        after = await remote.put(ikey("mine"), dump(starting), expected_revision=revision)
    current = await store.get(ikey("mine"))
    assert current is not None and current.mod_revision == after
    assert Instance.model_validate_json(current.value).state == InstanceState.STARTING
    assert await store.get(ikey("new")) is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {
                "workload": "other",
                "template": PodTemplate(containers=[Container(name="main", image="evil")]),
                "state": InstanceState.STARTING,
            },
            "workload, template",
        ),
        ({"name": "renamed"}, "name"),
        ({"deleting": True, "generation": 2}, "generation, deleting"),
    ],
)
async def test_a_node_may_change_only_the_status_of_its_instance(
    store: StateStore, change: dict[str, object], named: str
) -> None:
    mine = instance("mine", "w1")
    revision = await place(store, mine)
    async with serving(store) as address, worker("w1", address) as remote:
        message = (
            rf"node 'w1' may only report the status of {ikey('mine')} \(state, reason, .*\); "
            rf"it tried to change {named}$"
        )
        changed = dump(mine.model_copy(update=change))
        with pytest.raises(Forbidden, match=message):
            await remote.put(ikey("mine"), changed, expected_revision=revision)
    current = await store.get(ikey("mine"))
    assert current is not None and current.mod_revision == revision


async def test_a_node_may_change_every_status_field_of_its_instance(store: StateStore) -> None:
    mine = instance("mine", "w1").model_copy(update={"not_before": START})
    revision = await place(store, mine)
    status: dict[str, object] = {
        "state": InstanceState.RUNNING,
        "reason": "Started",
        "message": "all containers running",
        "ready": True,
        "ready_since": START + timedelta(minutes=1),
        "restart_count": 1,
        "exit_code": 0,
        "container_ids": {"main": "c-1"},
        "started_at": START + timedelta(minutes=1),
        "finished_at": START + timedelta(minutes=2),
        "not_before": None,
    }
    assert set(status) == set(INSTANCE_STATUS_FIELDS)
    reported = mine.model_copy(update=status)
    async with serving(store) as address, worker("w1", address) as remote:
        after = await remote.put(ikey("mine"), dump(reported), expected_revision=revision)
    current = await store.get(ikey("mine"))
    assert current is not None and current.mod_revision == after
    assert Instance.model_validate_json(current.value) == reported


async def test_an_instance_is_reported_under_its_own_key_only(store: StateStore) -> None:
    misfiled = instance("other", "w1")
    revision = await store.put(ikey("mine"), dump(misfiled))
    async with serving(store) as address, worker("w1", address) as remote:
        starting = misfiled.transition(InstanceState.STARTING, "Starting")
        message = (
            f"{ikey('mine')} holds the instance default/mine, but the document written to it "
            "is default/other"
        )
        with pytest.raises(Forbidden, match=message):
            await remote.put(ikey("mine"), dump(starting), expected_revision=revision)
    current = await store.get(ikey("mine"))
    assert current is not None and current.mod_revision == revision


async def test_a_node_rewriting_its_record_keeps_the_operators_and_the_clusters_fields(
    store: StateStore,
) -> None:
    async with serving(store) as address, worker("w1", address) as remote:
        kv = await store.get("/nodes/w1")
        assert kv is not None
        # Cordoned and drained by the operator, failed by the membership sync.
        decided = Node.model_validate_json(kv.value).model_copy(
            update={
                "cordoned": True,
                "draining": True,
                "state": GossipState.FAILED,
                "role": NodeRole.WORKER,
            }
        )
        await store.put("/nodes/w1", dump(decided), expected_revision=kv.mod_revision)
        mine = await remote.get("/nodes/w1")
        assert mine is not None
        claimed = Node.model_validate_json(mine.value).model_copy(
            update={
                "cordoned": False,
                "draining": False,
                "state": GossipState.ALIVE,
                "role": NodeRole.BOTH,
                "labels": {"zone": "b"},
                "heartbeat_at": START,
            }
        )
        with pytest.raises(Forbidden, match="a node must update /nodes/w1 with compare-and-swap"):
            await remote.put("/nodes/w1", dump(claimed))
        with pytest.raises(RevisionConflict, match=f"is at revision {mine.mod_revision}, not 1"):
            await remote.put("/nodes/w1", dump(claimed), expected_revision=1)
        revision = await remote.put("/nodes/w1", dump(claimed), expected_revision=mine.mod_revision)
        read_back = await remote.get("/nodes/w1")
    assert read_back is not None and read_back.mod_revision == revision
    kept = Node.model_validate_json(read_back.value)
    assert (kept.cordoned, kept.draining, kept.state, kept.role) == (
        True,
        True,
        GossipState.FAILED,
        NodeRole.WORKER,
    )
    assert (kept.labels, kept.heartbeat_at) == ({"zone": "b"}, START)


async def test_a_node_may_keep_only_its_own_record(store: StateStore) -> None:
    other = identity("w2")
    await store.put("/nodes/w2", dump(node_record(other)))
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(Forbidden, match="node 'w1' may not read /nodes/w2"):
            await remote.get("/nodes/w2")
        with pytest.raises(Forbidden, match="node 'w1' may not write /nodes/w2"):
            await remote.put("/nodes/w2", dump(node_record(other)))
        with pytest.raises(Forbidden, match="may not list or watch /nodes/"):
            await remote.list("/nodes/")
        kv = await remote.get("/nodes/w1")
        assert kv is not None
        disguised = Node.model_validate_json(kv.value).model_copy(update={"node_id": other.node_id})
        with pytest.raises(Forbidden, match="must hold this node's own record"):
            await remote.put("/nodes/w1", dump(disguised), expected_revision=kv.mod_revision)
        with pytest.raises(Forbidden, match="may not delete /nodes/w1"):
            await remote.delete("/nodes/w1")


async def test_a_name_registered_to_another_key_is_refused(store: StateStore) -> None:
    original = identity("w1")
    await store.put("/nodes/w1", dump(node_record(original)))
    await place(store, instance("mine", "w1"))
    impostor = identity("w1")
    async with serving(store) as address, RemoteStore(impostor, TOKEN, known(address)) as remote:
        message = (
            rf"node name 'w1' is registered to another key \(id {original.node_id}.*"
            r"<data-dir>/node.key — restore it, or pick another --name"
        )
        with pytest.raises(Forbidden, match=message):
            await remote.get("/nodes/w1")
        with pytest.raises(Forbidden, match=message):
            await remote.put("/nodes/w1", dump(node_record(impostor)))
        with pytest.raises(Forbidden, match=message):
            await remote.list("/instances/")
    kv = await store.get("/nodes/w1")
    assert kv is not None and Node.model_validate_json(kv.value).node_id == original.node_id


async def test_an_unregistered_key_may_only_register(store: StateStore) -> None:
    await place(store, instance("mine", "w1"))
    ident = identity("w1")
    async with serving(store) as address, RemoteStore(ident, TOKEN, known(address)) as remote:
        for attempt in (
            remote.get(ikey("mine")),
            remote.get("/nodes/w2"),
            remote.put("/events/1", dump(event("w1"))),
            remote.delete(ikey("mine"), expected_revision=1),
        ):
            with pytest.raises(Unauthenticated, match="unknown node key: node 'w1'"):
                await attempt
        with pytest.raises(Unauthenticated, match="unknown node key"):
            async for _ in remote.watch("/instances/"):
                pass
        assert await remote.get("/nodes/w1") is None


async def test_events_are_recorded_only_as_the_caller_and_only_once(store: StateStore) -> None:
    key = filed("w1")
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(Forbidden, match="only record events it did itself"):
            await remote.put(filed("w2"), dump(event("w2")))
        with pytest.raises(
            Forbidden, match=f"filed under its object and id: /events/1 should be {key}"
        ):
            await remote.put("/events/1", dump(event("w1")))
        revision = await remote.put(key, dump(event("w1")))
        with pytest.raises(RevisionConflict, match="already exists"):
            await remote.put(key, dump(event("w1")))
        with pytest.raises(Forbidden, match="events are only ever created"):
            await remote.put(key, dump(event("w1")), expected_revision=revision)
        with pytest.raises(Forbidden, match=f"may not read {key}"):
            await remote.get(key)
        with pytest.raises(Forbidden, match=f"may not delete {key}"):
            await remote.delete(key)
    events = (await store.list("/events/")).items
    assert [(kv.key, kv.mod_revision) for kv in events] == [(key, revision)]


async def test_a_node_records_a_limited_number_of_events_a_minute(store: StateStore) -> None:
    now = 1000.0
    async with (
        serving(store, events_per_minute=3, monotonic=lambda: now) as address,
        worker("w1", address) as remote,
        worker("w2", address) as other,
    ):
        for n in range(3):
            await remote.put(filed("w1", f"e{n}"), dump(event("w1", f"e{n}")))
        too_many = "node 'w1' records too many events: at most 3 a minute"
        with pytest.raises(Forbidden, match=too_many):
            await remote.put(filed("w1", "e3"), dump(event("w1", "e3")))
        await other.put(filed("w2", "e0"), dump(event("w2", "e0")))  # each node has its own budget
        now += 59
        with pytest.raises(Forbidden, match=too_many):
            await remote.put(filed("w1", "e3"), dump(event("w1", "e3")))
        now += 1  # the first three left the window; the refused ones never counted
        await remote.put(filed("w1", "e3"), dump(event("w1", "e3")))
    keys = sorted(kv.key for kv in (await store.list("/events/")).items)
    assert keys == [filed("w1", f"e{n}") for n in range(4)] + [filed("w2", "e0")]


async def test_keys_outside_the_scope_are_forbidden(store: StateStore) -> None:
    await store.put("/workloads/default/web", b"{}")
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(Forbidden, match="may not read /workloads/default/web"):
            await remote.get("/workloads/default/web")
        with pytest.raises(Forbidden, match="may not write /workloads/default/web"):
            await remote.put("/workloads/default/web", b"{}")
        for prefix in ("/", "/instances", "/workloads/"):
            with pytest.raises(Forbidden, match=f"may not list or watch {prefix}:"):
                await remote.list(prefix)
        with pytest.raises(Forbidden, match="may not list or watch /events/"):
            async for _ in remote.watch("/events/"):
                pass


async def test_invalid_documents_are_invalid_input(store: StateStore) -> None:
    revision = await place(store, instance("mine", "w1"))
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(InvalidInput, match="not a valid Node document"):
            await remote.put("/nodes/w1", b"not json")
        with pytest.raises(InvalidInput, match=r"not a valid Event document \(time: Field"):
            await remote.put("/events/1", b"{}")
        with pytest.raises(InvalidInput, match="not a valid Instance document"):
            await remote.put(ikey("mine"), b"[1]", expected_revision=revision)


async def test_a_worker_cannot_run_transactions_leases_or_elections(store: StateStore) -> None:
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(Forbidden, match="through a server and cannot run transactions"):
            await remote.txn([], [PutOp("/instances/default/x", b"{}")])
        with pytest.raises(Forbidden, match="cannot attach keys to leases"):
            await remote.put("/events/1", dump(event("w1")), lease=1)
        refused: list[Awaitable[object]] = [
            remote.grant_lease(10),
            remote.keepalive(1),
            remote.revoke(1),
            remote.leader("control"),
        ]
        for call in refused:
            with pytest.raises(Forbidden, match="is a worker"):
                await call
        with pytest.raises(Forbidden, match="cannot campaign"):
            await remote.campaign("control", "w1", 1)


async def test_a_wrong_join_token_is_unauthenticated(store: StateStore) -> None:
    async with (
        serving(store) as address,
        RemoteStore(identity("w1"), "not-the-token", known(address)) as remote,
    ):
        with pytest.raises(Unauthenticated, match="wrong join token"):
            await remote.revision()


async def test_revision_conflicts_arrive_as_revision_conflicts(store: StateStore) -> None:
    mine = instance("mine", "w1")
    first = await place(store, mine)
    second = await store.put(ikey("mine"), dump(mine.model_copy(update={"message": "changed"})))
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(RevisionConflict, match=f"is at revision {second}, not {first}"):
            await remote.put(ikey("mine"), dump(mine), expected_revision=first)
        with pytest.raises(RevisionConflict):
            await remote.delete(ikey("mine"), expected_revision=first)
        # The node registers once: a second create is a conflict.
        record = await remote.get("/nodes/w1")
        assert record is not None
        created = f"is at revision {record.mod_revision}, not 0"
        with pytest.raises(RevisionConflict, match=created):
            await remote.put("/nodes/w1", record.value, expected_revision=0)


# --- servers coming and going ----------------------------------------------------


async def test_a_worker_moves_to_another_server_when_its_server_dies(store: StateStore) -> None:
    async with serving(store) as second:
        async with serving(store) as first:
            remote = RemoteStore(identity("w1"), TOKEN, known(first, second))
            assert await remote.revision() == 0
            assert using(remote) == first
        # The first server is gone: the call that finds out fails, the next moves on.
        with pytest.raises(Unavailable, match=f"node {first} is not reachable"):
            await remote.revision()
        assert using(remote) is None
        await store.put("/anything", b"x")
        assert await remote.revision() == 1
        assert using(remote) == second
        await remote.aclose()
        with pytest.raises(Unavailable, match="is closed"):
            await remote.revision()


async def test_a_watch_breaks_with_unavailable_when_its_server_goes_away(
    store: StateStore,
) -> None:
    addresses: list[str] = []

    async def servers() -> Sequence[str]:
        return addresses

    seen, broken = anyio.Event(), anyio.Event()
    errors: list[Unavailable] = []
    ident = identity("w1")
    async with (
        serving(store) as second,
        RemoteStore(ident, TOKEN, servers) as remote,
        anyio.create_task_group() as tg,
    ):

        async def follow(start: int) -> None:
            try:
                async for _ in remote.watch("/instances/", start):
                    seen.set()
            except Unavailable as exc:
                errors.append(exc)
                broken.set()

        async with serving(store) as first:
            addresses[:] = [first, second]
            await remote.put("/nodes/w1", dump(node_record(ident)), expected_revision=0)
            placed = await place(store, instance("mine", "w1"))
            tg.start_soon(follow, placed)
            with anyio.fail_after(WAIT):
                await seen.wait()  # the stream is open on the first server
            assert using(remote) == first
        with anyio.fail_after(WAIT):
            await broken.wait()
        assert using(remote) is None
        # The broken watch dropped the first server: the next call goes to the second.
        assert await remote.revision() == placed
        assert using(remote) == second


async def test_a_worker_reads_only_the_configuration_its_own_pods_use(store: StateStore) -> None:
    uses = instance("mine", "w1").model_copy(
        update={
            "template": PodTemplate.model_validate(
                {
                    "containers": [
                        {"name": "main", "image": "busybox", "env_from": [{"secret": "creds"}]}
                    ],
                    "volumes": [{"name": "v", "config_map": {"name": "settings"}}],
                }
            )
        }
    )
    await place(store, uses)
    await place(store, instance("theirs", "w2"))
    for key in ("/configmaps/default/settings", "/secrets/default/creds", "/secrets/default/db"):
        await store.put(key, b"{}")
    async with serving(store) as address, worker("w1", address) as remote:
        assert await remote.get("/configmaps/default/settings") is not None
        assert await remote.get("/secrets/default/creds") is not None
        with pytest.raises(Forbidden, match="runs no instance that uses Secret default/db"):
            await remote.get("/secrets/default/db")
        with pytest.raises(Forbidden, match="runs no instance that uses Secret other/creds"):
            await remote.get("/secrets/other/creds")
        with pytest.raises(Forbidden):
            await remote.list("/secrets/")
