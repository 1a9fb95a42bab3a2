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

The garbage collector is set as ``shoal agent`` sets it once its parts exist
(:func:`shoal.agent.tune_gc`: what exists is frozen, the youngest generation
collected every 50,000 allocations), for Shoal and the floor alike. The two
alternate, one of each per round (60 unless ``--rounds``) after one warm-up
round of each (first unpack, first shim), so machine noise hits both; every round deletes
what it started and waits until it is gone. Prints both medians and their
ratio (the aim is under 1.5), then where Shoal's time goes: the median of
each phase between marks taken on the way (see :class:`Marks`: the control
loop's wake-up and its pass, the node loop's wake-up, the image, the bundle,
the shim, what follows, and the next standby shim started off the path),
how many store writes the path made and how long they took, how many
control loop passes ran meanwhile on the same event loop (and how much of
their time came before the shim was handed its container), and what the
same container costs started in two runc calls (``runc create`` then ``runc
start``, measured in the same rounds), against the one ``runc run -d`` the
shim makes. Readiness probes play no part:
``running`` is reported when the pod runs (the bench's container has none). Needs root
and runc. Run with ``make bench`` or ``uv run python bench/start_latency.py
[--rounds N]``.

Beside its own figures it prints p50 and p99 of the node's start SLI
histogram (``shoal_instance_start_duration_seconds``: instance created →
running, image pulls excluded), and the cost of telemetry: a second node with
metrics off (``NO_METRICS``), and every span dropped while it starts (the
agent's tracing behind a switch, see ``bench/common.py``), starts the same
container every round, first or last in turn, and the ratio of the two
medians is printed (aim: at most 1.05). That ratio moves by more than 5 %
from run to run on a shared machine: most of a start, and most of its noise,
is the shim's ``runc run --detach``, during which no telemetry runs (the
agent awaits the shim's answer). So beside it come the median and quartiles
of each round's own ratio; telemetry's cost outside the shim's call, round
by round (on minus off, each start less its shim's call), as a share of the
start with telemetry off, against the same aim, with the shim's call's
medians on and off to show they match; and the CPU time the event loop's
thread spent on one start with telemetry on and off.

With ``--runtime cri`` the same run also measures Shoal on containerd: a
second node (``--runtime cri``, host networking) on a private containerd
(the tests' own, in a mount namespace of its own, see
``tests/runtime/cri/support.py``; or the one at ``--cri-endpoint``), against
its floor: the same pod started directly through CRI
(``RunPodSandbox``, ``CreateContainer``, ``StartContainer`` with the
configs ``CriRuntime`` sends). The four alternate each round, and both
ratios are printed.
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
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from shoal.agent import NodeConfig, ShoalNode, build_node, tune_gc
from shoal.agent._metrics import PrometheusMetrics
from shoal.interfaces import (
    NO_METRICS,
    Catalogue,
    EventKind,
    Instance,
    InstanceState,
    Metrics,
    PodSpec,
    StateStore,
    WatchEvent,
    WorkloadSpec,
)
from shoal.runtime import CriRuntime, ImageStore, OciCliRuntime
from shoal.runtime.cri import CriClient
from shoal.runtime.cri._client import pb
from shoal.runtime.cri._cripod import container_config, sandbox_config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))

from bench.common import TracingSwitch, install_switched_tracing  # noqa: E402

from tests.runtime.cri.support import IMAGE as CRI_IMAGE  # noqa: E402
from tests.runtime.cri.support import PrivateContainerd, missing_requirement  # noqa: E402

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


def workload(name: str, image: str = IMAGE) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
            "replicas": 1,
            "template": {"containers": [{"name": "main", "image": image, "command": COMMAND}]},
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
    ("applied", "pass", "control loop: apply written, watch wake-up"),
    ("pass", "placed", "control loop: its pass, instance placed, seen"),
    ("placed", "sync", "node loop: watch wake-up → its sync"),
    ("sync", "image", "node loop: configuration, 'starting' written"),
    ("image", "run", "image lookup"),
    ("run", "shim", "pod directory, rootfs, bundle"),
    ("shim", "shim answered", "shim: runc run --detach"),
    ("shim answered", "ran", "pod record, status"),
    ("ran", "running", "'running' written and seen"),
    ("replenish", "replenished", "next standby shim (in the background)"),
)
"""Shoal's path as (from mark, to mark, what happens in between)."""


