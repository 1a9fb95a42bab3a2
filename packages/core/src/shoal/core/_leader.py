"""A server's campaign for leadership, and the loops it runs while it leads.

Servers elect one leader on a store lease (:meth:`StateStore.campaign`). The
leader runs the control loop and the membership sync, both writing through
a :class:`~shoal.core._fence.FencedStore` bound to its term, so a leader that
was deposed (its lease ran out while it was cut off) cannot write after its
successor took over. A term ends when the lease is lost, the store cannot
be reached, or the term was taken over; the server then campaigns again
after a backoff, and keeps running meanwhile.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from shoal.interfaces import (
    NO_METRICS,
    Catalogue,
    Clock,
    ClusterManager,
    Metrics,
    NotFound,
    Scheduler,
    ShoalError,
    StateStore,
    Unavailable,
)

from ._backoff import Backoff
from ._control import ControlLoop
from ._fence import FencedStore
from ._membership import MembershipSync

__all__ = ["LEADER_ELECTION", "Leader"]

log = logging.getLogger(__name__)

LEADER_ELECTION = "control-loop"


class Leader:
    """Campaigns for the leader lease of ``store`` and leads while it holds it.

    Args:
        name: this server's node name (the candidate).
        store: the cluster state.
        cluster: gossip membership, for the membership sync.
        scheduler: places instances, for the control loop.
        clock: time source.
        ttl: seconds the leader lease lives without renewal.
        resync: seconds between timer-driven passes of the membership sync (the
            control loop is woken by what changed, and resyncs every 5 minutes).
        metrics: where the control loop records, and ``shoal_leader`` says whether
            this server leads.
    """

    def __init__(
        self,
        name: str,
        store: StateStore,
        cluster: ClusterManager,
        scheduler: Scheduler,
        clock: Clock,
        *,
        ttl: float,
        resync: float,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.name = name
        self.store = store
        self.cluster = cluster
        self.scheduler = scheduler
        self.clock = clock
        self.ttl = ttl
        self.resync = resync
        self.metrics = metrics
        metrics.set(Catalogue.LEADER, 0)
        self.control: ControlLoop | None = None
        """The control loop of the current term; None when not leading."""
        self._lease: int | None = None
        """The lease of the current (or last) term, revoked before the next."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Campaign for the leader lease, run the leader's loops while holding it, and repeat.

        The lease is kept alive from the moment it is granted — also while the
        campaign waits for a previous leader's lease to run out. If it is lost
        (the store was unreachable for longer than its ttl), the control loop
        stops and the node campaigns again with a new lease. If the store
        cannot be reached, or the term was taken over (``Deposed``), the
        term ends too, and the node campaigns again after a backoff (1 s,
        doubling to 10 s, reset once it leads again): no scheduling happens
        meanwhile, and the agent keeps running.
        """
        task_status.started()
        backoff = Backoff(self.clock)
        while True:
            try:
                await self._term(backoff)
            except* NotFound:
                log.warning("%s lost its leader lease; campaigning again", self.name)
            except* Unavailable as group:
                log.warning(
                    "%s stops leading: %s; campaigning again in %g s",
                    self.name,
                    "; ".join(_messages(group)),
                    backoff.delay,
                )
                await backoff.wait()

    async def _term(self, backoff: Backoff) -> None:
        """Win the election, then run the leader's loops on writes fenced by that term.

        Returns never; it raises when the term ends (NotFound: the lease is
        gone; Unavailable: the store is unreachable, or the term was taken over).
        """
        await self._revoke_stale_lease()
        lease = self._lease = await self.store.grant_lease(self.ttl)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_lease, lease)
            leadership = await self.store.campaign(LEADER_ELECTION, self.name, lease)
            backoff.reset()
            log.info("%s leads the control loop (lease %s)", self.name, lease)
            fenced = FencedStore(self.store, leadership)
            self.control = ControlLoop(fenced, self.scheduler, self.clock, metrics=self.metrics)
            membership = MembershipSync(fenced, self.cluster, self.clock, resync=self.resync)
            self.metrics.set(Catalogue.LEADER, 1)
            try:
                tg.start_soon(membership.run)
                await self.control.run()
            finally:
                self.metrics.set(Catalogue.LEADER, 0)
                self.control = None
                with anyio.CancelScope(shield=True), contextlib.suppress(ShoalError):
                    await self.store.resign(leadership)

    async def _revoke_stale_lease(self) -> None:
        """Revoke the lease of the previous term, and the election key held by it.

        A term that ended because the store was unreachable could not resign;
        without this, the node's next campaign would wait behind its own old
        election key until that lease ran out.

        Raises:
            Unavailable: the store is still unreachable.
        """
        if self._lease is None:
            return
        with contextlib.suppress(NotFound):  # it ran out meanwhile
            await self.store.revoke(self._lease)
        self._lease = None

    async def _keep_lease(self, lease: int) -> None:
        while True:
            await self.clock.sleep(self.ttl / 3)
            await self.store.keepalive(lease)


def _messages(group: BaseExceptionGroup[Unavailable]) -> list[str]:
    """Return the messages of the errors in ``group`` and its nested groups."""
    return [
        message
        for exc in group.exceptions
        for message in (_messages(exc) if isinstance(exc, BaseExceptionGroup) else [str(exc)])
    ]
