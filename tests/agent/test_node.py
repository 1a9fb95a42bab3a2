"""ShoalNode assembly: leadership of the control loop, and the composition root's checks."""

import base64
import os
import socket
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint
from nacl.signing import SigningKey

from shoal.agent import NodeConfig, ShoalNode, build_node
from shoal.agent._clustering import Clustering
from shoal.cluster import (
    NodeIdentity,
    SerfCluster,
    StaticCluster,
    check_listenable,
    new_gossip_key,
    node_tags,
)
from shoal.core import ManualClock
from shoal.interfaces import (
    Container,
    GossipState,
    InternalError,
    InvalidInput,
    NodeRole,
    PodSpec,
    SecretSpec,
    Unavailable,
)
from shoal.runtime import MockRuntime
from shoal.state import KEYRING_FILE, EtcdStore, Keyring, MemoryStore, SealedStore
from tests.core.support import make_node

pytestmark = pytest.mark.anyio


def server(name: str, tmp: Path, store: MemoryStore, clock: ManualClock) -> ShoalNode:
    config = NodeConfig(data_dir=tmp, name=name, role=NodeRole.SERVER, runtime="mock")
    return ShoalNode(config, store, MockRuntime(clock), StaticCluster(name), clock, make_node(name))


async def advance(clock: ManualClock, seconds: float, step: float = 1.0) -> None:
    """Move the clock in steps, letting every woken task run before the next one."""
    moved = 0.0
    while moved < seconds:
        clock.advance(step)
        moved += step
        await wait_all_tasks_blocked()


async def test_a_waiting_candidate_keeps_its_lease_and_takes_over(tmp_path: Path) -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    async with store:
        first = server("first", tmp_path / "a", store, clock)
        second = server("second", tmp_path / "b", store, clock)
        async with (
            aclosing(first.cluster),
            aclosing(second.cluster),
            anyio.create_task_group() as tg,
        ):
            first_scope = anyio.CancelScope()

            async def run_first() -> None:
                with first_scope:
                    await first.leader.run()

            tg.start_soon(run_first)
            await wait_all_tasks_blocked()
            assert await store.leader("control-loop") == "first"
            tg.start_soon(second.leader.run)
            # Far longer than the leader ttl (10 s): the waiting candidate's lease must live.
            await advance(clock, 60)
            assert await store.leader("control-loop") == "first"
            first_scope.cancel()  # the leader stops (and resigns)
            with anyio.fail_after(10):
                while await store.leader("control-loop") != "second":
                    await advance(clock, 1)
                    await checkpoint()
            tg.cancel_scope.cancel()


def test_an_oci_runtime_without_root_or_binary_says_what_is_missing(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path, runtime="youki")  # not installed here
    with pytest.raises(Unavailable, match=r"youki is not installed|needs root") as caught:
        build_node(config)
    assert "--runtime mock" in caught.value.message


def test_host_paths_are_refused_unless_the_node_config_allows_them(tmp_path: Path) -> None:
    for allowed in (False, True):
        config = NodeConfig(
            data_dir=tmp_path / str(allowed),
            runtime="mock",
            state="memory",
            allow_host_paths=allowed,
        )
        runtime = build_node(config).runtime
        assert isinstance(runtime, MockRuntime)
        assert runtime.allow_host_paths is allowed


async def test_one_agent_per_data_dir_the_second_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    config = NodeConfig(data_dir=tmp_path, runtime="mock", state="memory")
    first = build_node(config)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        with pytest.raises(Unavailable) as caught:
            build_node(config)
        assert f"another shoal agent (pid {os.getpid()}) runs on data dir" in caught.value.message
        assert "another --data-dir" in caught.value.message
        tg.cancel_scope.cancel()
    build_node(config)  # free again once the first has stopped


