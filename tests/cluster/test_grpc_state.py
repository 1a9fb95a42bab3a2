"""The NodeState service over real gRPC: a gateway on a server, a RemoteNodeState on a worker.

Every test starts ``serve_grpc`` on a loopback port with a NodeStateGateway
over a real store (memory and SQLite) and talks to it as a worker would,
through a RemoteNodeState signed with the worker's own key. The policy's
refusals are checked one by one (requests a RemoteNodeState never sends go
through a raw signed call); the worker's real node loop runs over a
RemoteNodeState.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anyio
import pytest
from google.protobuf.message import Message
from nacl.signing import SigningKey

from shoal.cluster import (
    Assignments,
    Caller,
    CallVerifier,
    NodeChannel,
    NodeIdentity,
    NodeStateGateway,
    RemoteNodeState,
    check_accepted,
    serve_grpc,
)
from shoal.cluster.grpc._pb import shoal_node_pb2 as pb
from shoal.cluster.grpc._worker_scope import WorkerScope, Write
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    LocalNodeState,
    ManualClock,
    NodeLoop,
    ShoalService,
    SystemClock,
)
from shoal.interfaces import (
    INSTANCE_STATUS_FIELDS,
    MAX_EVENT_BYTES,
    Actor,
    Capacity,
    ConfigMapSpec,
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
    NodeState,
    ObjectRef,
    PodTemplate,
    RestartPolicy,
    RevisionConflict,
    SecretSpec,
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
SERVICE = "/shoal.cluster.v1.NodeState"

Reply = TypeVar("Reply", bound=Message)


@asynccontextmanager
async def serving(
    store: StateStore,
    token: str = TOKEN,
    *,
    events_per_minute: int = 600,
    monotonic: Callable[[], float] = time.monotonic,
    streams: bool = True,
) -> AsyncIterator[str]:
    """Serve a NodeStateGateway over ``store`` on a loopback port; stop it on exit.

    With ``streams`` (as a server runs it), workers' instances come from
    per-node :class:`Assignments`; without, from the store, filtered per call.
    """
    assignments = Assignments(store, SystemClock()) if streams else None
    gateway = NodeStateGateway(
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


def using(remote: RemoteNodeState) -> str | None:
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
async def worker(name: str, *addresses: str) -> AsyncIterator[RemoteNodeState]:
    """The RemoteNodeState of a new worker that has registered its node record."""
    ident = identity(name)
    async with RemoteNodeState(ident, TOKEN, known(*addresses)) as remote:
        assert await remote.register(node_record(ident))
        yield remote


async def raw(
    ident: NodeIdentity, address: str, method: str, request: Message, reply: type[Reply]
) -> Reply:
    """Make one signed call as ``ident``: what a RemoteNodeState would never send."""
    channel = NodeChannel(ident, TOKEN, address)
    try:
        return await channel.unary(f"{SERVICE}/{method}", request, reply)
    finally:
        await channel.aclose()


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


async def stored_instance(store: StateStore, name: str) -> tuple[Instance, int]:
    kv = await store.get(ikey(name))
    assert kv is not None
    return Instance.model_validate_json(kv.value), kv.mod_revision


# --- registration and the node loop --------------------------------------------


async def test_a_new_node_registers_then_gets_its_assignments(store: StateStore) -> None:
    ident = identity("w1")
    async with serving(store) as address, RemoteNodeState(ident, TOKEN, known(address)) as remote:
        await check_accepted(ident, TOKEN, address)  # allowed before registering
        with pytest.raises(Unauthenticated, match="unknown node key: node 'w1' has not registered"):
            await remote.assignments()
        assert await remote.register(node_record(ident)) is True
        stored = await store.get("/nodes/w1")
        assert stored is not None
        assert Node.model_validate_json(stored.value).node_id == ident.node_id
        assert await remote.register(node_record(ident)) is False  # a refresh, not a join
        await place(store, instance("web-1", "w1"))
        await place(store, instance("web-2", "w2"))
        listed = await remote.assignments()
        assert [kv.key for kv in listed.items] == [ikey("web-1")]
        assert listed.revision == await store.revision()
        assert using(remote) == address


async def test_a_heartbeat_moves_heartbeat_at_only(store: StateStore) -> None:
    async with serving(store) as address, worker("w1", address) as remote:
        kv = await store.get("/nodes/w1")
        assert kv is not None
        cordoned = Node.model_validate_json(kv.value).model_copy(update={"cordoned": True})
        await store.put("/nodes/w1", dump(cordoned))
        await remote.heartbeat(START + timedelta(minutes=5))
    kv = await store.get("/nodes/w1")
    assert kv is not None
    beaten = Node.model_validate_json(kv.value)
    assert beaten == cordoned.model_copy(update={"heartbeat_at": START + timedelta(minutes=5)})


async def test_a_worker_node_loop_runs_its_instances_through_a_server(store: StateStore) -> None:
    ident = identity("w1")
    clock = ManualClock()
    runtime = MockRuntime(clock)
    await place(store, instance("web-1", "w1"))
    await place(store, instance("web-2", "w2"))
    async with (
        serving(store) as address,
        RemoteNodeState(ident, TOKEN, known(address)) as remote,
        anyio.create_task_group() as tg,
    ):
        # The clock never moves: no resync, heartbeat or probe tick, so only the
        # assignment stream through the server wakes the loop.
        loop = NodeLoop(node_record(ident), remote, runtime, clock, resync=3600)
        await tg.start(loop.run)

        async def running() -> bool:
            kv = await store.get(ikey("web-1"))
            state = None if kv is None else Instance.model_validate_json(kv.value).state
            return state == InstanceState.RUNNING

        await until(store, ikey("web-1"), running)
        assert [pod.name for pod in await runtime.list()] == ["web-1"]

        # The control loop marks it for deletion: the node stops it and deletes the record.
        started, revision = await stored_instance(store, "web-1")
        deleting = started.model_copy(update={"deleting": True})
        await store.put(ikey("web-1"), dump(deleting), expected_revision=revision)

        async def removed() -> bool:
            return "Removed" in await reasons(store)

        await until(store, "/events/", removed)
        assert await store.get(ikey("web-1")) is None
        assert list(await runtime.list()) == []
        tg.cancel_scope.cancel()

    other, _ = await stored_instance(store, "web-2")
    assert other.state == InstanceState.SCHEDULED
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
    async with serving(store) as address, RemoteNodeState(ident, TOKEN, known(address)) as remote:
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
        "NotReady",  # its readiness probe failed with its liveness probe: unready first
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
    async with (
        serving(store) as address,
        RemoteNodeState(ident, TOKEN, known(address)) as remote,
    ):
        state: NodeState = LocalNodeState(store, "w1") if path == "direct" else remote
        loop = NodeLoop(node_record(ident), state, MockRuntime(clock), clock)
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
async def test_the_stream_carries_the_callers_instances_and_deletes_key_only(
    store: StateStore, streams: bool
) -> None:
    async with serving(store, streams=streams) as address, worker("w1", address) as remote:
        start = (await remote.assignments()).revision + 1
        await place(store, instance("theirs", "w2"))
        await place(store, instance("mine", "w1"))
        await store.delete(ikey("theirs"))
        gone = await store.delete(ikey("mine"))
        seen: list[WatchEvent] = []
        with anyio.fail_after(WAIT):
            async for change in remote.watch_assignments(start):
                seen.append(change)
                if change.kind == EventKind.DELETE:
                    break
    assert [(e.kind, e.kv.key) for e in seen] == [
        (EventKind.PUT, ikey("mine")),
        (EventKind.DELETE, ikey("mine")),
    ]
    assert Instance.model_validate_json(seen[0].kv.value).node == "w1"
    assert (seen[1].kv.value, seen[1].revision) == (b"", gone)


@pytest.mark.parametrize("streams", [True, False], ids=["assignments", "filtered-store"])
async def test_a_reconnecting_worker_resumes_its_assignments_without_gaps_or_repeats(
    store: StateStore, streams: bool
) -> None:
    """The worker's connection goes away, changes happen meanwhile, a new one resumes."""
    ident = identity("w1")
    async with serving(store, streams=streams) as address:
        async with RemoteNodeState(ident, TOKEN, known(address)) as remote:
            await remote.register(node_record(ident))
            listed = await remote.assignments()
            await place(store, instance("a", "w1"))
            await place(store, instance("theirs", "w2"))
            await place(store, instance("b", "w1"))
            with anyio.fail_after(WAIT):
                async for change in remote.watch_assignments(listed.revision + 1):
                    first = change
                    break  # the connection goes away after one change
        await store.delete(ikey("a"))
        await place(store, instance("c", "w1"))
        rest: list[WatchEvent] = []
        async with RemoteNodeState(ident, TOKEN, known(address)) as back:
            with anyio.fail_after(WAIT):
                async for change in back.watch_assignments(first.revision + 1):
                    rest.append(change)
                    if len(rest) == 3:
                        break
    assert first.kv.key == ikey("a")
    assert [(e.kind, e.kv.key) for e in rest] == [
        (EventKind.PUT, ikey("b")),
        (EventKind.DELETE, ikey("a")),
        (EventKind.PUT, ikey("c")),
    ]