class Marks:
    """When one Shoal round passed each step of its path (``time.perf_counter`` values).

    ``applied``, ``placed`` and ``running`` are taken by the bench (the
    instance's first and its ``running`` change as the store's watch shows
    them); the others by wrappers: ``pass`` when the control loop starts its
    first pass, ``sync`` when the node loop starts the instance, ``image``
    when it asks for the image, ``run`` when it runs the pod, ``shim`` and
    ``shim answered`` around the shim's ``runc run --detach``, ``ran`` when
    ``run`` returns, ``replenish`` and ``replenished`` around the start of
    the next standby shim (which the runtime starts in the background once
    the pod has started: off the path, and printed last).
    :meth:`count_writes` also counts the store writes between ``applied``
    and ``running`` and the time they took.
    """

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.writes: list[float] = []
        """Seconds each store write of this round took (until ``running``)."""
        self.passes: list[tuple[float, float]] = []
        """When each control loop pass of this round began and ended (until ``running``)."""
        self.cpu = 0.0
        """CPU seconds the event loop's thread spent from ``applied`` to ``running``."""

    def mark(self, name: str) -> None:
        """Note the first time ``name`` is reached this round (from ``applied`` on)."""
        if name == "applied" or "applied" in self.times:  # not a pass of the last round's
            self.times.setdefault(name, time.perf_counter())

    def time_calls(
        self,
        owner: object,
        method: str,
        before: str,
        after: str,
        spans: list[tuple[float, float]] | None = None,
    ) -> None:
        """Mark ``before`` when ``owner.method`` is called and ``after`` when it returns.

        With ``spans``, also note when each call before this round's ``running`` began and ended.
        """
        original = getattr(owner, method)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            self.mark(before)
            began = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.mark(after)
                if spans is not None and "applied" in self.times and "running" not in self.times:
                    spans.append((began, time.perf_counter()))

        setattr(owner, method, timed)  # on the object: the node loop calls through it

    def count_writes(self, store: StateStore) -> None:
        """Time every ``put`` and ``txn`` of ``store`` made before this round's ``running``."""
        for method in ("put", "txn"):
            original = getattr(store, method)

            async def timed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return await _original(*args, **kwargs)
                finally:
                    if "applied" in self.times and "running" not in self.times:
                        self.writes.append(time.perf_counter() - began)

            setattr(store, method, timed)  # the loops' stores pass their writes to it

    def instrument_loops(self, node: ShoalNode) -> None:
        """Wrap the control loop's pass and the node loop's start of an instance."""
        if node.control is None:
            raise RuntimeError("the bench's node does not lead")
        self.time_calls(node.control, "reconcile", "pass", "pass done", self.passes)
        self.time_calls(node.node_loop, "_start", "sync", "synced")
        self.count_writes(node.store)

    def instrument(self, runtime: OciCliRuntime) -> None:
        """Wrap the runtime's steps on Shoal's path."""
        self.time_calls(runtime, "ensure_image", "image", "image done")
        self.time_calls(runtime, "run", "run", "ran")
        self.time_calls(runtime.ops.launcher, "launch", "shim", "shim answered")
        self.time_calls(runtime.ops.launcher, "replenish", "replenish", "replenished")

    def instrument_cri(self, runtime: CriRuntime) -> None:
        """Wrap the CRI runtime's steps on Shoal's path."""
        self.time_calls(runtime, "ensure_image", "image", "image done")
        self.time_calls(runtime, "run", "run", "ran")

    def shim(self) -> float:
        """Return the seconds this round's shim took to answer (its ``runc run --detach``)."""
        return self.times["shim answered"] - self.times["shim"]

    def phases(self, phases: tuple[tuple[str, str, str], ...] = PHASES) -> dict[str, float]:
        """Return the seconds of each phase of ``phases`` this round."""
        return {label: self.times[end] - self.times[begin] for begin, end, label in phases}