async def test_a_node_whose_node_loop_ends_stops_instead_of_idling(tmp_path: Path) -> None:
    clock = ManualClock()
    config = NodeConfig(data_dir=tmp_path, name="n1", role=NodeRole.WORKER, runtime="mock")
    store = MemoryStore(clock=clock)
    node = ShoalNode(config, store, MockRuntime(clock), StaticCluster("n1"), clock, make_node("n1"))

    async def ends_at_once(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    node.node_loop.run = ends_at_once  # type: ignore[method-assign]
    with pytest.raises(ExceptionGroup) as raised:
        await node.run()
    (error,) = raised.value.exceptions
    assert isinstance(error, InternalError)
    assert error.message.startswith("the node loop of node n1 stopped unexpectedly")


def test_servers_on_etcd_use_the_configured_key_prefix(tmp_path: Path) -> None:
    config = NodeConfig(
        data_dir=tmp_path,
        name="s1",
        role=NodeRole.SERVER,
        runtime="mock",
        state="etcd",
        etcd=["127.0.0.1:2379"],
        etcd_prefix="/team-a",
    )
    sealed = build_node(config).store
    assert isinstance(sealed, SealedStore)  # Secrets are sealed whatever the backend
    store = sealed.inner
    assert isinstance(store, EtcdStore)
    assert repr(store) == "EtcdStore('127.0.0.1:2379', prefix='/team-a')"


async def test_a_start_with_rotate_secrets_key_reseals_every_secret(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path, runtime="mock")
    first = build_node(config)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await first.service.apply([SecretSpec(name="db", string_data={"password": "pw"})])
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    old = Keyring.load(tmp_path / KEYRING_FILE).active

    rotated = build_node(config.model_copy(update={"rotate_secrets_key": True}))
    async with anyio.create_task_group() as tg:
        await tg.start(rotated.run)
        assert isinstance(rotated.store, SealedStore)
        raw = await rotated.store.inner.get("/secrets/default/db")
        view = await rotated.service.get_secret("db", show_values=True)
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()

    ring = Keyring.load(tmp_path / KEYRING_FILE)
    assert ring.active != old and set(ring.keys) == {old, ring.active}
    assert raw is not None and raw.value.startswith(f"shoal-sealed:v1:{ring.active}:".encode())
    assert view.data is not None and base64.b64decode(view.data["password"]) == b"pw"


def test_cluster_options_without_the_cluster_secrets_are_refused(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "d", name="w1", role=NodeRole.WORKER, runtime="mock")
    with pytest.raises(InvalidInput, match="a worker runs the instances of a cluster's servers"):
        build_node(config)
    assert not (tmp_path / "d").exists()


async def test_a_node_that_leaves_its_cluster_stops_its_pods(tmp_path: Path) -> None:
    clock = ManualClock()
    config = NodeConfig(data_dir=tmp_path, name="w1", role=NodeRole.WORKER, runtime="mock")
    runtime = MockRuntime(clock)
    for uid in ("pod-1", "pod-2"):
        await runtime.create(
            PodSpec(
                uid=uid,
                name=f"web-{uid}",
                namespace="default",
                workload="web",
                containers=[Container(name="main", image="app:1")],
            )
        )
        await runtime.start(uid)
    clustering = Clustering(
        NodeIdentity("w1", SigningKey.generate()),
        "token",
        new_gossip_key(),
        tmp_path,
        bind="127.0.0.1",
    )
    cluster = StaticCluster("w1")
    node = ShoalNode(
        config,
        MemoryStore(clock=clock),
        runtime,
        cluster,
        clock,
        make_node("w1"),
        clustering=clustering,
    )
    await node.leave()
    assert await runtime.list() == []
    assert (await cluster.local_node()).state == GossipState.LEFT
    await cluster.aclose()


async def test_a_nodes_service_lists_the_members_its_cluster_manager_knows(tmp_path: Path) -> None:
    clock = ManualClock()
    config = NodeConfig(data_dir=tmp_path, name="n1", runtime="mock")
    node = make_node("n1", node_id="c" * 64)
    gossip = StaticCluster("n1", tags=node_tags(node))
    async with MemoryStore(clock=clock) as store, gossip:
        shoal = ShoalNode(config, store, MockRuntime(clock), gossip, clock, node)
        (member,) = await shoal.service.list_members()
    assert (member.name, member.state) == ("n1", GossipState.ALIVE)
    assert (member.tags["id"], member.tags["role"]) == ("c" * 64, "both")


async def test_a_taken_grpc_port_stops_the_node_before_it_joins_gossip(tmp_path: Path) -> None:
    token, key = tmp_path / "join-token", tmp_path / "gossip-key"
    token.write_text("token\n")
    key.write_text(new_gossip_key() + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_addr = f"127.0.0.1:{taken.getsockname()[1]}"
        config = NodeConfig(
            data_dir=tmp_path / "d",
            name="s1",
            role=NodeRole.SERVER,
            runtime="mock",
            state="memory",
            join_token_file=token,
            gossip_key_file=key,
            grpc_addr=grpc_addr,
        )
        node = build_node(config)
        refused = f"cannot listen for node-to-node gRPC on {grpc_addr}"
        with pytest.raises(Unavailable, match=refused):
            await node.run()
    # Its serf agent never started: gossip never saw it.
    assert isinstance(node.cluster, SerfCluster)
    assert node.cluster.agent_pid is None
    assert not (tmp_path / "d" / "serf" / "serf.json").exists()


def test_check_listenable_names_the_address_and_the_reason() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    check_listenable(f"127.0.0.1:{port}")  # nothing listens there: fine
    with pytest.raises(Unavailable, match=r"on 198\.18\.255\.254:7947 \(Cannot assign requested"):
        check_listenable("198.18.255.254:7947")  # not an address of this machine


def test_a_server_listening_on_every_address_advertises_one_others_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "server")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "198.18.1.5")
    token, key = tmp_path / "join-token", tmp_path / "gossip-key"
    token.write_text("token\n")
    key.write_text(new_gossip_key() + "\n")
    config = NodeConfig(
        data_dir=tmp_path / "d",
        name="server",
        role=NodeRole.SERVER,
        runtime="mock",
        state="memory",
        join_token_file=token,
        gossip_key_file=key,
        bind="0.0.0.0",
        api_addr="0.0.0.0:7070",
    )
    node = build_node(config).node
    assert node.addresses == {"api": "198.18.1.5:7070", "grpc": "198.18.1.5:7947"}
