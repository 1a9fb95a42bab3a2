"""Benchmark: time from ``apply`` of a one-replica workload to ``running`` on real runc.

Shoal's number: a real node (``build_node`` with runc, memory state, host
networking) runs in this process on a temporary data dir with the busybox
image from ``scripts/build_busybox_image.py`` imported; the clock starts
before ``ShoalService.apply`` and stops when the store's watch shows the
instance ``running`` — the control loop placed it, the node loop prepared
the image, built the bundle and rootfs, and its shim ran ``runc run
--detach`` (``ContainerRuntime.run``: one runc call, not ``create`` then
``start``).

Its floor: the same container started by hand — an overlay rootfs over the
same unpacked layers, a ``config.json`` from ``runc spec`` with the same
process (args, env, cwd), no network namespace (host networking, as on the
node) and the same pids limit, then ``runc run -d``. The clock covers the
mount, the config and ``runc run -d``.

The two alternate, one of each per round after one warm-up round of each
(first unpack, first shim), so machine noise hits both; every round deletes
what it started and waits until it is gone. Prints both medians and their
ratio (the aim is under 1.5), then where Shoal's time goes: the median of
each phase between marks taken on the way (see :class:`Marks`). Needs root
and runc. Run with ``make bench`` or ``uv run python bench/start_latency.py
[--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from shoal.agent import NodeConfig, ShoalNode, build_node
from shoal.interfaces import (
    EventKind,
    Instance,
    InstanceState,
    StateStore,
    WatchEvent,
    WorkloadSpec,
)
from shoal.runtime import ImageStore, OciCliRuntime

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "busybox:1.36"
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"""Runs until SIGTERM, and exits at once on it (so no round waits out a stop grace period)."""
PATH = "PATH=/bin"
"""The image config's environment."""
PIDS_LIMIT = 1024
"""What OciCliRuntime sets by default; the floor sets the same."""
WAIT = 60.0
"""Upper bound, in seconds, on any one wait."""
MAX_ROUNDS = 100

_libc = ctypes.CDLL(None, use_errno=True)


def workload(name: str) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
            "replicas": 1,
            "template": {"containers": [{"name": "main", "image": IMAGE, "command": COMMAND}]},
        }
    )


def build_image(out: Path) -> Path:
    """Build the busybox OCI layout with the repository's script; return its directory."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_busybox_image.py"), str(out), "1.36"],
        check=True,
        capture_output=True,
        timeout=WAIT,
    )
    return out


async def watch_until(
    store: StateStore, prefix: str, start: int, match: Callable[[WatchEvent], bool]
) -> WatchEvent:
    """Return the first change under ``prefix`` from revision ``start`` on that ``match``es."""
    with anyio.fail_after(WAIT):
        async for event in store.watch(prefix, start):
            if match(event):
                return event
    raise RuntimeError(f"the watch on {prefix} ended")  # a store watch never ends by itself


def running(name: str) -> Callable[[WatchEvent], bool]:
    """Match the instance of workload ``name`` reaching ``running``; fail loudly if it fails."""

    def match(event: WatchEvent) -> bool:
        if event.kind != EventKind.PUT:
            return False
        instance = Instance.model_validate_json(event.kv.value)
        if instance.workload != name:
            return False
        if instance.state == InstanceState.FAILED:
            raise RuntimeError(f"{instance.key} failed: {instance.reason}: {instance.message}")
        return instance.state == InstanceState.RUNNING

    return match


PHASES = (
    ("applied", "placed", "control loop: apply → instance placed"),
    ("placed", "image", "node loop: wake-up, pod list, 'starting'"),
    ("image", "run", "image lookup"),
    ("run", "shim", "pod directory, rootfs, bundle"),
    ("shim", "shim answered", "shim: runc run --detach"),
    ("shim answered", "ran", "pod record, next standby shim, status"),
    ("ran", "running", "'running' written and seen"),
)
"""Shoal's path as (from mark, to mark, what happens in between)."""


