"""AgentSupervisor: keeps one ``serf agent`` running and connected over RPC.

The supervisor owns the agent for as long as it runs::

    start agent ─▶ wait for "running" ─▶ RPC connect + auth ─▶ stream events
         ▲                                                          │
         └── backoff (doubling, reset after a stable run) ◀── agent died / RPC lost

The first start is different: its failure (no binary, a port in use, a bad
key file) is raised to whoever started the supervisor, so a node that cannot
gossip does not start. Later failures are logged with the agent's last output
and retried. :meth:`AgentSupervisor.expect_exit` tells it that the agent is
about to exit on purpose (a graceful leave), so it is not restarted.

What the agent's events mean, and what to do on each (re)connection, is the
owner's business: the supervisor calls ``on_connect(client, restarted)``
once the event stream is subscribed, then ``on_record(record)`` per record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus

from shoal.interfaces import Clock, ShoalError, Unavailable

from ._serf_agent import AgentConfig, AgentProcess
from ._serf_records import SerfEventRecord
from ._serf_rpc import SerfRpcClient

__all__ = ["AgentSupervisor"]

log = logging.getLogger("shoal.cluster.serf")

_MAX_BACKOFF = 30.0
_STABLE_RUN = 60.0  # an agent that ran this long resets the restart backoff


class AgentSupervisor:
    """Runs, watches and restarts one serf agent; see the module docstring.

    Args:
        config: How to start the agent.
        event_filter: The ``stream`` filter to subscribe with.
        on_connect: Called with the client (and whether this is a restart)
            once the stream is subscribed, before calls may use the client.
        on_record: Called with each streamed record.
        clock: Time source for the backoff.
        startup_timeout: Seconds for the agent to come up, and for calls to
            wait for a restarting agent.
        restart_delay: Seconds before the first restart; doubles up to 30 s.

    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        event_filter: str,
        on_connect: Callable[[SerfRpcClient, bool], Awaitable[None]],
        on_record: Callable[[SerfEventRecord], None],
        clock: Clock,
        startup_timeout: float,
        restart_delay: float,
    ) -> None:
        self._config = config
        self._event_filter = event_filter
        self._on_connect = on_connect
        self._on_record = on_record
        self._clock = clock
        self._startup_timeout = startup_timeout
        self._restart_delay = restart_delay
        self._agent: AgentProcess | None = None
        self._client: SerfRpcClient | None = None
        self._changed = anyio.Event()  # set (and replaced) whenever the connection changes
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()
        self._started = False  # the first agent came up: later failures restart it
        self._stopping = False
        self.restarts = 0
        """How many times a dead agent was restarted."""

    @property
    def pid(self) -> int | None:
        """The agent's process id while it runs, else None."""
        agent = self._agent
        return None if agent is None or agent.returncode is not None else agent.pid

    def describe(self) -> str:
        """Return the agent's state and last output, for error messages."""
        return self._agent.describe() if self._agent else "the serf agent did not start"

    async def run(
        self, group: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Supervise until :meth:`stop`; start with ``await group.start(supervisor.run, group)``.

        ``group`` runs the tasks that drain each agent's output.

        Raises:
            Unavailable: the first agent did not come up (before ``started``).
            Forbidden: the first agent refused the RPC auth key.

        """
        delay = self._restart_delay
        with anyio.CancelScope() as self._scope:
            try:
                while True:
                    began = self._clock.monotonic()
                    try:
                        await self._run_once(group, None if self._started else task_status)
                    except ShoalError as exc:
                        if not self._started:
                            raise
                        log.warning("%s: restart failed: %s", self._config.name, exc)
                    if self._stopping:
                        break
                    if self._clock.monotonic() - began > _STABLE_RUN:
                        delay = self._restart_delay
                    log.warning("%s; restarting it in %g s", self.describe(), delay)
                    await self._clock.sleep(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    self.restarts += 1
            finally:
                self._done.set()

    def expect_exit(self) -> None:
        """Do not restart the agent when it next exits (it is leaving on purpose)."""
        self._stopping = True
        self._notify()

    async def stop(self) -> None:
        """Stop supervising and stop the agent; wait until it is gone."""
        self._stopping = True
        self._notify()
        if self._scope is not None:
            self._scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._done.wait()

    async def client(self, action: str) -> SerfRpcClient:
        """Return the live RPC client, waiting up to ``startup_timeout`` for a restart.

        Raises:
            Unavailable: the agent is stopped, or did not come back in time.

        """
        with anyio.move_on_after(self._startup_timeout):
            while not self._stopping:
                client = self._client
                if client is not None and not client.closed:
                    return client
                await self._changed.wait()
            raise Unavailable(f"cannot {action}: serf agent {self._config.name!r} was stopped")
        raise Unavailable(
            f"cannot {action}: {self.describe()}; the supervisor keeps restarting it",
            node=self._config.name,
        )

    async def _run_once(self, group: TaskGroup, task_status: TaskStatus[None] | None) -> None:
        """Run one agent until it dies or the connection to it is lost."""
        config = self._config
        agent = self._agent = await AgentProcess.start(config)
        group.start_soon(agent.drain_output)
        try:
            with anyio.move_on_after(self._startup_timeout):
                await agent.wait_ready()
            if not agent.ready.is_set():
                raise Unavailable(
                    agent.describe(f"but did not come up within {self._startup_timeout:g} s"),
                    node=config.name,
                )
            async with (
                SerfRpcClient.connect(config.rpc_addr, auth_key=config.rpc_auth) as client,
                client.stream(self._event_filter) as stream,
            ):
                await self._on_connect(client, task_status is None)
                self._client = client
                self._notify()
                if task_status is None:
                    log.info("serf agent %s is running again (pid %d)", config.name, agent.pid)
                else:
                    self._started = True
                    task_status.started()
                try:
                    async for record in stream:
                        self._on_record(record)
                except Unavailable:
                    pass  # the agent exited or hung up: restart it (unless stopping)
        finally:
            self._client = None
            self._notify()
            await agent.stop()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
