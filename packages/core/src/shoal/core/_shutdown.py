"""A stop that finishes what it started: a node alone, on SIGTERM, before it exits.

A runc pod belongs to its shim, not to the agent, so it keeps running when
the agent exits, by design: the next agent on the data dir adopts it. But a
pod the operator asked to delete must not survive its agent just because the
stop was slow (a container's PID 1 that ignores SIGTERM holds its stop for
the whole grace period). So on SIGTERM a node alone first lets its own loops
finish every deletion in flight — the control loop marks the instances of a
deleting workload, the node loop stops and removes their pods and deletes the
records — and waits, bounded by the stop grace, until none is left. It
then logs one line per workload whose pods keep running, with how to stop them.

A clustered node leaves the cluster instead (see ``ShoalNode.leave``): its
pods stop and run elsewhere.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import anyio

from shoal.interfaces import (
    MOCK_RUNTIME,
    Clock,
    ContainerRuntime,
    ContainerState,
    InstanceState,
    ShoalError,
)

from ._repo import Repository

__all__ = ["finish_deletions", "report_survivors"]

log = logging.getLogger("shoal.agent")

_LOOK_EVERY = 0.1
"""Seconds between two looks at the store while deletions finish."""


async def deletions_in_flight(repo: Repository, node: str) -> list[str]:
    """Return the workloads and this node's instances that are being deleted."""
    pending = [f"workload {s.value.key}" for s in await repo.list_workloads() if s.value.deleting]
    pending += [
        f"instance {s.value.key}"
        for s in await repo.list_instances()
        if s.value.node == node and (s.value.deleting or s.value.state == InstanceState.STOPPING)
    ]
    return pending


async def finish_deletions(repo: Repository, node: str, clock: Clock, *, within: float) -> bool:
    """Wait until no deletion is in flight, while the loops carry them out.

    Args:
        repo: The node's store.
        node: This node's name.
        clock: Time for the bound.
        within: Seconds to wait at most (the stop grace, and some margin).

    Returns:
        Whether every deletion finished in time (False also when the store
        could not be read: nothing more can be done then).

    """
    pending: list[str] = []
    with anyio.move_on_after(within):
        while True:
            try:
                pending = await deletions_in_flight(repo, node)
            except ShoalError as exc:
                log.warning("cannot finish the deletions in flight: %s", exc)
                return False
            if not pending:
                return True
            await clock.sleep(_LOOK_EVERY)
    log.warning(
        "stopping with deletions unfinished after %g s: %s; the next start on this data "
        "dir finishes them",
        within,
        ", ".join(pending),
    )
    return False


async def report_survivors(
    repo: Repository, runtime: ContainerRuntime, node: str, data_dir: Path
) -> int:
    """Log one line per workload whose pods keep running after the agent; return the count.

    Never raises: a runtime or store that cannot be read is logged. The mock
    runtime's pods live in this process: none survive it, none is reported.
    """
    if runtime.name == MOCK_RUNTIME:
        return 0
    try:
        pods = await runtime.list()
        instances = {s.value.uid: s.value for s in await repo.list_instances()}
    except ShoalError as exc:
        log.warning("cannot list the pods that keep running: %s", exc)
        return 0
    running = [p for p in pods if any(c.state == ContainerState.RUNNING for c in p.containers)]
    by_workload: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pod in running:
        instance = instances.get(pod.uid)
        if instance is not None and instance.node == node:
            by_workload[instance.namespace, instance.workload].append(pod.name)
        else:
            by_workload[pod.namespace, ""].append(pod.name)
    for (namespace, workload), names in sorted(by_workload.items()):
        flag = "" if namespace == "default" else f" -n {namespace}"
        log.info(
            "%s keeps %d pod(s) running after the agent stops (%s), by design: the next "
            "agent on %s adopts them. To stop them: %sor `shoal node reset --data-dir %s` "
            "once the agent has stopped",
            f"workload {namespace}/{workload}" if workload else "a pod with no instance record",
            len(names),
            ", ".join(sorted(names)),
            data_dir,
            f"`shoal delete {workload}{flag}` before stopping the agent, " if workload else "",
            data_dir,
        )
    return len(running)
