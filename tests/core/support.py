"""Helpers for the core tests: specs, nodes, a cluster driven pass by pass, and fakes.

``FlakyStore`` injects store outages; ``FakeCluster`` is gossip a test controls.
"""

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from shoal.core import ControlLoop, LocalNodeState, ManualClock, NodeLoop, ShoalService
from shoal.interfaces import (
    Capacity,
    Compare,
    DeleteOp,
    GossipState,
    KeyValue,
    Leadership,
    ListResult,
    Member,
    MemberEvent,
    MemberEventKind,
    Node,
    PutOp,
    ShoalError,
    StateStore,
    TxnResult,
    Unavailable,
    WatchEvent,
    Workload,
    WorkloadSpec,
)
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore

T = TypeVar("T")


def spec(
    name: str = "web", replicas: int = 2, image: str = "busybox", **extra: object
) -> WorkloadSpec:
    document: dict[str, object] = {
        "name": name,
        "replicas": replicas,
        "template": {"containers": [{"name": "main", "image": image}]},
    }
    document.update(extra)
    return WorkloadSpec.model_validate(document)


def make_node(name: str, **fields: object) -> Node:
    """Return a node record; ``cpu`` and ``memory`` (quantities) set its capacity."""
    cpu, memory = fields.pop("cpu", "4"), fields.pop("memory", "8Gi")
    capacity = Capacity.model_validate({"cpu": cpu, "memory": memory})
    return Node.model_validate(
        {"name": name, "capacity": capacity, "allocatable": capacity, "runtime": "mock", **fields}
    )


@dataclass
class Cluster:
    """One control loop and one node loop per node, driven pass by pass."""

    store: MemoryStore
    clock: ManualClock
    control: ControlLoop
    service: ShoalService
    nodes: dict[str, NodeLoop] = field(default_factory=dict)
    runtimes: dict[str, MockRuntime] = field(default_factory=dict)

    async def add_node(
        self, name: str, runtime: MockRuntime | None = None, **flags: object
    ) -> NodeLoop:
        runtime = runtime or MockRuntime(self.clock)
        state = LocalNodeState(self.store, name)
        loop = NodeLoop(make_node(name, **flags), state, runtime, self.clock)
        await loop.register()
        self.nodes[name] = loop
        self.runtimes[name] = runtime
        return loop

    async def settle(self, rounds: int = 30) -> int:
        """Run control and node passes until a full round changes nothing; return the rounds."""
        for round_ in range(rounds):
            before = await self.store.revision()
            await self.control.reconcile_once()
            for loop in self.nodes.values():
                await loop.reconcile_once()
            if await self.store.revision() == before:
                return round_
        raise AssertionError(f"did not settle in {rounds} rounds")

    async def workload(self, name: str = "web") -> Workload:
        return await self.service.get_workload(name)


async def eventually(
    check: Callable[[], Awaitable[bool]],
    clock: ManualClock | None = None,
    *,
    step: float = 1.0,
) -> None:
    """Poll ``check`` until it holds, letting every task run (and ``clock`` move) in between.

    Fails after 10 s of real time.
    """
    with anyio.fail_after(10):
        while not await check():
            if clock is not None:
                clock.advance(step)
            await wait_all_tasks_blocked()