def test_the_stream_policy_drops_other_nodes_changes_and_hides_moved_instances() -> None:
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


def test_registering_creates_the_record_or_rewrites_it_at_its_revision() -> None:
    ident = identity("w1")
    caller = Caller(ident.name, ident.node_id, ident.public_key)
    record = dump(node_record(ident))
    # A new record is a create: a record another key made meanwhile survives.
    assert WorkerScope(caller, None).check_register(record, None) == Write(record, 0)
    stored = KeyValue("/nodes/w1", record, 2, 5, 1)
    assert WorkerScope(caller, ident.node_id).check_register(record, stored) == Write(record, 5)
    # Another key registered the name between the identity check and the write.
    other = dump(node_record(identity("w1")))
    with pytest.raises(Forbidden, match="registered to another key"):
        WorkerScope(caller, None).check_register(record, KeyValue("/nodes/w1", other, 2, 5, 1))


# --- refusals -------------------------------------------------------------------


async def test_another_nodes_instance_is_invisible_and_untouchable(store: StateStore) -> None:
    revision = await place(store, instance("theirs", "w2"))
    await place(store, instance("mine", "w1"))
    async with serving(store) as address, worker("w1", address) as remote:
        assert [kv.key for kv in (await remote.assignments()).items] == [ikey("mine")]
        taken = instance("theirs", "w1")  # what a node would send, claiming it
        with pytest.raises(Forbidden, match="not assigned to node 'w1'"):
            await remote.report(taken, revision)
        with pytest.raises(Forbidden, match="not assigned to node 'w1'"):
            await remote.remove(taken, revision)
        with pytest.raises(Forbidden, match="runs no instance that uses"):
            await remote.config("Secret", "default", "theirs")
    _, after = await stored_instance(store, "theirs")
    assert after == revision


