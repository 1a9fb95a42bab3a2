"""MockRuntime: an in-memory ContainerRuntime with fault injection.

The fake that tests and benchmarks use. Nothing runs: containers are records
whose state follows the calls made on them, so it is cheap (thousands of pods
cost a few megabytes) and deterministic.

Behaviour without faults:

* ``ensure_image`` succeeds for any reference, with a digest derived from it.
* ``create`` makes containers in state *created* with id
  ``mock-<pod uid>-<container name>``; a second pod with the same uid is a
  :class:`~shoal.interfaces.Conflict`. Volumes are accepted and ignored,
  except that a host path volume is refused with
  :class:`~shoal.interfaces.Forbidden` unless the runtime was made with
  ``allow_host_paths=True``, as a real node refuses it (whether the path
  exists is not checked: nothing is mounted).
* ``start`` first runs the init containers that have not yet succeeded, in
  order: each logs ``started <name>`` and exits 0 at once (its logs stay
  readable; it is not in the pod's status), unless an INIT_FAILS fault says
  otherwise. Then it makes the containers *running*, sets ``started_at`` from
  the clock and writes the log line ``started <container>``. Starting an
  exited container starts it again (as a restart would); starting a running
  one changes nothing.
* File volumes (``PodSpec.files``) are kept in memory; ``update_files``
  replaces a volume's set at once, and a ``sub_path`` mount keeps what it had
  when its container was created (see :meth:`MockRuntime.file`).
* ``stop`` makes every container *exited* with code 143 (SIGTERM) at once,
  created ones included; exited ones keep their code.
* ``remove`` forgets the pod (running or not); a missing pod is a no-op.
* ``logs`` honours ``since`` and ``tail``; with ``follow`` it waits on an anyio
  event for new lines until the container exits, the pod goes or the runtime
  closes (details in ``_logs``).
* ``exec`` on a running container returns exit code 0 with the command joined
  by spaces as stdout (``time_limit`` is accepted and ignored); on a container
  that is not running it raises Conflict.
* ``stats`` returns zeros (see :meth:`MockRuntime.set_stats`).

Faults (:class:`~shoal.runtime.Fault`, armed through ``faults=`` or
``runtime.faults.add``) are matched by image reference and/or container name:

* ``Fault.image_missing(image)``: ``ensure_image`` and ``create`` raise
  ImageError naming the image.
* ``Fault.create_fails(...)``: ``create`` raises RuntimeFailure with the
  fault's message and keeps nothing.
* ``Fault.exits(after=s, exit_code=n)``: a started container exits with ``n``
  once ``s`` seconds of the runtime's clock have passed (``after=0``: it
  crashes right away). The exit is evaluated lazily whenever the pod is
  looked at (inspect, list, start, stop, exec, stats, logs), comparing the
  clock's ``monotonic()`` with the deadline; ``finished_at`` is
  ``started_at + s``. No background task is involved, so with a manual clock
  the outcome depends on the clock alone: ``clock.advance(s)`` and the next
  ``inspect`` shows the exit. A log follower sleeps on the clock until the
  deadline so that it ends on time too.
* ``Fault.slow_start(seconds=s)``: ``start`` sleeps ``s`` on the clock before
  the container runs (it stays *created* meanwhile).
* ``Fault.ignores_sigterm()``: ``stop`` sleeps its whole grace on the clock,
  then the container exits with 137 (SIGKILL).
* ``Fault.remove_fails(...)``: ``remove`` raises RuntimeFailure with the
  fault's message and keeps the pod (a teardown that is stuck).
* ``Fault.init_fails(exit_code=n, container=..., message=...)``: that init
  container logs the message and exits with ``n``; ``start`` (and ``run``)
  raise RuntimeFailure naming it, and the containers stay created.
* ``Fault.list_fails(...)``: ``list`` raises RuntimeFailure with the fault's
  message (a runtime that cannot say what it runs, for a while).

Test hooks, all synchronous: :meth:`MockRuntime.kill` (a running container
exits now), :meth:`MockRuntime.file` (what a container reads from a file
volume), :meth:`MockRuntime.write_log`, :meth:`MockRuntime.set_exec_result`,
:meth:`MockRuntime.set_stats` and :meth:`MockRuntime.simulate_restart`
(keep or lose every pod, as a node restart or a wiped host would).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime

import anyio
import anyio.lowlevel

from shoal.interfaces import (
    MOCK_RUNTIME,
    AsyncClosing,
    Clock,
    Conflict,
    ContainerState,
    ContainerStats,
    ExecResult,
    ImageError,
    ImageInfo,
    LogLine,
    NotFound,
    PodSpec,
    PodStatus,
    ProjectedFile,
    RuntimeFailure,
    SystemClock,
)
from shoal.runtime._exits import ExitListeners
from shoal.runtime._filevolumes import check_files
from shoal.runtime._initcontainers import check_container_names, init_container_failed
from shoal.runtime._keptlogs import no_previous_log
from shoal.runtime.oci._volumes import check_host_paths

from ._faults import Fault, FaultKind, Faults
from ._logs import read_logs
from ._records import SIGKILL_EXIT, SIGTERM_EXIT, ContainerRecord, PodRecord

__all__ = ["MOCK_POD_IP", "MockRuntime"]

MOCK_POD_IP = "127.0.0.1"
"""The address a mock pod's status.podIP variables get: a mock pod has no network of its own."""