class FlakyStore:
    """A StateStore that fails every call while a test says the store is down.

    ``go_down()`` makes every operation raise Unavailable and wakes every
    watch with that error too (like a lost etcd connection); ``fail_with``
    raises another error instead; ``come_back()`` ends the outage.
    """

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.error: ShoalError | None = None
        self.outage = anyio.Event()

    def go_down(self) -> None:
        self.fail_with(Unavailable("the state store is unreachable (injected outage)"))

    def fail_with(self, error: ShoalError) -> None:
        self.error = error
        self.outage.set()

    def come_back(self) -> None:
        self.error = None
        self.outage = anyio.Event()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    async def unless_outage(self, call: Callable[[], Awaitable[T]]) -> T:
        """Return what ``call`` returns, or raise the store's error once an outage begins."""
        self.check()
        got: list[T] = []
        async with anyio.create_task_group() as race:

            async def run() -> None:
                got.append(await call())
                race.cancel_scope.cancel()

            async def outage() -> None:
                await self.outage.wait()
                race.cancel_scope.cancel()

            race.start_soon(run)
            race.start_soon(outage)
        if not got:
            raise self.error or Unavailable("the state store was unreachable (injected outage)")
        return got[0]

    async def get(self, key: str) -> KeyValue | None:
        self.check()
        return await self.inner.get(key)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        self.check()
        return await self.inner.put(key, value, expected_revision=expected_revision, lease=lease)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        self.check()
        return await self.inner.delete(key, expected_revision=expected_revision)

    async def list(self, prefix: str) -> ListResult:
        self.check()
        return await self.inner.list(prefix)

    async def revision(self) -> int:
        self.check()
        return await self.inner.revision()

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        self.check()
        return _FlakyWatch(self, self.inner.watch(prefix, start_revision))

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        self.check()
        return await self.inner.txn(compares, success, failure)

    async def grant_lease(self, ttl: float) -> int:
        self.check()
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease: int) -> None:
        self.check()
        await self.inner.keepalive(lease)

    async def revoke(self, lease: int) -> None:
        self.check()
        await self.inner.revoke(lease)

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        return await self.unless_outage(lambda: self.inner.campaign(election, candidate, lease))

    async def resign(self, leadership: Leadership) -> None:
        self.check()
        await self.inner.resign(leadership)

    async def leader(self, election: str) -> str | None:
        self.check()
        return await self.inner.leader(election)

    async def aclose(self) -> None:
        """Leave the inner store open: the test owns it."""


class _FlakyWatch:
    """A watch that raises the store's error as soon as an outage begins."""

    def __init__(self, store: FlakyStore, inner: AsyncIterator[WatchEvent]) -> None:
        self.store = store
        self.inner = inner

    def __aiter__(self) -> "_FlakyWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        return await self.store.unless_outage(lambda: anext(self.inner))


class FakeCluster:
    """A ClusterManager whose members a test sets; each change is sent to every subscriber."""

    def __init__(self, *members: Member) -> None:
        self._members = {member.name: member for member in members}
        self._streams: list[
            tuple[MemoryObjectSendStream[MemberEvent], MemoryObjectReceiveStream[MemberEvent]]
        ] = []

    @staticmethod
    def member(node: Node, state: GossipState = GossipState.ALIVE) -> Member:
        """Return the gossip member of ``node``: same name, its node id as the ``id`` tag."""
        return Member(
            name=node.name, address="198.18.0.1:7946", state=state, tags={"id": node.node_id}
        )

    def set(self, member: Member, kind: MemberEventKind) -> None:
        """Make ``member`` what gossip reports, and tell every subscriber."""
        self._members[member.name] = member
        self._emit(MemberEvent(kind=kind, members=[member]))

    def set_state(self, name: str, state: GossipState) -> None:
        """Move member ``name`` to ``state``, with the matching event."""
        self.set(self._members[name].model_copy(update={"state": state}), self.kind(state))

    @staticmethod
    def kind(state: GossipState) -> MemberEventKind:
        """Return the event gossip sends when a member moves to ``state``."""
        return {
            GossipState.ALIVE: MemberEventKind.JOINED,
            GossipState.SUSPECT: MemberEventKind.SUSPECT,
            GossipState.FAILED: MemberEventKind.FAILED,
            GossipState.LEFT: MemberEventKind.LEFT,
        }[state]

    def forget(self, name: str) -> None:
        """Drop member ``name`` from the list (as Serf does when it reaps a member)."""
        member = self._members.pop(name)
        self._emit(MemberEvent(kind=MemberEventKind.LEFT, members=[member]))

    def _emit(self, event: MemberEvent) -> None:
        for send, _ in self._streams:
            send.send_nowait(event)

    async def local_node(self) -> Member:
        await checkpoint()
        return next(iter(self._members.values()))

    async def members(self) -> Sequence[Member]:
        await checkpoint()
        return list(self._members.values())

    def events(self) -> AsyncIterator[MemberEvent]:
        send, receive = anyio.create_memory_object_stream[MemberEvent](math.inf)
        self._streams.append((send, receive))
        return receive

    async def set_tags(self, tags: dict[str, str]) -> None:
        """Merge ``tags`` into the local member's (the first given), as an update."""
        local = await self.local_node()
        self.set(local.model_copy(update={"tags": {**local.tags, **tags}}), MemberEventKind.UPDATED)

    async def join(self, addresses: Sequence[str]) -> int:
        raise NotImplementedError

    async def leave(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> "FakeCluster":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for send, receive in self._streams:
            send.close()
            receive.close()
        await checkpoint()