async def test_a_node_reports_status_but_cannot_replace_or_create_instances(
    store: StateStore,
) -> None:
    mine = instance("mine", "w1")
    revision = await place(store, mine)
    async with serving(store) as address, worker("w1", address) as remote:
        replaced = mine.model_copy(update={"uid": "another"})
        with pytest.raises(Forbidden, match=r"holds another instance \(uid uid-mine, not another"):
            await remote.report(replaced, revision)
        with pytest.raises(Forbidden, match="holds another instance"):
            await remote.remove(replaced, revision)
        with pytest.raises(RevisionConflict, match="does not exist"):
            await remote.report(instance("new", "w1"), 0)
        # Only the status travels: a moved or renamed copy reports its own key's status.
        moved = mine.model_copy(update={"node": "w2", "workload": "other"})
        starting = moved.transition(InstanceState.STARTING, "Starting")
        after = await remote.report(starting, revision)
    current, at = await stored_instance(store, "mine")
    assert at == after
    assert current == mine.transition(InstanceState.STARTING, "Starting")
    assert await store.get(ikey("new")) is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {"workload": "other", "template": {"containers": []}, "state": "starting"},
            "template, workload",
        ),
        ({"name": "renamed"}, "name"),
        ({"node": "w2"}, "node"),
        ({"deleting": True, "generation": 2}, "deleting, generation"),
    ],
)
async def test_a_node_may_change_only_the_status_of_its_instance(
    store: StateStore, fields: dict[str, object], named: str
) -> None:
    revision = await place(store, instance("mine", "w1"))
    async with serving(store) as address, worker("w1", address) as remote:
        request = pb.ReportInstanceRequest(
            namespace="default",
            name="mine",
            uid="uid-mine",
            status=json.dumps(fields).encode(),
            expected_revision=revision,
        )
        message = (
            rf"node 'w1' may only report the status of {ikey('mine')} \(state, reason, .*\); "
            rf"it tried to change {named}$"
        )
        with pytest.raises(Forbidden, match=message):
            await raw(remote.identity, address, "ReportInstance", request, pb.ReportInstanceReply)
    _, after = await stored_instance(store, "mine")
    assert after == revision


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
        "start_trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert set(status) == set(INSTANCE_STATUS_FIELDS)
    reported = mine.model_copy(update=status)
    async with serving(store) as address, worker("w1", address) as remote:
        after = await remote.report(reported, revision)
    current, at = await stored_instance(store, "mine")
    assert (current, at) == (reported, after)


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
        claimed = decided.model_copy(
            update={
                "cordoned": False,
                "draining": False,
                "state": GossipState.ALIVE,
                "role": NodeRole.BOTH,
                "labels": {"zone": "b"},
                "heartbeat_at": START,
            }
        )
        assert await remote.register(claimed) is False
    read_back = await store.get("/nodes/w1")
    assert read_back is not None
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
        with pytest.raises(Forbidden, match="must hold this node's own record"):
            await remote.register(node_record(other))
        disguised = node_record(remote.identity).model_copy(update={"node_id": other.node_id})
        with pytest.raises(Forbidden, match="must hold this node's own record"):
            await remote.register(disguised)
    kv = await store.get("/nodes/w2")
    assert kv is not None and Node.model_validate_json(kv.value).node_id == other.node_id