CRI_PHASES = (
    ("applied", "placed", "control loop: apply → instance placed"),
    ("placed", "image", "node loop: wake-up, its sync, 'starting'"),
    ("image", "run", "image status (CRI ImageStatus)"),
    ("run", "ran", "sandbox, create, start, status (CRI calls)"),
    ("ran", "running", "'running' written and seen"),
)
"""Shoal's path on containerd as (from mark, to mark, what happens in between)."""


async def through_shoal(node: ShoalNode, name: str, marks: Marks, image: str = IMAGE) -> float:
    """Apply a one-replica workload, return seconds until it runs, then delete it."""
    marks.times.clear()
    marks.writes.clear()
    marks.passes.clear()
    start = await node.store.revision() + 1
    reached = running(name)

    def placed_or_running(event: WatchEvent) -> bool:
        marks.mark("placed")  # the only instances under way are this workload's
        return reached(event)

    cpu = time.thread_time()
    marks.mark("applied")
    await node.service.apply([workload(name, image)])
    event = await watch_until(node.store, "/instances/default/", start, placed_or_running)
    marks.mark("running")
    marks.cpu = time.thread_time() - cpu
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

    async def start(self, name: str, *, two_calls: bool = False) -> float:
        """Mount a rootfs, write the bundle, ``runc run -d``; return the seconds that took.

        With ``two_calls``, ``runc create`` then ``runc start`` instead of ``runc run -d``.
        """
        bundle = self.root / name
        rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
        began = time.perf_counter()
        for directory in (rootfs, upper, work):
            directory.mkdir(parents=True)
        mount_overlay(self.layers, upper, work, rootfs)
        (bundle / "config.json").write_text(json.dumps(self.config(name, rootfs)))
        runc = ["runc", "--root", str(self.state)]
        calls = (
            [[*runc, "create", "--bundle", str(bundle), name], [*runc, "start", name]]
            if two_calls
            else [[*runc, "run", "-d", "--bundle", str(bundle), name]]
        )
        for call in calls:
            with (bundle / "runc.err").open("wb") as errors:
                # Not pipes: the container inherits runc's stdio and would hold them open.
                result = await anyio.run_process(
                    call,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    check=False,
                )
            if result.returncode != 0:
                raise RuntimeError(f"{call[3:5]} failed: {(bundle / 'runc.err').read_text()}")
        return time.perf_counter() - began

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

    async def round(self, name: str, *, two_calls: bool = False) -> float:
        """Start the container, remove it again; return the seconds the start took."""
        try:
            return await self.start(name, two_calls=two_calls)
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