class Marks:
    """When one Shoal round passed each step of its path (``time.perf_counter`` values).

    ``applied``, ``placed`` and ``running`` are taken by the bench (the
    instance's first and its ``running`` change as the store's watch shows
    them); the others by wrappers around the runtime's steps: ``image`` when
    the node loop asks for the image, ``run`` when it runs the pod, ``shim``
    and ``shim answered`` around the shim's ``runc run --detach``, ``ran``
    when ``run`` returns.
    """

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """Note the first time ``name`` is reached this round."""
        self.times.setdefault(name, time.perf_counter())

    def time_calls(self, owner: object, method: str, before: str, after: str) -> None:
        """Mark ``before`` when ``owner.method`` is called and ``after`` when it returns."""
        original = getattr(owner, method)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.mark(before)
            try:
                return await original(*args, **kwargs)
            finally:
                self.mark(after)

        setattr(owner, method, timed)  # on the object: the node loop calls through it

    def instrument(self, runtime: OciCliRuntime) -> None:
        """Wrap the runtime's steps on Shoal's path."""
        self.time_calls(runtime, "ensure_image", "image", "image done")
        self.time_calls(runtime, "run", "run", "ran")
        self.time_calls(runtime.ops.launcher, "launch", "shim", "shim answered")

    def phases(self) -> dict[str, float]:
        """Return the seconds of each phase of :data:`PHASES` this round."""
        return {label: self.times[end] - self.times[begin] for begin, end, label in PHASES}


async def through_shoal(node: ShoalNode, name: str, marks: Marks) -> float:
    """Apply a one-replica workload, return seconds until it runs, then delete it."""
    marks.times.clear()
    start = await node.store.revision() + 1
    reached = running(name)

    def placed_or_running(event: WatchEvent) -> bool:
        marks.mark("placed")  # the only instances under way are this workload's
        return reached(event)

    marks.mark("applied")
    await node.service.apply([workload(name)])
    event = await watch_until(node.store, "/instances/default/", start, placed_or_running)
    marks.mark("running")
    elapsed = marks.times["running"] - marks.times["applied"]

    await node.service.delete_workload(name)
    await watch_until(
        node.store,
        "/workloads/default/",
        event.revision + 1,
        lambda e: e.kind == EventKind.DELETE and e.kv.key.endswith(f"/{name}"),
    )
    left = await node.runtime.list()
    if left:
        raise RuntimeError(f"pods outlived their workload: {[p.name for p in left]}")
    return elapsed