async def test_a_name_registered_to_another_key_is_refused(store: StateStore) -> None:
    original = identity("w1")
    await store.put("/nodes/w1", dump(node_record(original)))
    revision = await place(store, instance("mine", "w1"))
    impostor = identity("w1")
    async with (
        serving(store) as address,
        RemoteNodeState(impostor, TOKEN, known(address)) as remote,
    ):
        message = (
            rf"node name 'w1' is registered to another key \(id {original.node_id}.*"
            r"<data-dir>/node.key — restore it, or pick another --name"
        )
        with pytest.raises(Forbidden, match=message):
            await remote.register(node_record(impostor))
        with pytest.raises(Forbidden, match=message):
            await remote.assignments()
        with pytest.raises(Forbidden, match=message):
            await remote.report(instance("mine", "w1"), revision)
        with pytest.raises(Forbidden, match=message):
            async for _ in remote.watch_assignments(1):
                pass
    kv = await store.get("/nodes/w1")
    assert kv is not None and Node.model_validate_json(kv.value).node_id == original.node_id


async def test_an_unregistered_key_may_only_register(store: StateStore) -> None:
    revision = await place(store, instance("mine", "w1"))
    ident = identity("w1")
    async with (
        serving(store) as address,
        RemoteNodeState(ident, TOKEN, known(address)) as remote,
    ):
        attempts: list[Awaitable[object]] = [
            remote.assignments(),
            remote.heartbeat(START),
            remote.report(instance("mine", "w1"), revision),
            remote.remove(instance("mine", "w1"), revision),
            remote.record(event("w1")),
            remote.config("Secret", "default", "db"),
        ]
        for attempt in attempts:
            with pytest.raises(Unauthenticated, match="unknown node key: node 'w1'"):
                await attempt
        with pytest.raises(Unauthenticated, match="unknown node key"):
            async for _ in remote.watch_assignments(1):
                pass
    assert await store.get("/nodes/w1") is None