class CriFloor:
    """Starts the equivalent pod through CRI calls only, with the configs CriRuntime sends."""

    def __init__(self, client: CriClient, root: Path) -> None:
        self.client = client
        self.root = root

    async def start(self, name: str) -> tuple[float, str]:
        """Run the sandbox, create and start the container; return the seconds and the sandbox."""
        spec = workload(name, CRI_IMAGE)
        pod = PodSpec(
            uid=uuid.uuid4().hex,
            name=name,
            namespace="default",
            workload=name,
            containers=spec.template.containers,
        )
        began = time.perf_counter()
        (self.root / name).mkdir(parents=True)  # the log directory, as CriRuntime makes it
        config = sandbox_config(
            pod,
            owner="bench-floor",
            log_directory=self.root / name,
            cgroup_parent="/shoal-cri",
            host_network=True,
            host_ip="127.0.0.1",
        )
        sandbox = await self.client.runtime(
            "RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse
        )
        settings = container_config(
            pod, pod.containers[0], "0", owner="bench-floor", volume_sources={}, host_network=True
        )
        created = await self.client.runtime(
            "CreateContainer",
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox.pod_sandbox_id, config=settings, sandbox_config=config
            ),
            pb.CreateContainerResponse,
        )
        await self.client.runtime(
            "StartContainer",
            pb.StartContainerRequest(container_id=created.container_id),
            pb.StartContainerResponse,
        )
        return time.perf_counter() - began, sandbox.pod_sandbox_id

    async def round(self, name: str) -> float:
        """Start the pod, remove it again; return the seconds the start took."""
        elapsed, sandbox = await self.start(name)
        with anyio.CancelScope(shield=True):
            for call, request, reply in (
                ("StopPodSandbox", pb.StopPodSandboxRequest, pb.StopPodSandboxResponse),
                ("RemovePodSandbox", pb.RemovePodSandboxRequest, pb.RemovePodSandboxResponse),
            ):
                await self.client.runtime(call, request(pod_sandbox_id=sandbox), reply)
        return elapsed


@contextlib.asynccontextmanager
async def running_node(
    data_dir: Path,
    runtime: str = "runc",
    endpoint: str | None = None,
    *,
    metrics: Metrics | None = None,
    name: str | None = None,
) -> AsyncIterator[ShoalNode]:
    """Run a node (memory state, host networking) until the block ends."""
    settings: dict[str, Any] = {"cri_endpoint": endpoint} if endpoint else {}
    config = NodeConfig(
        data_dir=data_dir,
        name=name or f"bench-{runtime}",
        runtime=runtime,
        state="memory",
        network="host",
        **settings,
    )
    node = build_node(config, metrics=metrics)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        try:
            yield node
        finally:
            with anyio.CancelScope(shield=True):  # containers outlive the node: remove them
                for pod in await node.runtime.list():
                    await node.runtime.remove(pod.uid)
            tg.cancel_scope.cancel()


def report(title: str, shoal_times: list[float], floor_times: list[float], floor: str) -> float:
    """Print the medians of Shoal and its floor and return their ratio."""
    shoal_median, floor_median = statistics.median(shoal_times), statistics.median(floor_times)
    ratio = shoal_median / floor_median
    print(title)
    print(f"shoal apply → running   median {shoal_median * 1000:7.1f} ms")
    print(f"{floor:<23} median {floor_median * 1000:7.1f} ms")
    print(f"ratio (shoal / {floor}): {ratio:.2f}  (aim: < 1.5)")
    return ratio


def print_sli(metrics: Metrics, shoal_times: list[float]) -> None:
    """Print p50/p99 of the node's start SLI histogram beside the bench's own median."""
    if not isinstance(metrics, PrometheusMetrics):
        return
    spec = Catalogue.INSTANCE_START_DURATION
    p50, p99 = metrics.quantile(spec, 0.5), metrics.quantile(spec, 0.99)
    if p50 is None or p99 is None:
        print("start SLI: no observation recorded")
        return
    print(
        f"start SLI ({spec.name}, {metrics.count(spec):.0f} starts, pulls excluded): "
        f"p50 {p50 * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms  "
        f"(this bench's apply → running median {statistics.median(shoal_times) * 1000:.1f} ms)"
    )


TRACING = TracingSwitch()
"""On while the telemetry node starts its container, off while the quiet one does."""


async def without_telemetry(node: ShoalNode, name: str, marks: Marks) -> float:
    """Start through ``node`` (metrics off) with every span dropped; return the seconds."""
    TRACING.on = False
    try:
        return await through_shoal(node, name, marks)
    finally:
        TRACING.on = True


class Starts(NamedTuple):
    """One node's starts, round by round: their seconds, their shim's, their CPU seconds."""

    seconds: list[float]
    shim: list[float]
    """The shim's ``runc run --detach`` of each start: no telemetry runs in it."""
    cpu: list[float]
    """CPU seconds the event loop's thread spent on each start (apply → running)."""


