"""SerfCluster: gossip membership and failure detection from a supervised Serf agent.

Each node runs one ``serf agent`` subprocess (configured by
:class:`~shoal.cluster.serf._serf_agent.AgentConfig`, kept running by
:class:`~shoal.cluster.serf._serf_supervisor.AgentSupervisor`) and talks to it over
Serf's RPC protocol (:class:`~shoal.cluster.SerfRpcClient`).

Every member event the agent streams becomes a
:class:`~shoal.interfaces.MemberEvent` fanned out to each subscriber
registered before it (:class:`~shoal.cluster._fanout.EventFanout`, the same
promise :class:`~shoal.cluster.StaticCluster` keeps). Serf's agent coalesces
member events for up to 3 s, so they arrive in batches. After a restart,
SerfCluster compares the agent's member list with what subscribers were told
and emits the differences, plus a ``joined`` event for this node: its agent
re-joined the gossip (through the snapshot file, or the addresses of earlier
successful joins if the snapshot found nobody).

How Serf's statuses and events map onto Shoal's is in
:mod:`shoal.cluster.serf._serf_membership`.

:meth:`SerfCluster.leave` is graceful: the agent tells the cluster, which
sees this node as left (not failed), and exits; the supervisor does not
restart it. Closing without leaving stops the agent with SIGTERM, which Serf
treats as a crash: the others see this node failed until it comes back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from shoal.cluster._fanout import EventFanout, MemberEvents
from shoal.cluster._secrets import check_gossip_key
from shoal.cluster._tags import LEAVING_TAG, check_tags
from shoal.interfaces import (
    Clock,
    GossipState,
    InvalidInput,
    Member,
    MemberEvent,
    MemberEventKind,
    ShoalError,
    SystemClock,
    Unavailable,
)

from ._serf_agent import AgentConfig, find_serf_binary, timing_profile
from ._serf_membership import MEMBER_EVENTS, event_kind, membership_changes, to_member
from ._serf_records import MemberEventRecord, SerfEventRecord
from ._serf_rpc import SerfRpcClient
from ._serf_supervisor import AgentSupervisor
from ._serf_wire import split_host_port

__all__ = ["SerfCluster"]

log = logging.getLogger("shoal.cluster.serf")


class SerfCluster:
    """A :class:`~shoal.interfaces.ClusterManager` backed by a supervised ``serf agent``.

    Use it as an async context manager: entering starts the agent and waits
    until its RPC answers (and joins ``join``, if given); leaving stops it.

    Args:
        name: This node's name, unique in the cluster.
        data_dir: Where the agent's config, keyring, snapshot and tags live.
        bind: Gossip address to bind (TCP and UDP), ``host:port``.
        advertise: Gossip address other members should use, if not ``bind``.
        rpc_addr: The agent's RPC address; keep it on loopback.
        rpc_auth: The agent's RPC auth key (required: the RPC controls the node).
        encrypt_key: The cluster's gossip key (base64 of 32 bytes); None
            gossips in the clear.
        tags: Tags to publish from the start (node id, role, addresses, ...).
        serf_binary: The serf executable, a name on PATH or a path.
        join: Gossip addresses of members to join once started.
        profile: Serf's timing profile; defaults to ``local`` (failure
            detection in seconds) when ``bind`` is loopback, else ``lan``.
        log_level: The agent's log level (its output goes to the
            ``shoal.cluster.serf`` logger).
        clock: Time source for restart backoff.
        startup_timeout: Seconds to wait for the agent to come up, and for
            calls to wait for a restarting agent.
        restart_delay: Seconds before restarting a dead agent; doubles while
            it keeps dying, up to 30 s.

    Raises:
        InvalidInput: an argument is malformed; the message names it.

    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike[str],
        *,
        bind: str = "127.0.0.1:7946",
        advertise: str | None = None,
        rpc_addr: str = "127.0.0.1:7373",
        rpc_auth: str,
        encrypt_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        serf_binary: str = "serf",
        join: Sequence[str] = (),
        profile: str | None = None,
        log_level: str = "info",
        clock: Clock | None = None,
        startup_timeout: float = 15.0,
        restart_delay: float = 1.0,
    ) -> None:
        if not name or any(ch.isspace() for ch in name):
            raise InvalidInput(f"node name {name!r} must be non-empty, no spaces", field="name")
        split_host_port(bind, field="bind")
        split_host_port(rpc_addr, field="rpc_addr")
        if not rpc_auth:
            raise InvalidInput(
                "rpc_auth must not be empty: anyone who reaches the agent's RPC port "
                "can make the node leave or join another cluster",
                field="rpc_auth",
            )
        self._name = name
        self._tags = check_tags(dict(tags or {}))
        self._config = AgentConfig(
            binary=serf_binary,
            name=name,
            data_dir=Path(data_dir),
            bind=bind,
            advertise=advertise,
            rpc_addr=rpc_addr,
            rpc_auth=rpc_auth,
            encrypt_key=None if encrypt_key is None else check_gossip_key(encrypt_key),
            profile=timing_profile(bind, profile),
            log_level=log_level,
        )
        self._seeds = list(join)
        self._timing = (clock or SystemClock(), startup_timeout, restart_delay)
        self._fanout = EventFanout()
        self._known: dict[str, Member] = {}
        self._group: TaskGroup | None = None
        self._supervisor: AgentSupervisor | None = None
        self._leaving = False
        self._left_view: list[Member] | None = None
        self._closed = False

    @property
    def name(self) -> str:
        """This node's name."""
        return self._name

    @property
    def agent_pid(self) -> int | None:
        """The serf agent's process id while it runs, else None."""
        return None if self._supervisor is None else self._supervisor.pid

    @property
    def restarts(self) -> int:
        """How many times the supervisor restarted a dead agent."""
        return 0 if self._supervisor is None else self._supervisor.restarts

    async def __aenter__(self) -> Self:
        if self._group is not None or self._closed:
            raise RuntimeError("a SerfCluster is entered once")
        config = replace(self._config, binary=find_serf_binary(self._config.binary))
        config.prepare(self._tags)
        clock, startup_timeout, restart_delay = self._timing
        self._supervisor = AgentSupervisor(
            config,
            event_filter=MEMBER_EVENTS,
            on_connect=self._on_connect,
            on_record=self._on_record,
            clock=clock,
            startup_timeout=startup_timeout,
            restart_delay=restart_delay,
        )
        group = self._group = anyio.create_task_group()
        await group.__aenter__()
        try:
            await group.start(self._supervisor.run, group)
            if self._seeds:
                await self._join_at_start(self._seeds)
        except BaseException as exc:
            await self.aclose()
            group.cancel_scope.cancel()
            await self._exit_group(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded: in a cancelled scope, a checkpoint inside aclose() would
        # raise before the task group is exited, leaving its cancel scope open.
        with anyio.CancelScope(shield=True):
            await self.aclose()
        await self._exit_group(exc_type, exc, tb)

    async def _exit_group(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        group.cancel_scope.cancel()
        try:
            await group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as raised:
            # The group wraps what the `async with` body raised; let that through as is.
            if exc is None or raised.exceptions != (exc,):
                raise

    async def local_node(self) -> Member:
        """Return this node as its agent reports it (``left`` once it left).

        Raises:
            Unavailable: the agent is not running and did not come back in time.

        """
        for member in await self.members():
            if member.name == self._name:
                return member
        raise Unavailable(f"the serf agent does not list its own node {self._name!r}")

    async def members(self) -> Sequence[Member]:
        """Return every member the agent knows, failed and left ones included.

        After :meth:`leave` this is the last view, with this node left.

        Raises:
            Unavailable: the agent is not running and did not come back in time.

        """
        if self._left_view is not None:
            await anyio.lowlevel.checkpoint()
            return [member.model_copy(deep=True) for member in self._left_view]
        client = await self._rpc("list members")
        return [to_member(member) for member in await client.members()]

    def events(self) -> MemberEvents:
        """Subscribe to membership changes from this call on.

        Returns:
            An async iterator of events that ends when the cluster manager closes.

        """
        return self._fanout.subscribe()

    async def set_tags(self, tags: dict[str, str]) -> None:
        """Merge ``tags`` into this node's tags; every member sees an ``updated`` event.

        Raises:
            InvalidInput: the merged tags exceed what Serf can carry (512 bytes).
            Unavailable: the agent is not running, or this node left.

        """
        merged = check_tags({**self._tags, **tags})
        client = await self._rpc("set tags")
        await client.update_tags(tags)
        self._tags = merged

    async def join(self, addresses: Sequence[str]) -> int:
        """Join the cluster through any of ``addresses``; return how many answered.

        Raises:
            Unavailable: none could be joined, e.g. for a gossip key mismatch
                (the message names the cause), or the agent is not running.

        """
        if not addresses:
            await anyio.lowlevel.checkpoint()
            return 0
        client = await self._rpc("join")
        joined = await client.join(addresses)
        self._seeds = list(dict.fromkeys([*self._seeds, *addresses]))
        return joined

    async def leave(self) -> None:
        """Leave gracefully: the others see this node left, and its agent exits.

        Leaving twice is a no-op. Serf's agent shuts down after a leave even
        when the leave failed, so this node is out of the cluster either way.

        Raises:
            Unavailable: the agent is not running, the cluster manager is
                closed, or the agent could not announce the leave (the
                others then see this node failed).

        """
        if self._left_view is not None:
            await anyio.lowlevel.checkpoint()
            return
        client = await self._rpc("leave")
        members = [to_member(member) for member in await client.members()]
        self._leaving = True
        assert self._supervisor is not None  # _rpc() checked
        self._supervisor.expect_exit()
        # Say goodbye in the tags first: a leader that sees this node failed
        # before Serf's leave intent reaches it still knows it left. Best
        # effort: the leave itself must happen whatever becomes of the tag.
        try:
            await client.update_tags({LEAVING_TAG: "1"})
            self._tags[LEAVING_TAG] = "1"
        except ShoalError as exc:
            log.warning("serf agent %s: cannot tag its leave (%s); leaving anyway", self._name, exc)
        try:
            await client.leave()
        finally:
            local = next(m for m in members if m.name == self._name)
            local = local.model_copy(update={"state": GossipState.LEFT, "tags": dict(self._tags)})
            self._left_view = [local if m.name == self._name else m for m in members]
            self._emit(MemberEventKind.LEFT, [local])

    async def aclose(self) -> None:
        """Stop the agent (SIGTERM: no graceful leave) and end every event iterator.

        Later calls do nothing.
        """
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        self._fanout.close()  # first: a cancelled close still ends the iterators
        if self._supervisor is not None:
            await self._supervisor.stop()

    # -- what the supervisor reports ---------------------------------------------

    async def _on_connect(self, client: SerfRpcClient, restarted: bool) -> None:
        await self._resync(client, restarted=restarted)
        if restarted:
            await self._rejoin(client)

    def _on_record(self, record: SerfEventRecord) -> None:
        if isinstance(record, MemberEventRecord):
            self._on_member_event(record)

    def _on_member_event(self, record: MemberEventRecord) -> None:
        members = [to_member(member) for member in record.members]
        if record.event == "member-reap":
            for member in members:
                self._known.pop(member.name, None)
            return
        by_kind: dict[MemberEventKind, list[Member]] = {}
        for member in members:
            kind = event_kind(record.event, member)
            if kind is None:
                continue
            if kind is MemberEventKind.LEFT and self._leaving and member.name == self._name:
                continue  # leave() announces this node's departure itself, once.
            by_kind.setdefault(kind, []).append(member)
        for kind, some in by_kind.items():
            self._emit(kind, some)

    async def _resync(self, client: SerfRpcClient, *, restarted: bool) -> None:
        """Tell subscribers what changed while no agent was streaming events."""
        current = [to_member(member) for member in await client.members()]
        rejoined = self._name if restarted else None
        for kind, members in membership_changes(self._known, current, rejoined=rejoined).items():
            self._emit(kind, members)

    async def _rejoin(self, client: SerfRpcClient) -> None:
        """Join earlier seeds if the restarted agent's snapshot found nobody."""
        members = await client.members()
        if self._seeds and all(member.name == self._name for member in members):
            try:
                await client.join(self._seeds)
            except Unavailable as exc:
                log.warning("serf agent %s could not rejoin after a restart: %s", self._name, exc)

    async def _join_at_start(self, addresses: Sequence[str]) -> None:
        """Join ``addresses``; fail only if the agent knows no other member afterwards."""
        client = await self._rpc("join")
        try:
            await client.join(addresses)
        except Unavailable as exc:
            others = [m for m in await client.members() if m.name != self._name]
            if not any(m.status == "alive" for m in others):
                raise
            log.warning("serf agent %s: %s (rejoined known members instead)", self._name, exc)

    async def _rpc(self, action: str) -> SerfRpcClient:
        """Return the live RPC client, waiting a while for a restarting agent."""
        if self._closed:
            raise Unavailable(f"cannot {action}: the serf cluster manager is closed")
        if self._leaving or self._left_view is not None:
            raise Unavailable(f"cannot {action}: node {self._name!r} left the cluster")
        if self._supervisor is None:
            raise Unavailable(f"cannot {action}: enter the SerfCluster with `async with` first")
        return await self._supervisor.client(action)

    def _emit(self, kind: MemberEventKind, members: list[Member]) -> None:
        for member in members:
            self._known[member.name] = member
        self._fanout.emit(MemberEvent(kind=kind, members=members))