async def test_events_are_recorded_only_as_the_caller_under_their_object_once(
    store: StateStore,
) -> None:
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(Forbidden, match="only record events it did itself"):
            await remote.record(event("w2"))
        await remote.record(event("w1"))
        with pytest.raises(RevisionConflict, match="already exists"):
            await remote.record(event("w1"))
    events = (await store.list("/events/")).items
    assert [kv.key for kv in events] == [filed("w1")]


async def test_an_event_over_the_size_limit_is_refused(store: StateStore) -> None:
    huge = event("w1").model_copy(update={"message": "x" * MAX_EVENT_BYTES})
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(InvalidInput, match=f"over the {MAX_EVENT_BYTES}-byte limit"):
            await remote.record(huge)
        await remote.record(event("w1"))  # a normal one still goes
    assert [kv.key for kv in (await store.list("/events/")).items] == [filed("w1")]


async def test_a_node_records_a_limited_number_of_events_a_minute(store: StateStore) -> None:
    now = 1000.0
    async with (
        serving(store, events_per_minute=3, monotonic=lambda: now) as address,
        worker("w1", address) as remote,
        worker("w2", address) as other,
    ):
        for n in range(3):
            await remote.record(event("w1", f"e{n}"))
        too_many = "node 'w1' records too many events: at most 3 a minute"
        with pytest.raises(Forbidden, match=too_many):
            await remote.record(event("w1", "e3"))
        await other.record(event("w2", "e0"))  # each node has its own budget
        now += 59
        with pytest.raises(Forbidden, match=too_many):
            await remote.record(event("w1", "e3"))
        now += 1  # the first three left the window; the refused ones never counted
        await remote.record(event("w1", "e3"))
    keys = sorted(kv.key for kv in (await store.list("/events/")).items)
    assert keys == [filed("w1", f"e{n}") for n in range(4)] + [filed("w2", "e0")]


async def test_invalid_documents_are_invalid_input(store: StateStore) -> None:
    revision = await place(store, instance("mine", "w1"))
    async with serving(store) as address, worker("w1", address) as remote:
        ident = remote.identity
        with pytest.raises(InvalidInput, match="not a valid Node document"):
            await raw(ident, address, "Register", pb.RegisterRequest(node=b"x"), pb.RegisterReply)
        with pytest.raises(InvalidInput, match=r"not a valid Event document \(time: Field"):
            request = pb.RecordEventRequest(event=b"{}")
            await raw(ident, address, "RecordEvent", request, pb.RecordEventReply)
        for status, why in ((b"[1]", "not a JSON object"), (b'{"ready": "very"}', "ready")):
            report = pb.ReportInstanceRequest(
                namespace="default",
                name="mine",
                uid="uid-mine",
                status=status,
                expected_revision=revision,
            )
            with pytest.raises(InvalidInput, match=why):
                await raw(ident, address, "ReportInstance", report, pb.ReportInstanceReply)
        with pytest.raises(InvalidInput, match="a ConfigMap or a Secret"):
            await remote.config("Workload", "default", "web")


async def test_a_wrong_join_token_is_unauthenticated(store: StateStore) -> None:
    ident = identity("w1")
    async with (
        serving(store) as address,
        RemoteNodeState(ident, "not-the-token", known(address)) as remote,
    ):
        with pytest.raises(Unauthenticated, match="wrong join token"):
            await remote.register(node_record(ident))
        with pytest.raises(Unauthenticated, match="wrong join token"):
            await check_accepted(ident, "not-the-token", address)


