"""Helpers for tests that run real ``serf agent`` processes on loopback.

Every agent gets free ports on 127.0.0.1 and a data dir under the test's
``serf_root``. Tests enter their clusters with ``async with`` (a SerfCluster
must be exited by the task that entered it); the ``serf_root`` fixture's
finalizer then SIGKILLs any serf process still running with a data dir under
that root, so a failing test never leaves an agent behind.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from shoal.cluster import MemberEvents, SerfCluster, new_gossip_key, new_join_token
from shoal.interfaces import GossipState, Member, MemberEvent, MemberEventKind
from tests.ports import free_tcp_udp_port

SERF = shutil.which("serf")
WAIT = 10.0
"""Bound on a membership change that gossip spreads (serf coalesces events for up to 3 s)."""
FAILURE_WAIT = 30.0
"""Bound on failure detection (local profile: suspicion, then coalescing; ~8 s here)."""


def kill_agents_under(root: Path) -> list[int]:
    """SIGKILL every serf process whose command line mentions ``root``; return their pids."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone already, or not ours to read
        if argv and argv[0].endswith(b"serf") and str(root).encode() in b" ".join(argv):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(int(proc.name))
    return killed


class SerfNodes:
    """Starts SerfClusters that share one gossip key and RPC auth key, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gossip_key = new_gossip_key()
        self.rpc_auth = new_join_token()
        self.binds: dict[str, str] = {}
        self.rpc_addrs: dict[str, str] = {}

    def make(self, name: str, **overrides: Any) -> SerfCluster:
        """Return a SerfCluster for ``name`` on fresh ports (not started)."""
        self.binds[name] = f"127.0.0.1:{free_tcp_udp_port()}"
        self.rpc_addrs[name] = f"127.0.0.1:{free_tcp_udp_port()}"
        settings: dict[str, Any] = {
            "bind": self.binds[name],
            "rpc_addr": self.rpc_addrs[name],
            "rpc_auth": self.rpc_auth,
            "encrypt_key": self.gossip_key,
            "profile": "local",
            "startup_timeout": 10.0,
        }
        settings.update(overrides)
        return SerfCluster(name, self.root / name, **settings)

    @asynccontextmanager
    async def cluster(
        self, *names: str, tags: dict[str, dict[str, str]] | None = None, **overrides: Any
    ) -> AsyncIterator[list[SerfCluster]]:
        """Start one agent per name; each joins all the earlier ones.

        Joining every earlier member (not just the first) makes each pair
        exchange state over TCP, so the test does not wait on UDP gossip, which
        a loaded machine may drop (memberlist's periodic full sync is 15 s away).
        """
        async with AsyncExitStack() as stack:
            started: list[SerfCluster] = []
            for name in names:
                join = [self.binds[node.name] for node in started]
                node = self.make(name, tags=(tags or {}).get(name), join=join, **overrides)
                started.append(await stack.enter_async_context(node))
            yield started


async def until_members(
    cluster: SerfCluster,
    events: MemberEvents,
    check: Callable[[dict[str, Member]], bool],
    *,
    within: float = WAIT,
) -> dict[str, Member]:
    """Return ``cluster``'s members once ``check`` holds, re-checking after each event.

    ``events`` must be subscribed before the change being waited for.
    """
    with anyio.fail_after(within):
        while True:
            members = {member.name: member for member in await cluster.members()}
            if check(members):
                return members
            await anext(events)


async def next_event_about(
    events: MemberEvents, name: str, kind: MemberEventKind, *, within: float = WAIT
) -> MemberEvent:
    """Return the next ``kind`` event that names member ``name``."""
    with anyio.fail_after(within):
        async for event in events:
            if event.kind == kind and name in {member.name for member in event.members}:
                return event
    raise AssertionError(f"the event stream ended before a {kind} event about {name}")


async def until_all_see_each_other(clusters: Sequence[SerfCluster]) -> None:
    """Return once every cluster lists every other one alive (gossip has settled)."""
    names = [cluster.name for cluster in clusters]
    for cluster in clusters:
        await until_members(cluster, cluster.events(), all_alive(names))


def all_alive(names: Sequence[str]) -> Callable[[dict[str, Member]], bool]:
    """Return a check that every one of ``names`` is a member and alive."""

    def check(members: dict[str, Member]) -> bool:
        return all(n in members and members[n].state == GossipState.ALIVE for n in names)

    return check