class MockRuntime(AsyncClosing):
    """An in-memory, deterministic ContainerRuntime with fault injection.

    Args:
        clock: Source of time for timestamps and time-based faults; the system
            clock by default. Pass a manual clock to drive faults from a test.
        faults: Faults armed from the start; more can be added to ``faults``.
        allow_host_paths: Accept pods with host path volumes (refused otherwise).

    Attributes:
        name: Always ``"mock"``.
        faults: The armed faults; ``runtime.faults.add(Fault...)`` arms one more.

    It announces exits (:class:`~shoal.interfaces.PodExits`) as they happen
    when :meth:`kill` makes them, and an injected exit (``Fault.exits``) that
    happens during its start (``after=0``); a later injected exit is found when
    the pod is next listed or inspected, as by a runtime that announces none.
    """

    name: str = MOCK_RUNTIME

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        faults: Iterable[Fault] = (),
        allow_host_paths: bool = False,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.allow_host_paths = allow_host_paths
        self.faults = Faults(faults)
        self._pods: dict[str, PodRecord] = {}
        self._previous: dict[str, PodRecord] = {}
        """Each pod's previous run, kept when it was removed with ``keep_logs``."""
        self._images: dict[str, ImageInfo] = {}
        self.pull_credentials: dict[str, dict[str, tuple[str, str]]] = {}
        """The credentials each image's last ensure_image was given, by image."""
        self._exec_results: dict[str, ExecResult] = {}
        self._stats: dict[str, ContainerStats] = {}
        self._closed = False
        self._exits = ExitListeners()

    def on_exit(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """Call ``listener(pod uid)`` when :meth:`kill` ends a container (see the class)."""
        return self._exits.add(listener)

    @property
    def pulled_images(self) -> frozenset[str]:
        """Return the references ``ensure_image`` has made available so far."""
        return frozenset(self._images)

    async def ensure_image(
        self, image: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageInfo:
        """Make ``image`` available; succeeds unless an IMAGE_MISSING fault matches.

        The credentials a pull was given are kept in ``pull_credentials`` for tests to check.

        Raises:
            ImageError: the reference is empty or an injected fault says it is missing.

        """
        await anyio.lowlevel.checkpoint()
        self._check_image(image, container=None)
        if credentials:
            self.pull_credentials[image] = dict(credentials)
        info = self._images.get(image)
        if info is None:
            digest = hashlib.sha256(image.encode()).hexdigest()
            info = ImageInfo(reference=image, digest=f"sha256:{digest}")
            self._images[image] = info
        return info

    async def create(self, pod: PodSpec) -> PodStatus:
        """Create the pod's containers in state created.

        Raises:
            Conflict: a pod with this uid exists already.
            Forbidden: the pod has a host path volume and host paths are not allowed.
            ImageError: an injected fault says a container's image is missing.
            RuntimeFailure: an injected fault fails a container, or two share a name.

        """
        await anyio.lowlevel.checkpoint()
        if pod.uid in self._pods:
            message = f"a pod with uid {pod.uid!r} exists already: remove it or use a new uid"
            raise Conflict(message, uid=pod.uid)
        check_container_names(pod)
        check_host_paths(pod, self.allow_host_paths, must_exist=False)
        for volume, files in pod.files.items():
            check_files(volume, files)
        for container in [*pod.init_containers, *pod.containers]:
            self._check_image(container.image, container=container.name)
            fault = self.faults.fire(FaultKind.CREATE_FAILS, container.image, container.name)
            if fault is not None:
                raise RuntimeFailure(fault.message, uid=pod.uid, container=container.name)
        record = PodRecord(pod.with_pod_ip(MOCK_POD_IP))
        self._pods[pod.uid] = record
        return record.status()

    async def start(self, uid: str) -> PodStatus:
        """Run the init containers, then start every container that is not running.

        Honours INIT_FAILS, SLOW_START and EXITS.

        Raises:
            NotFound: no such pod (or it was removed during a slow start).
            RuntimeFailure: an init container failed (INIT_FAILS); nothing was started.

        """
        await anyio.lowlevel.checkpoint()
        pod = self._get(uid)
        pod.settle(self.clock.monotonic())
        for init in pod.init_containers.values():
            if init.state == ContainerState.EXITED and init.exit_code == 0:
                continue  # succeeded once: not run again, as in Kubernetes
            init.run(self.clock.now(), self.clock.monotonic(), None)
            failed = self.faults.fire(FaultKind.INIT_FAILS, init.spec.image, init.name)
            if failed is None:
                init.finish(self.clock.now(), 0)
                continue
            if failed.message:
                init.append_log(self.clock.now(), "stderr", failed.message)
            init.finish(self.clock.now(), failed.exit_code)
            lines = [line.line for line in init.logs[-5:]]
            raise init_container_failed(uid, init.name, failed.exit_code, lines)
        started = []
        for container in pod.containers.values():
            if container.state == ContainerState.RUNNING:
                continue
            if container.state == ContainerState.EXITED:
                pod.pin_sub_paths(container)  # created anew: its sub_paths are looked up again
            image, name = container.spec.image, container.name
            slow = self.faults.fire(FaultKind.SLOW_START, image, name)
            if slow is not None:
                await self.clock.sleep(slow.seconds)
                if pod.removed:
                    raise NotFound(f"pod {uid!r} was removed while it was starting", uid=uid)
            exits = self.faults.fire(FaultKind.EXITS, image, name)
            container.run(self.clock.now(), self.clock.monotonic(), exits)
            started.append(container)
        pod.settle(self.clock.monotonic())
        if any(c.state == ContainerState.EXITED for c in started):
            self._exits.tell(uid)  # ended during its start
        return pod.status()

    async def run(self, pod: PodSpec) -> PodStatus:
        """Create the pod's containers, then start them (faults apply to each step)."""
        await self.create(pod)
        return await self.start(pod.uid)

    async def update_files(self, uid: str, volume: str, files: Sequence[ProjectedFile]) -> None:
        """Replace the files of file volume ``volume`` at once; sub_path mounts keep theirs.

        Raises:
            NotFound: no such pod, or it has no file volume named ``volume``.
            InvalidInput: the files cannot be laid out (a path twice, or with '..').

        """
        await anyio.lowlevel.checkpoint()
        pod = self._get(uid)
        if volume not in pod.files:
            names = ", ".join(pod.files) or "none"
            raise NotFound(
                f"pod {uid!r} has no file volume {volume!r} (its file volumes: {names})",
                uid=uid,
                volume=volume,
            )
        check_files(volume, files)
        pod.files[volume] = {file.path: file for file in files}

    async def stop(self, uid: str, grace: float) -> PodStatus:
        """Stop every container: exit 143 now, or 137 after ``grace`` if it ignores SIGTERM.

        Raises:
            NotFound: no such pod (or it was removed during the grace period).

        """
        await anyio.lowlevel.checkpoint()
        pod = self._get(uid)
        pod.settle(self.clock.monotonic())
        stubborn: list[ContainerRecord] = []
        for container in pod.containers.values():
            if container.state == ContainerState.EXITED:
                continue
            if container.state == ContainerState.RUNNING and self.faults.fire(
                FaultKind.IGNORES_SIGTERM, container.spec.image, container.name
            ):
                stubborn.append(container)
            else:
                container.finish(self.clock.now(), SIGTERM_EXIT)
        if stubborn:
            await self.clock.sleep(grace)
            if pod.removed:
                raise NotFound(f"pod {uid!r} was removed while it was stopping", uid=uid)
            pod.settle(self.clock.monotonic())
            for container in stubborn:
                if container.state != ContainerState.EXITED:
                    message = f"killed: SIGTERM ignored for the {grace:g}s grace period"
                    container.finish(self.clock.now(), SIGKILL_EXIT, message)
        return pod.status()

    async def remove(self, uid: str, *, keep_logs: bool = False) -> None:
        """Forget the pod, whatever its state; a missing pod is a no-op.

        With ``keep_logs`` it is kept as the pod's previous run, for its logs;
        without, the previous run kept before goes too.

        Raises:
            RuntimeFailure: an injected ``remove_fails`` fault matched; the pod stays.

        """
        await anyio.lowlevel.checkpoint()
        if not keep_logs:
            self._previous.pop(uid, None)
        pod = self._pods.get(uid)
        if pod is None:
            return
        for container in pod.spec.containers:
            fault = self.faults.fire(FaultKind.REMOVE_FAILS, container.image, container.name)
            if fault is not None:
                raise RuntimeFailure(fault.message, uid=uid)
        del self._pods[uid]
        pod.forget()
        records = [*pod.init_containers.values(), *pod.containers.values()]
        if keep_logs and any(record.started_at is not None for record in records):
            self._previous[uid] = pod  # a run none of whose containers started keeps the last

    async def prune_logs(self, keep: Collection[str]) -> list[str]:
        """Forget the previous runs kept of pods that are gone, but those of ``keep``."""
        await anyio.lowlevel.checkpoint()
        gone = sorted(uid for uid in self._previous if uid not in keep and uid not in self._pods)
        for uid in gone:
            del self._previous[uid]
        return gone

    async def inspect(self, uid: str) -> PodStatus:
        """Return the pod's status after settling due injected exits.

        Raises:
            NotFound: no such pod.

        """
        await anyio.lowlevel.checkpoint()
        pod = self._get(uid)
        pod.settle(self.clock.monotonic())
        return pod.status()

    async def list(self) -> Sequence[PodStatus]:
        """Return every pod, in creation order, after settling due injected exits.

        Raises:
            RuntimeFailure: an injected ``list_fails`` fault matched.

        """
        await anyio.lowlevel.checkpoint()
        fault = self.faults.fire(FaultKind.LIST_FAILS, None, None)
        if fault is not None:
            raise RuntimeFailure(fault.message)
        now = self.clock.monotonic()
        for pod in self._pods.values():
            pod.settle(now)
        return [pod.status() for pod in self._pods.values()]

    def logs(
        self,
        uid: str,
        container: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        previous: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Yield the container's lines; with ``follow``, new ones until it exits.

        With ``previous``, those of the pod's previous run (see :meth:`remove`).

        Raises:
            NotFound: no such pod or container, or no previous run kept (on
                first iteration).

        """

        def find() -> tuple[PodRecord, ContainerRecord]:
            if not previous:
                pod = self._get(uid)
                return pod, pod.container(container)
            kept = self._previous.get(uid)
            if kept is None:
                raise no_previous_log(uid, container, None)
            names = sorted([*kept.init_containers, *kept.containers])
            if container not in names:
                raise no_previous_log(uid, container, names)
            return kept, kept.container(container)

        return read_logs(
            find, self.clock, lambda: self._closed, follow=follow, tail=tail, since=since
        )

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        """Return the configured result for the container (default: exit 0, echo).

        Raises:
            NotFound: no such pod or container.
            Conflict: the container is not running.

        """
        await anyio.lowlevel.checkpoint()
        record = self._get(uid).container(container)
        record.settle(self.clock.monotonic())
        if record.state != ContainerState.RUNNING:
            raise Conflict(
                f"container {container!r} of pod {uid!r} is {record.state.value}, not running: "
                "start it before exec",
                uid=uid,
                container=container,
            )
        configured = self._exec_results.get(container)
        if configured is not None:
            return configured.model_copy()
        return ExecResult(exit_code=0, stdout=" ".join(command))

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        """Return configured stats for running containers and zeros for the rest.

        Raises:
            NotFound: no such pod.

        """
        await anyio.lowlevel.checkpoint()
        pod = self._get(uid)
        pod.settle(self.clock.monotonic())
        return [record.stats(self._stats.get(record.name)) for record in pod.containers.values()]

    async def aclose(self) -> None:
        """End every log follower; the pods stay (closing never stops containers)."""
        await anyio.lowlevel.checkpoint()
        self._closed = True
        for pod in self._pods.values():
            pod.wake()

    def kill(self, uid: str, container: str, exit_code: int = SIGKILL_EXIT) -> None:
        """Make a running container exit now with ``exit_code``, as a crash or OOM would.

        Raises:
            NotFound: no such pod or container.
            Conflict: the container is not running.

        """
        record = self._get(uid).container(container)
        record.settle(self.clock.monotonic())
        if record.state != ContainerState.RUNNING:
            raise Conflict(
                f"container {container!r} of pod {uid!r} is {record.state.value}: "
                "only a running container can be killed",
                uid=uid,
                container=container,
            )
        record.finish(self.clock.now(), exit_code, f"killed with exit code {exit_code}")
        self._exits.tell(uid)

    def file(self, uid: str, container: str, path: str) -> ProjectedFile:
        """Return the file (contents and mode) ``container`` reads at ``path`` of a file volume.

        Follows ``update_files`` through a whole-volume mount; a ``sub_path``
        mount gives what it held when the container was created.

        Raises:
            NotFound: no such pod or container, or no file volume's file is at ``path``.

        """
        return self._get(uid).file(container, path)

    def write_log(self, uid: str, container: str, text: str, *, stream: str = "stdout") -> None:
        """Record that the container wrote ``text`` (split into lines) on ``stream``.

        Raises:
            NotFound: no such pod or container.

        """
        self._get(uid).container(container).append_log(self.clock.now(), stream, text)

    def set_exec_result(self, container: str, result: ExecResult | None) -> None:
        """Make ``exec`` in containers named ``container`` return ``result``; None resets."""
        if result is None:
            self._exec_results.pop(container, None)
        else:
            self._exec_results[container] = result

    def set_stats(self, container: str, stats: ContainerStats | None) -> None:
        """Make ``stats`` report ``stats`` for running containers named ``container``."""
        if stats is None:
            self._stats.pop(container, None)
        else:
            self._stats[container] = stats

    def simulate_restart(self, *, keep_pods: bool = True, keep_running: bool = True) -> None:
        """Simulate the runtime (or the host) restarting under the node.

        Args:
            keep_pods: False forgets every pod, as a wiped host would; ``list``
                then returns nothing. Pulled images are kept either way.
            keep_running: With ``keep_pods``, False turns running containers
                into exited ones (code 137, message "lost in a runtime restart"),
                as a host reboot would; True keeps them running, as when only
                the node process restarted.

        """
        if not keep_pods:
            for pod in self._pods.values():
                pod.forget()
            self._pods.clear()
            return
        if keep_running:
            return
        for pod in self._pods.values():
            pod.settle(self.clock.monotonic())
            pod.kill_running(self.clock.now(), SIGKILL_EXIT, "lost in a runtime restart")

    def _check_image(self, image: str, *, container: str | None) -> None:
        if not image:
            raise ImageError("the image reference is empty: name an image such as 'busybox:1.36'")
        if self.faults.fire(FaultKind.IMAGE_MISSING, image, container) is not None:
            raise ImageError(
                f"image {image!r} not found: the registry has no such repository or tag",
                image=image,
            )

    def _get(self, uid: str) -> PodRecord:
        pod = self._pods.get(uid)
        if pod is None:
            raise NotFound(f"no pod with uid {uid!r} in the mock runtime", uid=uid)
        return pod
