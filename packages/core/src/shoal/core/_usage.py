"""The usage sampler: every 10 s, this node's instances' CPU, memory and restarts.

Each round asks the runtime for the stats of every running instance on this
node (from the node loop's cache: no store read), sums its containers into one
:class:`~shoal.interfaces.UsageSample` keyed 'namespace/name'; an instance on
the node that does not run (crashed, waiting out its restart backoff) gets a
sample of no use and its restarts, so its history counts them and shows it;
then one sample for the node (the sum over its instances; restarts summed
over all of them), and hands the round to the node's
:class:`~shoal.interfaces.UsageHistory`, which rolls minutes up and keeps
itself under its cap. Rounds fall on whole multiples of the interval on the
node's clock, so a test drives them with a manual clock.

A pod that vanished between the cache and the stats call is skipped for that
round; a history that cannot be written is logged once per kind of failure,
any other error of a round with its traceback, and the next round tries
again: sampling never stops the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import anyio
from anyio.abc import TaskStatus

from shoal.interfaces import (
    USAGE_FINE_STEP,
    Clock,
    Instance,
    InstanceState,
    PodAccess,
    ShoalError,
    UsageHistory,
    UsageKind,
    UsageQuery,
    UsageRange,
    UsageSample,
    UsageSeries,
)

__all__ = ["UsageSampler", "instance_usage_key", "limits_of", "read_usage"]

log = logging.getLogger(__name__)


def instance_usage_key(namespace: str, name: str) -> str:
    """Return the key an instance's usage series is stored under."""
    return f"{namespace}/{name}"


def limits_of(instance: Instance) -> tuple[int, int]:
    """Return the instance's CPU (millicores) and memory (bytes) limits.

    Each is 0 where any container has none (the pod as a whole is then unbounded).
    """
    containers = instance.template.containers
    cpu = [c.resources.limits.cpu for c in containers]
    memory = [c.resources.limits.memory for c in containers]
    return (
        0 if not cpu or 0 in cpu else int(sum(cpu)),
        0 if not memory or 0 in memory else int(sum(memory)),
    )


class UsageSampler:
    """Samples this node's instances into its usage history every ``interval`` seconds.

    Args:
        node: This node's name (the key of its own series).
        pods: The runtime (its ``stats``).
        history: Where samples go.
        clock: The node's clock: sample times and the wait between rounds.
        instances: Returns the instances placed on this node, as the node loop's cache holds them.
        interval: Seconds between rounds (USAGE_FINE_STEP).
        concurrency: Most stats calls at once (runc's take ~0.1 s each to measure CPU).
    """

    def __init__(
        self,
        node: str,
        pods: PodAccess,
        history: UsageHistory,
        clock: Clock,
        instances: Callable[[], Sequence[Instance]],
        *,
        interval: float = USAGE_FINE_STEP,
        concurrency: int = 8,
    ) -> None:
        self.node = node
        self.pods = pods
        self.history = history
        self.clock = clock
        self.instances = instances
        self.interval = interval
        self.rounds = 0
        """Rounds recorded so far (tests wait on it)."""
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._failure = ""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sample on every whole multiple of ``interval``, until cancelled; never returns."""
        task_status.started()
        while True:
            await self.clock.sleep(self.interval - self.clock.now().timestamp() % self.interval)
            try:
                await self.sample_once()
            except ShoalError as exc:
                if str(exc) != self._failure:
                    log.warning("usage history of node %s not recorded: %s", self.node, exc)
                self._failure = str(exc)
            except Exception:
                # Charts must not take the node down (a cgroup file gone mid-read):
                # this round is a gap, the next one samples again.
                log.exception("usage sampling of node %s failed", self.node)
                self._failure = ""
            else:
                self._failure = ""

    async def sample_once(self) -> list[UsageSample]:
        """Take one round of samples and record it; return it.

        Raises:
            Unavailable: the history cannot be written.
        """
        at = self.clock.now().replace(microsecond=0)
        mine = list(self.instances())
        running = [i for i in mine if i.state == InstanceState.RUNNING and i.container_ids]
        samples: list[UsageSample] = []
        async with anyio.create_task_group() as tg:
            for instance in running:
                tg.start_soon(self._sample, instance, at, samples)
        sampled = {s.key for s in samples}
        for instance in mine:  # not running (or gone from the runtime): no use, its restarts
            key = instance_usage_key(instance.namespace, instance.name)
            if key not in sampled:
                samples.append(
                    UsageSample(kind="instance", key=key, at=at, restarts=instance.restart_count)
                )
        samples.sort(key=lambda s: s.key)
        samples.append(
            UsageSample(
                kind="node",
                key=self.node,
                at=at,
                cpu_millicores=sum(s.cpu_millicores for s in samples),
                memory_bytes=sum(s.memory_bytes for s in samples),
                restarts=sum(i.restart_count for i in mine),
            )
        )
        await self.history.record(samples)
        self.rounds += 1
        return samples

    async def _sample(self, instance: Instance, at: datetime, into: list[UsageSample]) -> None:
        async with self._limiter:
            try:
                stats = await self.pods.stats(instance.uid)
            except ShoalError:
                return  # stopped or removed since the cache saw it: a gap, not an error
        into.append(
            UsageSample(
                kind="instance",
                key=instance_usage_key(instance.namespace, instance.name),
                at=at,
                cpu_millicores=sum(s.cpu_millicores for s in stats),
                memory_bytes=sum(s.memory_bytes for s in stats),
                restarts=instance.restart_count,
            )
        )


async def read_usage(
    history: UsageQuery,
    kind: UsageKind,
    name: str,
    namespace: str,
    node: str,
    span: UsageRange,
    now: datetime,
    limits: tuple[int, int],
) -> UsageSeries:
    """Return the series of an instance (``namespace``/``name``) or a node (``name``)."""
    key = name if kind == "node" else instance_usage_key(namespace, name)
    step, points = await history.query(kind, key, span, now)
    return UsageSeries(
        kind=kind,
        name=name,
        namespace="" if kind == "node" else namespace,
        node=node,
        range=span,
        step_seconds=step,
        cpu_limit_millicores=limits[0],
        memory_limit_bytes=limits[1],
        points=points,
    )