async def test_revision_conflicts_arrive_as_revision_conflicts(store: StateStore) -> None:
    mine = instance("mine", "w1")
    first = await place(store, mine)
    second = await store.put(ikey("mine"), dump(mine.model_copy(update={"message": "changed"})))
    async with serving(store) as address, worker("w1", address) as remote:
        with pytest.raises(RevisionConflict, match=f"is at revision {second}, not {first}"):
            await remote.report(mine, first)
        with pytest.raises(RevisionConflict):
            await remote.remove(mine, first)
        assert await remote.remove(mine, second) is not None
    assert await store.get(ikey("mine")) is None


# --- servers coming and going ----------------------------------------------------


async def test_a_worker_moves_to_another_server_when_its_server_dies(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "shoal.cluster")
    ident = identity("w1")
    async with serving(store) as second:
        async with serving(store) as first:
            remote = RemoteNodeState(ident, TOKEN, known(first, second))
            assert await remote.register(node_record(ident))
            assert using(remote) == first
        # The first server is gone: the call that finds out fails, the next moves on.
        with pytest.raises(Unavailable, match=f"node {first} is not reachable"):
            await remote.assignments()
        assert using(remote) is None
        await place(store, instance("mine", "w1"))
        assert [kv.key for kv in (await remote.assignments()).items] == [ikey("mine")]
        assert using(remote) == second
        (back,) = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
        assert back.startswith(f"node w1 reaches the cluster state again, through server {second}")
        await remote.aclose()
        with pytest.raises(Unavailable, match="is closed"):
            await remote.assignments()


async def test_a_stream_breaks_with_unavailable_when_its_server_goes_away(
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
        RemoteNodeState(ident, TOKEN, servers) as remote,
        anyio.create_task_group() as tg,
    ):

        async def follow(start: int) -> None:
            try:
                async for _ in remote.watch_assignments(start):
                    seen.set()
            except Unavailable as exc:
                errors.append(exc)
                broken.set()

        async with serving(store) as first:
            addresses[:] = [first, second]
            await remote.register(node_record(ident))
            placed = await place(store, instance("mine", "w1"))
            tg.start_soon(follow, placed)
            with anyio.fail_after(WAIT):
                await seen.wait()  # the stream is open on the first server
            assert using(remote) == first
        with anyio.fail_after(WAIT):
            await broken.wait()
        assert using(remote) is None
        # The broken stream dropped the first server: the next call goes to the second.
        assert (await remote.assignments()).revision == placed
        assert using(remote) == second


@pytest.mark.parametrize("streams", [True, False], ids=["assignments", "filtered-store"])
async def test_a_worker_reads_only_the_configuration_its_own_pods_use(
    store: StateStore, streams: bool
) -> None:
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
    service = ShoalService(store, SystemClock())
    await service.apply(
        [
            ConfigMapSpec(name="settings", data={"a": "1"}),
            SecretSpec(name="creds", string_data={"pw": "x"}),
            SecretSpec(name="db", string_data={"pw": "y"}),
        ]
    )
    async with serving(store, streams=streams) as address, worker("w1", address) as remote:
        settings = await remote.config("ConfigMap", "default", "settings")
        assert isinstance(settings, ConfigMapSpec) and settings.data == {"a": "1"}
        creds = await remote.config("Secret", "default", "creds")
        assert isinstance(creds, SecretSpec) and set(creds.data) == {"pw"}
        with pytest.raises(Forbidden, match="runs no instance that uses Secret default/db"):
            await remote.config("Secret", "default", "db")
        with pytest.raises(Forbidden, match="runs no instance that uses Secret other/creds"):
            await remote.config("Secret", "other", "creds")
        for kind, name in (("Namespace", "default"), ("Secret", "")):
            with pytest.raises(InvalidInput, match="reads a ConfigMap or a Secret by namespace"):
                await remote.config(kind, "default", name)
        await store.delete(ikey("mine"))  # its pod gone, its configuration is out of reach

        async def refused() -> bool:
            try:
                await remote.config("Secret", "default", "creds")
            except Forbidden:
                return True
            return False

        await until(store, "/instances/", refused)