def quartiles(values: list[float]) -> str:
    """Return the first and third quartile of ``values`` as text ("" for fewer than two)."""
    if len(values) < 2:
        return ""
    first, _, third = statistics.quantiles(values, n=4)
    return f" (quartiles {first:.3f} to {third:.3f})"


def print_telemetry_cost(on: Starts, off: Starts) -> None:
    """Print the medians with telemetry on and off, and their ratio.

    Then what tells that ratio on a noisy machine. Each start waits for its
    shim's ``runc run --detach`` (most of its time, and most of the noise:
    the round-by-round ratio's quartiles lie some 30 % apart, wider than what
    is measured), and no telemetry runs during it: the agent awaits the
    shim's answer. So the round-by-round difference of what is left of each
    start, telemetry's own cost on the start's path, is printed as a share of
    the start with telemetry off (the same aim), beside the shim's medians
    (which should match), and the CPU time the event loop's thread spent.
    """
    on_median, off_median = statistics.median(on.seconds), statistics.median(off.seconds)
    print(
        f"telemetry on {on_median * 1000:.1f} ms, off {off_median * 1000:.1f} ms (medians): "
        f"ratio on/off {on_median / off_median:.3f}  (aim: <= 1.05)"
    )
    paired = [a / b for a, b in zip(on.seconds, off.seconds, strict=True)]
    print(
        f"  round by round: ratio on/off median {statistics.median(paired):.3f}{quartiles(paired)}"
    )
    added = [
        (a - a_shim) - (b - b_shim)
        for a, a_shim, b, b_shim in zip(on.seconds, on.shim, off.seconds, off.shim, strict=True)
    ]
    cost = statistics.median(added)
    shares = [1 + d / off_median for d in added]
    print(
        f"  outside the shim's runc call, round by round: telemetry adds {cost * 1000:+.2f} ms "
        f"(median), so on/off = {1 + cost / off_median:.3f}{quartiles(shares)}  (aim: <= 1.05); "
        f"the shim's call on {statistics.median(on.shim) * 1000:.1f} ms, "
        f"off {statistics.median(off.shim) * 1000:.1f} ms (medians)"
    )
    cpu_on, cpu_off = statistics.median(on.cpu), statistics.median(off.cpu)
    print(
        f"  event loop CPU per start on {cpu_on * 1000:.1f} ms, off {cpu_off * 1000:.1f} ms "
        f"(+{(cpu_on - cpu_off) * 1000:.1f} ms)"
    )


def print_phases(phases: dict[str, list[float]]) -> None:
    print("where shoal's time goes (median of each phase, ms; medians need not add up):")
    for label, times in phases.items():
        print(f"  {label:<46} {statistics.median(times) * 1000:6.1f}")


def print_writes(counts: list[int], seconds: list[float]) -> None:
    """Print the median number of store writes on the path and the time they took."""
    print(
        f"  store writes on the path: {statistics.median(counts):.0f} (median), "
        f"{statistics.median(seconds) * 1000:.1f} ms in all"
    )


def print_passes(before_shim: list[float], counts: list[int], seconds: list[float]) -> None:
    """Print how much control loop work the path held, and how much came before the shim."""
    print(
        f"  control loop passes on the path: {statistics.median(counts):.0f} (median), "
        f"{statistics.median(seconds) * 1000:.1f} ms in all, "
        f"{statistics.median(before_shim) * 1000:.1f} ms of them before the shim "
        "(the same event loop as the node loop's start)"
    )


def print_two_calls(two_calls: list[float], run: list[float]) -> None:
    """Print the floor started in two runc calls against one ``runc run -d``."""
    two, one = statistics.median(two_calls), statistics.median(run)
    print(
        f"runc create + runc start median {two * 1000:.1f} ms against runc run -d "
        f"{one * 1000:.1f} ms: the shim's one call saves {(two - one) * 1000:.1f} ms"
    )