class RuncFloor:
    """Starts the equivalent container with ``runc run -d``, nothing else in between."""

    def __init__(self, root: Path, layers: list[Path]) -> None:
        self.root = root
        self.state = root / "runc"
        self.layers = layers
        template = root / "template"
        template.mkdir(parents=True)
        subprocess.run(["runc", "spec", "--bundle", str(template)], check=True, timeout=WAIT)
        self.template: dict[str, Any] = json.loads((template / "config.json").read_text())

    def config(self, name: str, rootfs: Path) -> dict[str, Any]:
        """Return ``runc spec``'s config adjusted to run what the workload runs."""
        config: dict[str, Any] = json.loads(json.dumps(self.template))
        process = config["process"]
        process.update(
            terminal=False,
            args=COMMAND,
            env=[PATH, f"HOSTNAME={name}"],
            cwd="/",
            noNewPrivileges=True,
        )
        config["root"] = {"path": str(rootfs), "readonly": False}
        config["hostname"] = name
        linux = config["linux"]
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        linux.setdefault("resources", {})["pids"] = {"limit": PIDS_LIMIT}
        return config

    async def start(self, name: str) -> float:
        """Mount a rootfs, write the bundle, ``runc run -d``; return the seconds that took."""
        bundle = self.root / name
        rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
        began = time.perf_counter()
        for directory in (rootfs, upper, work):
            directory.mkdir(parents=True)
        mount_overlay(self.layers, upper, work, rootfs)
        (bundle / "config.json").write_text(json.dumps(self.config(name, rootfs)))
        with (bundle / "runc.err").open("wb") as errors:
            # Not pipes: the detached container inherits runc's stdio and would hold them open.
            result = await anyio.run_process(
                ["runc", "--root", str(self.state), "run", "-d", "--bundle", str(bundle), name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                check=False,
            )
        elapsed = time.perf_counter() - began
        if result.returncode != 0:
            raise RuntimeError(f"runc run -d failed: {(bundle / 'runc.err').read_text()}")
        return elapsed

    async def remove(self, name: str) -> None:
        """Delete the container (if any), unmount its rootfs and remove its bundle."""
        # Not checked: after a failed start there may be no container to delete.
        await anyio.run_process(
            ["runc", "--root", str(self.state), "delete", "--force", name], check=False
        )
        bundle = self.root / name
        rootfs = bundle / "rootfs"
        if rootfs.is_mount() and _libc.umount2(os.fsencode(rootfs), 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"umount {rootfs}: {os.strerror(code)}")
        if bundle.exists():
            shutil.rmtree(bundle)

    async def round(self, name: str) -> float:
        """Start the container, remove it again; return the seconds the start took."""
        try:
            return await self.start(name)
        finally:
            with anyio.CancelScope(shield=True):
                await self.remove(name)


def mount_overlay(layers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount the layers (bottom first) with a writable upper dir, as the runtime does."""
    lower = ":".join(str(layer) for layer in reversed(layers))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"overlay mount on {target}: {os.strerror(code)}")


@contextlib.asynccontextmanager
async def running_node(data_dir: Path) -> AsyncIterator[ShoalNode]:
    """Run a runc node (memory state, host networking) until the block ends."""
    config = NodeConfig(
        data_dir=data_dir, name="bench", runtime="runc", state="memory", network="host"
    )
    node = build_node(config)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        try:
            yield node
        finally:
            with anyio.CancelScope(shield=True):  # containers outlive the node: remove them
                for pod in await node.runtime.list():
                    await node.runtime.remove(pod.uid)
            tg.cancel_scope.cancel()


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-bench-start-") as tmp:
        work = Path(tmp)
        layout = build_image(work / "layout")
        async with running_node(work / "node") as node:
            await node.service.import_image(str(layout), IMAGE)
            if not isinstance(node.images, ImageStore):
                raise RuntimeError("a runc node without an image store")
            if not isinstance(node.runtime, OciCliRuntime):
                raise RuntimeError("a runc node without the OCI runtime")
            prepared = await node.images.prepare(IMAGE)
            floor = RuncFloor(work / "floor", prepared.layers)
            marks = Marks()
            marks.instrument(node.runtime)
            shoal_times: list[float] = []
            floor_times: list[float] = []
            phases: dict[str, list[float]] = {label: [] for _, _, label in PHASES}
            for number in range(rounds + 1):  # round 0 warms both up and is not counted
                # Who goes first alternates, so neither always follows the other's cleanup.
                if number % 2:
                    direct = await floor.round(f"floor-{number}")
                    shoal = await through_shoal(node, f"start-{number}", marks)
                else:
                    shoal = await through_shoal(node, f"start-{number}", marks)
                    direct = await floor.round(f"floor-{number}")
                if number:
                    shoal_times.append(shoal)
                    floor_times.append(direct)
                    for label, seconds in marks.phases().items():
                        phases[label].append(seconds)
    shoal_median, floor_median = statistics.median(shoal_times), statistics.median(floor_times)
    print(f"one busybox container on runc, host networking, {rounds} rounds")
    print(f"shoal apply → running   median {shoal_median * 1000:7.1f} ms")
    print(f"runc run -d of a bundle median {floor_median * 1000:7.1f} ms")
    print(f"ratio (shoal / runc run -d): {shoal_median / floor_median:.2f}  (aim: < 1.5)")
    print("where shoal's time goes (median of each phase, ms; medians need not add up):")
    for label, times in phases.items():
        print(f"  {label:<44} {statistics.median(times) * 1000:6.1f}")


def rounds_arg(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"rounds must be 1 to {MAX_ROUNDS}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=rounds_arg, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("runc") is None:
        sys.exit("start_latency needs root and runc (apt-get install runc, or `make run` once)")
    anyio.run(main, args.rounds)
