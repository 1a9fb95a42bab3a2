"""The Pods service over real gRPC: a PodGateway serving a MockRuntime, RemotePods calling it.

Every test starts ``serve_grpc`` on a loopback port and talks to it through a
signed :class:`NodeChannel`, as a server proxying ``shoal logs`` / ``exec`` /
``top`` to the node running the instance would.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from nacl.signing import SigningKey

import shoal.cluster.grpc._grpc_pods as grpc_pods
from shoal.cluster import PodGateway, RemotePods
from shoal.cluster.grpc._grpc_base import NodeChannel
from shoal.cluster.grpc._nodeauth import Caller, CallVerifier, NodeIdentity
from shoal.interfaces import (
    Conflict,
    Container,
    ContainerRuntime,
    ContainerStats,
    ExecResult,
    Forbidden,
    InvalidInput,
    LogLine,
    NotFound,
    PodAccess,
    PodSpec,
    Unauthenticated,
    Unavailable,
)
from shoal.runtime import MockRuntime
from tests.cluster.grpc_support import serving

pytestmark = pytest.mark.anyio

TOKEN = "the-join-token"
UID = "pod-1"
SERVER = "server-1"
START = datetime(2026, 1, 1, tzinfo=UTC)
WAIT = 5.0


class TickingClock:
    """A Clock one second further on at every reading, so every log line has its own time."""

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self._elapsed = 0.0

    def now(self) -> datetime:
        self._elapsed = float(next(self._ticks))
        return START + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class TrackedPods:
    """The mock runtime's pods, recording what the gateway opens and what ends.

    ``open_readers`` counts log iterators the gateway holds; ``reader_closed``
    is set when one is closed. With ``hang_exec``, exec waits until cancelled
    and sets ``exec_cancelled`` then.
    """

    def __init__(self, runtime: MockRuntime) -> None:
        self.runtime = runtime
        self.open_readers = 0
        self.reader_closed = anyio.Event()
        self.hang_exec = False
        self.exec_cancelled = anyio.Event()

    async def logs(
        self,
        uid: str,
        container: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        previous: bool = False,
    ) -> AsyncGenerator[LogLine, None]:
        self.open_readers += 1
        try:
            async for line in self.runtime.logs(
                uid, container, follow=follow, tail=tail, since=since, previous=previous
            ):
                yield line
        finally:
            self.open_readers -= 1
            self.reader_closed.set()

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        if self.hang_exec:
            try:
                await anyio.sleep_forever()
            finally:
                self.exec_cancelled.set()
        return await self.runtime.exec(uid, container, command, time_limit)

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        return await self.runtime.stats(uid)


@dataclass
class Authorizer:
    """Admits the nodes named in ``servers``; remembers every caller it saw."""

    servers: set[str]
    callers: list[Caller] = field(default_factory=list)

    async def __call__(self, caller: Caller) -> None:
        self.callers.append(caller)
        if caller.name not in self.servers:
            raise Forbidden(
                f"node {caller.name!r} is not a server of this cluster", node=caller.name
            )


@dataclass
class Node:
    runtime: MockRuntime
    pods: TrackedPods
    authorizer: Authorizer
    address: str


@asynccontextmanager
async def pod_node() -> AsyncIterator[Node]:
    """Serve a running pod (containers app and sidecar) through a PodGateway."""
    runtime = MockRuntime(TickingClock())
    spec = PodSpec(
        uid=UID,
        name="web-0",
        namespace="default",
        workload="web",
        containers=[
            Container(name="app", image="busybox:1.36"),
            Container(name="sidecar", image="busybox:1.36"),
        ],
    )
    await runtime.create(spec)
    await runtime.start(UID)
    pods = TrackedPods(runtime)
    authorizer = Authorizer({SERVER})
    gateway = PodGateway(pods, CallVerifier(TOKEN), authorizer)
    try:
        async with serving(gateway.handler()) as address:
            yield Node(runtime, pods, authorizer, address)
    finally:
        await runtime.aclose()


@asynccontextmanager
async def remote(
    address: str, identity: NodeIdentity | None = None, token: str = TOKEN
) -> AsyncIterator[RemotePods]:
    identity = identity or NodeIdentity(SERVER, SigningKey.generate())
    async with RemotePods(NodeChannel(identity, token, address)) as pods:
        yield pods


async def collect(lines: AsyncIterator[LogLine]) -> list[LogLine]:
    return [line async for line in lines]


async def test_remote_pods_and_runtimes_offer_pod_access() -> None:
    # Static: mypy checks these assignments; at run time, the protocol's methods.
    async with remote("127.0.0.1:1") as pods:
        remote_access: PodAccess = pods
        assert isinstance(remote_access, PodAccess)
    runtime: ContainerRuntime = MockRuntime()
    local_access: PodAccess = runtime
    assert isinstance(local_access, PodAccess)


async def test_logs_match_the_runtime_with_tail_and_since() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        node.runtime.write_log(UID, "app", "one\ntwo")
        node.runtime.write_log(UID, "app", "oops", stream="stderr")
        with anyio.fail_after(WAIT):
            local = await collect(node.runtime.logs(UID, "app"))
            lines = await collect(pods.logs(UID, "app"))
            assert [(x.stream, x.line) for x in lines] == [
                ("stdout", "started app"),
                ("stdout", "one"),
                ("stdout", "two"),
                ("stderr", "oops"),
            ]
            assert lines == local  # times included, timezone and all
            assert await collect(pods.logs(UID, "app", tail=2)) == lines[2:]
            assert await collect(pods.logs(UID, "app", tail=0)) == []
            assert await collect(pods.logs(UID, "app", since=lines[1].time)) == lines[1:]
            assert await collect(pods.logs(UID, "app", since=lines[1].time, tail=1)) == lines[3:]
            sidecar = await collect(pods.logs(UID, "sidecar"))
            assert [x.line for x in sidecar] == ["started sidecar"]
        assert node.pods.open_readers == 0


async def test_the_previous_runs_logs_are_read_as_the_runtime_kept_them() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        with anyio.fail_after(WAIT):
            with pytest.raises(NotFound, match="no previous run's logs"):
                await collect(pods.logs(UID, "app", previous=True))
            node.runtime.write_log(UID, "app", "last words")
            await node.runtime.remove(UID, keep_logs=True)
            lines = await collect(pods.logs(UID, "app", previous=True))
            assert [x.line for x in lines] == ["started app", "last words"]
            assert await collect(pods.logs(UID, "app", previous=True, tail=1)) == lines[1:]


async def test_follow_streams_new_lines_until_the_client_cancels() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        with anyio.fail_after(WAIT):
            lines = pods.logs(UID, "app", follow=True)
            assert (await anext(lines)).line == "started app"
            node.runtime.write_log(UID, "app", "first new line")
            assert (await anext(lines)).line == "first new line"
            node.runtime.write_log(UID, "app", "to stderr", stream="stderr")
            line = await anext(lines)
            assert (line.stream, line.line) == ("stderr", "to stderr")
            assert node.pods.open_readers == 1

            await lines.aclose()
            await node.pods.reader_closed.wait()
        assert node.pods.open_readers == 0


async def test_follow_ends_when_the_container_exits() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        with anyio.fail_after(WAIT):
            lines = pods.logs(UID, "app", follow=True)
            assert (await anext(lines)).line == "started app"
            node.runtime.write_log(UID, "app", "last words")
            assert (await anext(lines)).line == "last words"
            node.runtime.kill(UID, "app")
            assert await collect(lines) == []
            await node.pods.reader_closed.wait()


async def test_exec_returns_exit_code_and_output() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        with anyio.fail_after(WAIT):
            echoed = await pods.exec(UID, "app", ["echo", "hello", "world"])
            assert echoed == ExecResult(exit_code=0, stdout="echo hello world")
            failing = ExecResult(exit_code=3, stdout="partial", stderr="no such file")
            node.runtime.set_exec_result("app", failing)
            assert await pods.exec(UID, "app", ["cat", "/missing"], time_limit=5) == failing


async def test_exec_in_an_exited_container_is_a_conflict() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        node.runtime.kill(UID, "app")
        with anyio.fail_after(WAIT), pytest.raises(Conflict, match="not running") as caught:
            await pods.exec(UID, "app", ["true"])
        assert caught.value.details == {"uid": UID, "container": "app"}


async def test_exec_time_limit_must_be_positive() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        with anyio.fail_after(WAIT), pytest.raises(InvalidInput) as caught:
            await pods.exec(UID, "app", ["true"], time_limit=0)
        assert caught.value.details == {"field": "time_limit"}


async def test_exec_deadline_is_the_time_limit_plus_a_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the margin the deadline is the time limit itself: a command that
    # outlives it fails the call and is cancelled on the node.
    monkeypatch.setattr(grpc_pods, "EXEC_DEADLINE_MARGIN", 0.0)
    async with pod_node() as node, remote(node.address) as pods:
        node.pods.hang_exec = True
        with anyio.fail_after(WAIT):
            with pytest.raises(Unavailable, match="not reachable"):
                await pods.exec(UID, "app", ["sleep", "1000"], time_limit=0.2)
            await node.pods.exec_cancelled.wait()


async def test_stats_of_every_container() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        busy = ContainerStats(name="app", cpu_millicores=250, memory_bytes=64 << 20, pids=7)
        node.runtime.set_stats("app", busy)
        with anyio.fail_after(WAIT):
            stats = await pods.stats(UID)
            assert list(stats) == list(await node.runtime.stats(UID))
        assert [s.name for s in stats] == ["app", "sidecar"]
        assert stats[0] == busy


async def test_unknown_pod_is_not_found() -> None:
    async with pod_node() as node, remote(node.address) as pods:
        with anyio.fail_after(WAIT):
            with pytest.raises(NotFound, match="no pod with uid 'nope'") as caught:
                await pods.stats("nope")
            assert caught.value.details == {"uid": "nope"}
            with pytest.raises(NotFound):
                await pods.exec("nope", "app", ["true"])
            with pytest.raises(NotFound):
                await collect(pods.logs("nope", "app", follow=True))
            with pytest.raises(NotFound):
                await collect(pods.logs(UID, "no-such-container"))


async def test_caller_that_is_not_a_server_is_forbidden() -> None:
    worker = NodeIdentity("worker-7", SigningKey.generate())
    async with pod_node() as node, remote(node.address, worker) as pods:
        with anyio.fail_after(WAIT):
            with pytest.raises(Forbidden, match="not a server") as caught:
                await pods.stats(UID)
            assert caught.value.details == {"node": "worker-7"}
            with pytest.raises(Forbidden):
                await pods.exec(UID, "app", ["true"])
            with pytest.raises(Forbidden):
                await collect(pods.logs(UID, "app", follow=True))
        callers = node.authorizer.callers
        assert [(c.name, c.node_id) for c in callers] == [("worker-7", worker.node_id)] * 3
        assert node.pods.open_readers == 0
        assert not node.pods.reader_closed.is_set()  # refused before the runtime was asked


async def test_wrong_join_token_is_unauthenticated() -> None:
    async with pod_node() as node, remote(node.address, token="not-the-token") as pods:
        with anyio.fail_after(WAIT):
            with pytest.raises(Unauthenticated, match="wrong join token"):
                await pods.stats(UID)
            with pytest.raises(Unauthenticated):
                await pods.exec(UID, "app", ["true"])
            with pytest.raises(Unauthenticated):
                await collect(pods.logs(UID, "app"))
        assert node.authorizer.callers == []