async def main(rounds: int, runtime: str = "runc", endpoint: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-bench-start-") as tmp:
        work = Path(tmp)
        layout = build_image(work / "layout")
        async with contextlib.AsyncExitStack() as stack:
            node = await stack.enter_async_context(running_node(work / "node"))
            quiet = await stack.enter_async_context(
                running_node(work / "node-off", metrics=NO_METRICS, name="bench-runc-off")
            )
            await node.service.import_image(str(layout), IMAGE)
            await quiet.service.import_image(str(layout), IMAGE)
            if not isinstance(node.images, ImageStore):
                raise RuntimeError("a runc node without an image store")
            if not isinstance(node.runtime, OciCliRuntime):
                raise RuntimeError("a runc node without the OCI runtime")
            prepared = await node.images.prepare(IMAGE)
            floor = RuncFloor(work / "floor", prepared.layers)
            marks = Marks()
            marks.instrument(node.runtime)
            with anyio.fail_after(WAIT):  # a node alone leads at once; its control loop then
                while node.control is None:  # noqa: ASYNC110 (no event says so)
                    await anyio.sleep(0.01)
            marks.instrument_loops(node)
            quiet_marks = Marks()
            if not isinstance(quiet.runtime, OciCliRuntime):
                raise RuntimeError("a runc node without the OCI runtime")
            quiet_marks.instrument(quiet.runtime)  # the same wrappers: only telemetry differs
            with anyio.fail_after(WAIT):
                while quiet.control is None:  # noqa: ASYNC110 (no event says so)
                    await anyio.sleep(0.01)
            quiet_marks.instrument_loops(quiet)
            cri: tuple[ShoalNode, CriFloor, Marks] | None = None
            if runtime == "cri":
                cri = await stack.enter_async_context(cri_parts(work, endpoint))
            tune_gc()  # as `shoal agent` does once its parts exist (for the floor alike)
            shoal_times: list[float] = []
            floor_times: list[float] = []
            two_call_times: list[float] = []
            write_counts: list[int] = []
            write_seconds: list[float] = []
            pass_counts: list[int] = []
            pass_seconds: list[float] = []
            passes_before_shim: list[float] = []
            off_times: list[float] = []
            cpu_on: list[float] = []
            cpu_off: list[float] = []
            shim_on: list[float] = []
            shim_off: list[float] = []
            phases: dict[str, list[float]] = {label: [] for _, _, label in PHASES}
            cri_times: list[float] = []
            cri_floor_times: list[float] = []
            cri_phases: dict[str, list[float]] = {label: [] for _, _, label in CRI_PHASES}
            for number in range(rounds + 1):  # round 0 warms both up and is not counted
                # Who goes first alternates, so neither always follows the other's cleanup.
                if number % 2:
                    off = await without_telemetry(quiet, f"off-{number}", quiet_marks)
                    direct = await floor.round(f"floor-{number}")
                    shoal = await through_shoal(node, f"start-{number}", marks)
                    two_calls = await floor.round(f"floor2-{number}", two_calls=True)
                else:
                    shoal = await through_shoal(node, f"start-{number}", marks)
                    two_calls = await floor.round(f"floor2-{number}", two_calls=True)
                    direct = await floor.round(f"floor-{number}")
                    off = await without_telemetry(quiet, f"off-{number}", quiet_marks)
                if number:
                    shoal_times.append(shoal)
                    floor_times.append(direct)
                    two_call_times.append(two_calls)
                    write_counts.append(len(marks.writes))
                    write_seconds.append(sum(marks.writes))
                    pass_counts.append(len(marks.passes))
                    pass_seconds.append(sum(end - began for began, end in marks.passes))
                    shim = marks.times["shim"]
                    passes_before_shim.append(
                        sum(min(end, shim) - began for began, end in marks.passes if began < shim)
                    )
                    off_times.append(off)
                    cpu_on.append(marks.cpu)
                    cpu_off.append(quiet_marks.cpu)
                    shim_on.append(marks.shim())
                    shim_off.append(quiet_marks.shim())
                    for label, seconds in marks.phases().items():
                        phases[label].append(seconds)
                if cri is None:
                    continue
                cri_node, cri_floor, cri_marks = cri
                if number % 2:
                    cri_direct = await cri_floor.round(f"cri-floor-{number}")
                    cri_shoal = await through_shoal(
                        cri_node, f"cri-start-{number}", cri_marks, CRI_IMAGE
                    )
                else:
                    cri_shoal = await through_shoal(
                        cri_node, f"cri-start-{number}", cri_marks, CRI_IMAGE
                    )
                    cri_direct = await cri_floor.round(f"cri-floor-{number}")
                if number:
                    cri_times.append(cri_shoal)
                    cri_floor_times.append(cri_direct)
                    for label, seconds in cri_marks.phases(CRI_PHASES).items():
                        cri_phases[label].append(seconds)
    report(
        f"one busybox container on runc, host networking, {rounds} rounds",
        shoal_times,
        floor_times,
        "runc run -d",
    )
    print_phases(phases)
    print_writes(write_counts, write_seconds)
    print_passes(passes_before_shim, pass_counts, pass_seconds)
    print_two_calls(two_call_times, floor_times)
    print_sli(node.metrics, shoal_times)
    print_telemetry_cost(Starts(shoal_times, shim_on, cpu_on), Starts(off_times, shim_off, cpu_off))
    if cri is not None:
        print()
        report(
            f"the same pod on containerd through CRI, host networking, {rounds} rounds",
            cri_times,
            cri_floor_times,
            "CRI calls",
        )
        print("  (CRI calls: RunPodSandbox, CreateContainer, StartContainer, nothing else)")
        print_phases(cri_phases)


@contextlib.asynccontextmanager
async def cri_parts(
    work: Path, endpoint: str | None
) -> AsyncIterator[tuple[ShoalNode, CriFloor, Marks]]:
    """Run a CRI node on containerd (a private one unless ``endpoint``) with its floor."""
    containerd: PrivateContainerd | None = None
    if endpoint is None:
        reason = missing_requirement()
        if reason is not None:
            raise SystemExit(f"start_latency --runtime cri: {reason}")
        containerd = PrivateContainerd(work / "ctrd")
        try:
            await anyio.to_thread.run_sync(containerd.start)
        except BaseException:
            containerd.close()
            raise
        endpoint = containerd.endpoint
    client = CriClient(endpoint)
    try:
        async with running_node(work / "cri-node", "cri", endpoint) as node:
            if not isinstance(node.runtime, CriRuntime):
                raise RuntimeError("a cri node without the CRI runtime")
            await node.runtime.ensure_image(CRI_IMAGE)
            marks = Marks()
            marks.instrument_cri(node.runtime)
            yield node, CriFloor(client, work / "cri-floor"), marks
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
            if containerd is not None:
                await anyio.to_thread.run_sync(containerd.close)  # and an empty /shoal-cri


def rounds_arg(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"rounds must be 1 to {MAX_ROUNDS}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=rounds_arg, default=60)
    parser.add_argument(
        "--runtime",
        choices=["runc", "cri"],
        default="runc",
        help="cri: also measure Shoal on containerd against direct CRI calls",
    )
    parser.add_argument(
        "--cri-endpoint",
        default=None,
        help="an existing containerd's CRI socket [default: start a private containerd]",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("runc") is None:
        sys.exit("start_latency needs root and runc (apt-get install runc, or `make run` once)")
    # Before any node is built: the first one adds the agent's span buffer to it.
    install_switched_tracing(TRACING, None)
    anyio.run(main, args.rounds, args.runtime, args.cri_endpoint)
