"""``shoal node reset``: remove from the host everything one data dir's node left running.

Pods outlive their agent by design (each container belongs to its shim), so
an agent that is stopped for good leaves containers, shims, rootfs mounts,
network namespaces, port rules and a bridge behind. Reset removes them all
through the runtime's own code, the same that ``shoal delete`` ends in:

1. refuse a path that is not a Shoal data dir (no ``node.key``: nothing is
   touched) and a data dir an agent runs on (its lock is held: the pid is named);
2. hold the data dir's lock, so no agent starts on it meanwhile;
3. stop (SIGTERM, then SIGKILL after ``grace``) and remove every pod of its
   runtime: containers, shims, mounts, logs, network namespaces and port rules
   (a node of ``--runtime cri``: its pods in containerd, found by the owner and
   endpoint its runtime noted in ``cri/runtime.json``);
   then what a crash may have left half-made (an attachment without a pod, a
   runc container without a pod directory);
4. delete its bridge when no interface is attached any more, and release the
   bridge and subnet in the host's registry.

The desired state stays in the data dir (``state.db``): an agent started on
it again runs its workloads again. Delete the data dir to forget them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from shoal.interfaces import (
    NODE_KEY_FILE,
    ContainerRuntime,
    DataDirLock,
    InvalidInput,
    PodStatus,
    ShoalError,
    Unavailable,
)
from shoal.runtime import (
    BridgeNetworking,
    CriRuntime,
    HostNetworks,
    ImageStore,
    OciCliRuntime,
    PodNetworking,
    claimed_networking,
)

__all__ = ["ResetReport", "reset_data_dir"]

log = logging.getLogger(__name__)

RESET_CONCURRENCY = 16
"""How many pods a reset stops at once."""


@dataclass
class ResetReport:
    """What a reset removed."""

    data_dir: Path
    """The data dir that was reset."""
    pods: list[str] = field(default_factory=list)
    """Names of the pods stopped and removed."""
    leftovers: list[str] = field(default_factory=list)
    """What a crash had left half-made and was removed too (attachments, runc containers)."""
    bridge: str | None = None
    """The bridge released in the host's registry, if the data dir had one."""
    bridge_deleted: bool = False
    """Whether the bridge interface was deleted (it is kept while something is attached)."""


async def reset_data_dir(
    data_dir: Path,
    *,
    binary: str = "runc",
    grace: float = 10.0,
    registry: HostNetworks | None = None,
) -> ResetReport:
    """Stop and remove everything the node on ``data_dir`` runs on this host.

    Args:
        data_dir: The node's data dir.
        binary: The OCI runtime the node used (its state is under ``runtime/runc``).
        grace: Seconds a pod has to exit after SIGTERM before SIGKILL.
        registry: The host's network registry; the real one by default.

    Raises:
        InvalidInput: ``data_dir`` is not a Shoal data dir; nothing was touched.
        Unavailable: an agent runs on it (stop it first), or its pods need
            root and the runtime to be removed.
        RuntimeFailure: something could not be removed; the message says what.

    """
    data_dir = _checked(data_dir)
    report = ResetReport(data_dir)
    registry = registry if registry is not None else HostNetworks()
    with DataDirLock(data_dir):
        networking = claimed_networking(data_dir, registry)
        cri = CriRuntime.of_root(data_dir / "cri")
        if cri is not None:  # a node of --runtime cri: its pods are in containerd
            if os.geteuid() != 0:
                raise Unavailable(
                    f"the pods of {data_dir} can only be removed as root: run the reset as root"
                )
            await _remove_cri_pods(cri, grace, report)
        if (data_dir / "runtime").is_dir() or isinstance(networking, BridgeNetworking):
            if os.geteuid() != 0:
                raise Unavailable(
                    f"the pods of {data_dir} can only be removed as root: run the reset as root"
                )
            await _remove_pods(data_dir, binary, grace, networking, report)
        claim = registry.owned_by(data_dir)
        if claim is not None and isinstance(networking, BridgeNetworking):
            report.bridge = claim.bridge
            report.bridge_deleted = await _delete_idle_bridge(networking)
            registry.release(data_dir)
    return report


def _checked(data_dir: Path) -> Path:
    """Return the data dir resolved, once it is known to be a Shoal data dir."""
    if not (data_dir / NODE_KEY_FILE).is_file():
        raise InvalidInput(
            f"{data_dir} is not a Shoal data dir (it has no {NODE_KEY_FILE}): nothing was "
            "touched; give the --data-dir the agent ran with",
            data_dir=str(data_dir),
        )
    return data_dir.resolve()


async def _remove_pods(
    data_dir: Path,
    binary: str,
    grace: float,
    networking: PodNetworking,
    report: ResetReport,
) -> None:
    network = networking if isinstance(networking, BridgeNetworking) else None
    runtime = OciCliRuntime(
        ImageStore(data_dir / "images"), data_dir / "runtime", binary=binary, network=network
    )
    async with runtime:
        await _stop_and_remove(runtime, grace, report)
        for name in await runtime.runc.states():
            await runtime.runc.delete(name)
            report.leftovers.append(f"runc container {name}")
    if network is not None:
        for uid in await network.attached():
            await network.detach(uid)
            report.leftovers.append(f"network attachment of pod {uid}")


async def _remove_cri_pods(runtime: CriRuntime, grace: float, report: ResetReport) -> None:
    """Stop and remove the pods the node's CRI runtime noted as its own (by owner label)."""
    async with runtime:
        await _stop_and_remove(runtime, grace, report)


async def _stop_and_remove(runtime: ContainerRuntime, grace: float, report: ResetReport) -> None:
    """Stop and remove every pod of ``runtime``, at most RESET_CONCURRENCY at once.

    At once, not one after another: pods that ignore SIGTERM each take their
    whole grace period, and the reset then takes about one, not one per pod.
    """
    limit = anyio.CapacityLimiter(RESET_CONCURRENCY)
    removed: list[str] = []

    async def one(pod: PodStatus) -> None:
        async with limit:
            try:
                await runtime.stop(pod.uid, grace)
            except ShoalError as exc:  # e.g. it exited meanwhile: remove still cleans up
                log.info("reset: stopping pod %s: %s", pod.name, exc)
            await runtime.remove(pod.uid)
            removed.append(pod.name)

    pods = await runtime.list()
    if pods:
        log.info("reset: stopping %d pod(s), each within %g s", len(pods), grace)
    async with anyio.create_task_group() as tg:
        for pod in pods:
            tg.start_soon(one, pod)
    report.pods.extend(sorted(removed))
    for uid in await runtime.prune_logs(()):  # kept of pods gone before the reset
        report.leftovers.append(f"the previous run's logs of pod {uid}")


async def _delete_idle_bridge(networking: BridgeNetworking) -> bool:
    """Delete the bridge if nothing is attached to it any more; return whether it went."""
    bridge = networking.network.bridge
    ports = anyio.Path("/sys/class/net", bridge, "brif")
    if not await ports.exists():
        return False
    if [port async for port in ports.iterdir()]:
        log.warning("reset: bridge %s still has interfaces attached; it is kept", bridge)
        return False
    await networking.network.remove_bridge()
    return True
