"""OciCliRuntime: real containers through an OCI runtime CLI (runc; crun and youki alike).

One pod is the containers of one instance. For each pod the runtime

1. refuses host path volumes unless the node allows them (see
   :mod:`._volumes`), then asks the :class:`~shoal.runtime.ImageSource` for
   every image (before anything is written, so a refused pod or a missing
   image leaves nothing behind; what ``ensure_image`` prepared since the
   last ``create`` is taken as it is);
2. creates the pod's directory atomically (``pods/.new-*`` with ``pod.json``,
   renamed into ``pods/<uid>``: a second pod with the uid is a Conflict, and
   a crash never leaves a pod without its record);
3. gets the pod a network: none of its own in host mode (no hook), else the
   hook's network namespace, which every container joins by path, and makes
   its emptyDir volumes in the pod directory;
4. writes its file volumes (config_map, secret, downward_api, projected:
   the kubelet's ``..data`` layout, see :mod:`shoal.runtime._filevolumes`),
   which :meth:`OciCliRuntime.update_files` later swaps at once;
5. builds each container's bundle and rootfs and lets its shim run ``runc
   create`` (see :mod:`._shim` for why a shim and how the exit code is kept).
   A pod with init containers gets only theirs: its containers are created
   once the init containers have succeeded, as the kubelet does, so that a
   ``sub_path`` names what an init container wrote (status: *created*,
   "waiting for its init containers").

In host mode (no hook, or ``HostNetworking``, which is taken for none) the
file work of steps 2 to 5 (directory, /etc files, volumes, bundles, the
shims' configs) is one call in a worker thread: nothing between those steps
waits on anything else. If any step fails, everything done so
far is undone and the error raised.
``start`` first runs the init containers that have not yet succeeded, one
after another (``runc run`` each, waiting for its exit, without holding the
pod's lock so that ``stop`` and ``remove`` can end one that hangs; a non-zero
exit fails ``start`` naming it, its code and its last log lines), then is
``runc start`` (of a pod this object has just created, without asking ``runc
state`` first: its containers are created; one that died meanwhile makes
``runc start`` fail), or ``runc run`` for a container not created yet.
``run`` of a pod with init containers is ``create`` then ``start``, else one
``runc run`` per container. ``stop`` is SIGTERM, ``grace`` seconds on the
runtime's clock, then SIGKILL, waiting for the shims to record the exits (a
container never created is recorded as exited 143);
``remove`` is ``runc delete --force`` per container, the network hook's
detach, then the pod directory (emptyDir volumes included), unmounting the
rootfs and size-limited volumes first. Host paths are never deleted.

While entered (``async with``) and asked (:meth:`OciCliRuntime.on_exit`,
the :class:`~shoal.interfaces.PodExits` protocol), it watches each running
container's shim through a pidfd, and says which pod's container exited as
soon as its shim has recorded the exit and gone.

Every fact lives on disk (:mod:`._ocifiles`) or in the runtime's state
directory, never only in this object, so a new object on the same root (the
agent restarted after SIGKILL) lists the same pods, running ones running and
exited ones with their exit codes, and the node loop adopts them by uid.
"""

from __future__ import annotations

import builtins
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from shoal.interfaces import (
    AsyncClosing,
    Clock,
    Conflict,
    ContainerState,
    ContainerStats,
    ExecResult,
    ImageInfo,
    LogLine,
    NotFound,
    PodSpec,
    PodStatus,
    ProjectedFile,
    RuntimeFailure,
    SystemClock,
    Unavailable,
)
from shoal.runtime._exits import ExitListeners
from shoal.runtime._filevolumes import update_file_volume
from shoal.runtime._initcontainers import (
    LOG_LINES,
    check_container_names,
    init_container_failed,
)
from shoal.runtime.images._image_api import ImageSource, PreparedImage
from shoal.runtime.net._podnet import HostNetworking, check_host_ports

from ._ociexec import measure_stats, run_exec
from ._ocifiles import (
    ContainerFiles,
    ExitRecord,
    PodFiles,
    PodRecord,
    StartRecord,
    read_json,
    write_json,
)
from ._ocilogs import read_log
from ._ocinet import NetworkHook, pod_ports
from ._ocipod import ContainerOps, NodeSettings
from ._previous import PreviousLogs
from ._rootfs import RootfsStrategy, remove_tree
from ._runc import RuncCli
from ._volumes import check_host_paths, prepare_volumes, volume_sources

__all__ = ["REPLENISH_AFTER", "NetworkHook", "OciCliRuntime"]

log = logging.getLogger(__name__)

REPLENISH_AFTER = 0.01
"""Seconds after a pod has started before the next standby shim is started (in the background)."""


class OciCliRuntime(AsyncClosing):
    """A ContainerRuntime that runs real containers with an OCI runtime CLI.

    Args:
        images: Turns image references into unpacked layers and image configs.
        root: Directory for pods (bundles, rootfs, logs, records).
        binary: The OCI runtime: ``runc``, ``crun`` or ``youki`` (name or path).
        state_root: The runtime's ``--root``; ``<root>/runc`` by default.
        clock: Time for stop's grace period and timestamps; the system clock by default.
        allow_host_paths: Whether pods may mount host path volumes; without it,
            ``create`` refuses a pod that declares one.
        network: Pod networking hook; None (or a ``HostNetworking``, the same) for host
            networking, where a port asking for a host port other than its own is refused.
        pids_limit: Most processes per container (0: no limit).
        read_only_rootfs: Mount every container's rootfs read-only.
        rootfs: ``auto`` (overlayfs, else a copy), ``overlay`` or ``copy``.
        log_max_bytes: Rotate a container's log at this size.
        log_max_files: Log files kept per container, the current one included.
        stats_interval: Seconds over which ``stats`` measures CPU use.

    Raises:
        Unavailable: not root, or the binary is not installed.

    """

    def __init__(
        self,
        images: ImageSource,
        root: Path,
        *,
        binary: str = "runc",
        state_root: Path | None = None,
        clock: Clock | None = None,
        allow_host_paths: bool = False,
        network: NetworkHook | None = None,
        pids_limit: int = 1024,
        read_only_rootfs: bool = False,
        rootfs: RootfsStrategy = "auto",
        log_max_bytes: int = 10 * 1024 * 1024,
        log_max_files: int = 3,
        stats_interval: float = 0.1,
    ) -> None:
        if os.geteuid() != 0:
            raise Unavailable(
                f"the {Path(binary).name} runtime needs root (cgroups, mounts, namespaces): "
                "run the agent as root, or with --runtime mock"
            )
        self.name = Path(binary).name
        self.root = root
        self.images = images
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.allow_host_paths = allow_host_paths
        # HostNetworking is no hook at all (no namespace, nothing to detach):
        # a pod's files are then made in one worker-thread hop, see _create.
        self.network = None if isinstance(network, HostNetworking) else network
        self.stats_interval = stats_interval
        self.runc = RuncCli(binary, state_root if state_root is not None else root / "runc")
        self.files = PodFiles(root)
        self.previous = PreviousLogs(root)
        self.ops = ContainerOps(
            self.runc,
            self.files,
            NodeSettings(pids_limit, read_only_rootfs, rootfs, log_max_bytes, log_max_files),
        )
        self._locks: dict[str, anyio.Lock] = {}
        self._ensured: dict[str, PreparedImage] = {}
        """Images ``ensure_image`` prepared since the last ``create``, which takes them."""
        self._fresh: set[str] = set()
        """Pods this object created and has not touched since: their containers are created."""
        self._stopped: set[str] = set()
        """Pods stopped since their last ``start`` began: no further init container runs."""
        self._closed = False
        self._tasks: TaskGroup | None = None
        """Where the next standby shim is started, and shims are watched, while entered."""
        self._exits = ExitListeners()
        self._watched: set[str] = set()
        """The containers (runc ids) whose shim is watched for its exit."""
        self._unwatchable: set[str] = set()
        """Running containers whose shim could not be watched (gone): not tried each pass."""
        self._pidfds = _pidfds_work()
        """Whether this kernel has pidfds (Linux 5.3 and later): without, nothing is watched."""

    def on_exit(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """Call ``listener(pod uid)`` when a container of a pod exits (see PodExits).

        While the runtime is entered (``async with``), each running container's
        shim is watched through a pidfd: the shim exits once it has written the
        container's exit. Watched from the start of the container, or for one
        this runtime did not start (adopted after a restart of the agent) from
        the first :meth:`list` that shows it running. Listeners are told in a
        context of their own, and one that raises is logged (see
        :mod:`shoal.runtime._exits`). On a kernel without pidfds nothing is
        watched, which is logged once: the node loop's passes find the exits.
        """
        if not self._pidfds and not self._exits:
            log.info(
                "this kernel has no pidfds (Linux 5.3 or later): container exits are found "
                "by the node loop's passes, not as they happen"
            )
        return self._exits.add(listener)

    def _watch(self, status: PodStatus, *, started: bool = False) -> PodStatus:
        """Watch the shim of each running container of ``status`` not watched yet.

        A container ``started`` just now that has exited already, or whose shim
        is gone already, ended before it could be watched: that is announced
        at once. Any other container whose shim is gone (killed; the container
        may outlive it) is not tried again until it is started anew.
        """
        if self._tasks is None or not self._exits or not self._pidfds:
            return status
        ended = False
        for container in status.containers:
            if container.state != ContainerState.RUNNING:
                ended = ended or (started and container.state == ContainerState.EXITED)
                continue
            container_id = PodFiles.container_id(status.uid, container.name)
            if started:
                self._unwatchable.discard(container_id)
            if container_id in self._watched or container_id in self._unwatchable:
                continue
            pidfd = self.files.container(status.uid, container.name).open_shim()
            if pidfd is None:
                if started:  # gone between its start and now: it has ended
                    ended = True
                else:  # its shim was killed: the node loop's passes see its exit
                    self._unwatchable.add(container_id)
                continue
            self._watched.add(container_id)
            self._tasks.start_soon(self._announce_exit, status.uid, container_id, pidfd)
        if ended:
            self._exits.tell(status.uid)
        return status

    async def _announce_exit(self, uid: str, container_id: str, pidfd: int) -> None:
        """Wait until the shim of ``pidfd`` exits, then tell the listeners."""
        try:
            await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)
            self._watched.discard(container_id)
        self._exits.tell(uid)

    async def ensure_image(
        self, image: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageInfo:
        """Make ``image`` available through the image source (with the pod's credentials).

        Raises:
            ImageError: it does not exist or cannot be fetched or unpacked.

        """
        prepared = await self.images.prepare(image, credentials)
        self._ensured[image] = prepared
        return ImageInfo(reference=image, digest=prepared.digest)

    async def create(self, pod: PodSpec) -> PodStatus:
        """Create the pod's containers (not started).

        Raises:
            Conflict: a pod with this uid exists already.
            Forbidden: the pod has a host path volume and host paths are not allowed.
            InvalidInput: a host path does not exist on this node.
            ImageError: an image is missing; nothing was created.
            RuntimeFailure: a container could not be created; nothing is left behind.

        """
        return await self._create(pod, start=False)

    async def run(self, pod: PodSpec) -> PodStatus:
        """Create the pod's containers and start each as it is created (``runc run``).

        One runc call per container instead of two (``create``, then
        ``start``): what a new instance pays before it runs.

        A pod with init containers is created, then started (:meth:`start`
        runs the init containers first).

        Raises:
            Conflict, Forbidden, InvalidInput, ImageError: as :meth:`create`.
            RuntimeFailure: a container could not be created or started
                (nothing is left behind), or an init container failed (the pod
                stays, its containers created, for :meth:`remove`).

        """
        if pod.init_containers:
            await self._create(pod, start=False)
            return await self.start(pod.uid)
        return await self._create(pod, start=True)

    async def _create(self, pod: PodSpec, *, start: bool) -> PodStatus:
        check_container_names(pod)
        check_host_paths(pod, self.allow_host_paths)
        if self.network is None:
            check_host_ports(pod_ports(pod))
        directory = self.files.directory(pod.uid)
        async with self._lock(pod.uid):
            if directory.exists():
                raise Conflict(f"a pod with uid {pod.uid!r} exists already", uid=pod.uid)
            # The node loop has just ensured the images: take what that prepared.
            ensured, self._ensured = self._ensured, {}
            prepared = {
                c.name: ensured.get(c.image) or await self.images.prepare(c.image)
                for c in [*pod.init_containers, *pod.containers]
            }
            # File volumes' contents live in their volumes only, not in pod.json; the
            # environment (Secret values included) is in it, under a root-only directory.
            record = PodRecord(
                spec=pod.model_copy(update={"files": {}}), created_at=self.clock.now()
            )
            bundles: builtins.list[tuple[str, ContainerFiles]] = []
            if self.network is None:
                record.ip = "127.0.0.1"
                record.spec = record.spec.with_pod_ip(record.ip)  # the downward API's podIP
                # Nothing to wait for between the directory and the bundles: one thread hop.
                bundles = await anyio.to_thread.run_sync(
                    self._make, record, pod, prepared, start, True
                )
            else:
                # Recorded before it is attached, so that a crash during the
                # attach still detaches it (detaching a detached pod does nothing).
                record.network_attached = True
                await anyio.to_thread.run_sync(self.files.create, record)
            try:
                if self.network is not None:
                    attachment = await self.network.attach(pod.uid, pod_ports(pod))
                    record.ip = attachment.ip
                    record.netns = str(attachment.netns_path or "") or None
                    record.spec = record.spec.with_pod_ip(record.ip or "")
                    bundles = await anyio.to_thread.run_sync(
                        self._make, record, pod, prepared, start, False
                    )
                for name, files in bundles:
                    await self.ops.launch_shim(pod.uid, name, files)
                    if start:
                        started = StartRecord(started_at=self.clock.now())
                        write_json(self.files.container(pod.uid, name).started, started)
                self.files.mark_complete(record)
                if not start:
                    self._fresh.add(pod.uid)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._destroy(pod.uid)
                raise
            if not start:
                return await self.ops.status(record, self.ops.assume(record, "created"))
            await self._replenish()
            status = await self.ops.status(record, self.ops.assume(record, "running"))
            return self._watch(status, started=True)

    async def start(self, uid: str) -> PodStatus:
        """Start every container that is not running; an exited one is created anew.

        Raises:
            NotFound: no such pod.
            RuntimeFailure: a container could not be started.

        """
        async with self._lock(uid):
            record = self._record(uid)
            self._stopped.discard(uid)
        if record.spec.init_containers:
            self._fresh.discard(uid)  # its containers may have changed while inits ran
            await self._run_init_containers(record)
        async with self._lock(uid):
            record = self._record(uid)
            if uid in self._stopped:  # stopped while its init containers ran
                raise RuntimeFailure(
                    f"pod {uid!r} was stopped while its init containers ran", uid=uid
                )
            if uid in self._fresh:  # just created here: no need to ask runc what it is
                self._fresh.discard(uid)
                status = await self.ops.status(record, self.ops.assume(record, "created"))
            else:
                status = await self.ops.status(record)
            for container in status.containers:
                files = self.files.container(uid, container.name)
                if container.state == ContainerState.RUNNING:
                    continue
                if not files.shim_config.exists():  # waited for its init containers
                    for stale in (files.exit, files.started):
                        stale.unlink(missing_ok=True)
                    spec = next(c for c in record.spec.containers if c.name == container.name)
                    image = await self.images.prepare(spec.image)
                    await self.ops.create(record, container.name, image, start=True)
                    write_json(files.started, StartRecord(started_at=self.clock.now()))
                    continue
                if container.state == ContainerState.EXITED:
                    await self.ops.destroy(uid, container.name)
                    for stale in (files.exit, files.started, files.init_pid):
                        stale.unlink(missing_ok=True)
                    await anyio.to_thread.run_sync(
                        self.ops.refresh_sub_paths, record, container.name
                    )
                    await self.ops.spawn_shim(uid, container.name, files)
                elif container.state != ContainerState.CREATED:
                    raise RuntimeFailure(
                        f"container {container.name!r} of pod {uid!r} is {container.message}: "
                        "remove the pod and create it again",
                        uid=uid,
                    )
                await self.runc.start(container.id)
                write_json(files.started, StartRecord(started_at=self.clock.now()))
            await self._replenish()
            # Every container was running or has just been started (an exit shows in exit.json).
            status = await self.ops.status(record, self.ops.assume(record, "running"))
            return self._watch(status, started=True)

    async def _run_init_containers(self, record: PodRecord) -> None:
        """Run each init container that has not succeeded yet, in order, each to exit 0.

        Raises:
            RuntimeFailure: one exited non-zero, could not start, or the pod was stopped.
            NotFound: the pod was removed meanwhile.

        """
        uid = record.spec.uid
        for init in record.spec.init_containers:
            files = self.files.container(uid, init.name)
            done = read_json(files.exit, ExitRecord)
            if done is not None and done.exit_code == 0:
                continue
            async with self._lock(uid):
                record = self._record(uid)
                if uid in self._stopped:
                    raise RuntimeFailure(
                        f"pod {uid!r} was stopped before init container {init.name!r} ran",
                        uid=uid,
                        container=init.name,
                    )
            # Not under the lock: stop and remove must be able to end an init that hangs.
            ended = await self.ops.run_to_completion(record, init.name, self.clock)
            if ended.exit_code != 0:
                lines = [
                    line.line
                    async for line in read_log(
                        files.log, lambda: True, follow=False, tail=LOG_LINES, since=None
                    )
                ]
                raise init_container_failed(uid, init.name, ended.exit_code, lines)

    async def update_files(self, uid: str, volume: str, files: Sequence[ProjectedFile]) -> None:
        """Swap the files of file volume ``volume`` for ``files`` at once (``..data`` swap).

        Raises:
            NotFound: no such pod, or it has no file volume named ``volume``.
            InvalidInput: the files cannot be laid out (a path twice, or with '..').
            RuntimeFailure: a secret volume's tmpfs could not be grown.

        """
        async with self._lock(uid):
            record = self._record(uid)
            spec = next((v for v in record.spec.volumes if v.name == volume), None)
            if spec is None or not spec.files:
                file_volumes = ", ".join(v.name for v in record.spec.volumes if v.files) or "none"
                raise NotFound(
                    f"pod {uid!r} has no file volume {volume!r} (its file volumes: {file_volumes})",
                    uid=uid,
                    volume=volume,
                )
            directory = volume_sources(self.files.directory(uid), [spec])[volume]
            await anyio.to_thread.run_sync(update_file_volume, directory, spec, files)

    async def stop(self, uid: str, grace: float) -> PodStatus:
        """SIGTERM every live container, SIGKILL what still runs after ``grace`` seconds.

        Raises:
            NotFound: no such pod.
            RuntimeFailure: a container survived SIGKILL.

        """
        async with self._lock(uid):
            self._fresh.discard(uid)
            self._stopped.add(uid)
            record = self._record(uid)
            status = await self.ops.status(record)
            live = [
                c
                for c in status.containers
                if c.state in (ContainerState.RUNNING, ContainerState.CREATED)
            ]
            live += self.ops.running_init_containers(record)
            await self.ops.stop(uid, live, grace, self.clock)
            await anyio.to_thread.run_sync(self.ops.end_uncreated, record, self.clock)
            return await self.ops.status(record)

    async def remove(self, uid: str, *, keep_logs: bool = False) -> None:
        """Delete the pod's containers, network, rootfs, logs and records; missing is fine.

        With ``keep_logs`` its logs are kept as its previous run's
        (:class:`~shoal.runtime.oci._previous.PreviousLogs`); without, those kept before go too.

        Raises:
            RuntimeFailure: something could not be removed (the message says what).

        """
        if not keep_logs:
            await anyio.to_thread.run_sync(self.previous.drop, uid)
        if not self.files.exists(uid):
            await anyio.lowlevel.checkpoint()
            return
        lock = self._lock(uid)
        async with lock:
            await self._destroy(uid, keep_logs=keep_logs)
        if not lock.statistics().tasks_waiting:
            self._locks.pop(uid, None)

    async def prune_logs(self, keep: Collection[str]) -> list[str]:
        """Remove the previous runs' logs kept of pods that are gone, but those of ``keep``."""
        return await anyio.to_thread.run_sync(self.previous.prune, keep, self.files.exists)

    async def inspect(self, uid: str) -> PodStatus:
        """Return the pod's status.

        Raises:
            NotFound: no such pod.

        """
        return await self.ops.status(self._record(uid))

    async def list(self) -> Sequence[PodStatus]:
        """Return every pod under the root, oldest first, with one ``runc list`` (if any)."""
        if not self.files.uids():  # an idle node's every pass: nothing to ask runc about
            await anyio.to_thread.run_sync(self.files.sweep)
            return []
        states = await self.runc.states()
        records = [record for uid in self.files.uids() if (record := self.files.load(uid))]
        records.sort(key=lambda record: record.created_at)
        await anyio.to_thread.run_sync(self.files.sweep)
        return [self._watch(await self.ops.status(record, states)) for record in records]

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
        """Yield the container's log lines; with ``follow``, new ones until it exits.

        With ``previous``, those of the pod's previous run (see :meth:`remove`).

        Raises:
            NotFound: no such pod or container, or no previous run's log kept
                (on first iteration).

        """
        if previous:
            return self._previous_logs(uid, container, tail=tail, since=since)
        return self._logs(uid, container, follow=follow, tail=tail, since=since)

    async def _previous_logs(
        self, uid: str, container: str, *, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        path = await anyio.to_thread.run_sync(self.previous.log, uid, container)
        async for line in read_log(path, lambda: True, follow=False, tail=tail, since=since):
            yield line

    async def _logs(
        self, uid: str, container: str, *, follow: bool, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        self._container_spec(self._record(uid), container, init=True)
        files = self.files.container(uid, container)
        directory = self.files.directory(uid)

        def finished() -> bool:
            if self._closed or not directory.exists():
                return True
            return files.init_pid.exists() and files.ended()

        async for line in read_log(files.log, finished, follow=follow, tail=tail, since=since):
            yield line

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        """Run ``command`` in the running container (no TTY); kill it after ``time_limit``.

        A command that outlives ``time_limit`` is SIGKILLed and gives exit
        code 137; one that is not in the image gives 127, as in a shell.

        Raises:
            NotFound: no such pod or container.
            Conflict: the container is not running.

        """
        record = self._record(uid)
        self._container_spec(record, container)
        status = await self.ops.status(record)
        current = next(c for c in status.containers if c.name == container)
        if current.state != ContainerState.RUNNING:
            raise Conflict(
                f"container {container!r} of pod {uid!r} is {current.state.value}, not running: "
                "start it before exec",
                uid=uid,
                container=container,
            )
        files = self.files.container(uid, container)
        return await run_exec(self.runc, current.id, files.directory, command, time_limit)

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        """Return CPU (over ``stats_interval``), memory and pids of each container.

        Raises:
            NotFound: no such pod.

        """
        record = self._record(uid)
        paths = {c.name: self.ops.cgroup(uid, c.name) for c in record.spec.containers}
        return await measure_stats(paths, self.stats_interval)

    async def __aenter__(self) -> Self:
        """Own a task group for work off the starts' path (the next standby shim)."""
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close (the standby shim exits), once the task group's work is done or cancelled."""
        tasks, self._tasks = self._tasks, None
        try:
            if tasks is not None:
                tasks.cancel_scope.cancel()
                await tasks.__aexit__(None, None, None)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """End log followers; containers keep running (they belong to their shims)."""
        self._closed = True
        await self.ops.launcher.aclose()

    async def _replenish(self) -> None:
        """Have the next standby shim started, in the background when entered (``async with``).

        Only once this pod has started, so that the new interpreter does not
        compete with its ``runc run`` for the CPU; and not on the caller's
        path when there is a task group to start it in, but
        :data:`REPLENISH_AFTER` seconds later: the node loop reports the pod
        running meanwhile, without the spawn (it holds the event loop for a
        moment) or the new interpreter's start (a core's worth of CPU for tens
        of milliseconds) in its way.
        """
        if self._tasks is None:
            await self.ops.launcher.replenish()
        else:
            self._tasks.start_soon(self.ops.launcher.replenish_quietly, REPLENISH_AFTER)

    def _make(
        self,
        record: PodRecord,
        pod: PodSpec,
        prepared: Mapping[str, PreparedImage],
        start: bool,
        create: bool,
    ) -> builtins.list[tuple[str, ContainerFiles]]:
        """Lay the pod out and build the bundles it needs now (blocking: a worker thread's).

        With ``create``, its directory is made first (:meth:`PodFiles.create`:
        a Conflict leaves everything as it was), and removed again if a later
        step fails. Then its /etc files, volumes and record, every init
        container's bundle and, without init containers, each container's
        bundle and ``shim.json``, returned (container name and files) in
        order for their shims.
        """
        directory = self.files.directory(record.spec.uid)
        if create:
            self.files.create(record)
        try:
            self.files.write_etc(record)
            prepare_volumes(directory, record.spec.volumes, pod.files)
            if not create:  # else just written so, by create
                self.files.save(record)
            for init in pod.init_containers:
                self.ops.bundle(record, init.name, prepared[init.name])
            bundles = []
            # With init containers, the containers come once those have succeeded.
            for container in [] if pod.init_containers else pod.containers:
                files = self.ops.bundle(record, container.name, prepared[container.name])
                self.ops.write_shim_config(record.spec.uid, container.name, files, start=start)
                bundles.append((container.name, files))
            return bundles
        except BaseException:
            if create:  # nothing runs yet: the directory is all there is to undo
                remove_tree(directory)
            raise

    def _lock(self, uid: str) -> anyio.Lock:
        return self._locks.setdefault(uid, anyio.Lock())

    def _record(self, uid: str) -> PodRecord:
        record = self.files.load(uid)
        if record is None:
            raise NotFound(f"no pod with uid {uid!r} in the {self.name} runtime", uid=uid)
        return record

    @staticmethod
    def _container_spec(record: PodRecord, name: str, *, init: bool = False) -> None:
        """Raise NotFound unless the pod has container ``name`` (init containers: with ``init``)."""
        specs = [*record.spec.init_containers, *record.spec.containers] if init else []
        specs = specs or record.spec.containers
        if name not in {c.name for c in specs}:
            names = ", ".join(c.name for c in specs)
            raise NotFound(
                f"pod {record.spec.uid!r} has no container {name!r} (it has {names})",
                uid=record.spec.uid,
                container=name,
            )

    async def _destroy(self, uid: str, *, keep_logs: bool = False) -> None:
        self._fresh.discard(uid)
        self._stopped.discard(uid)
        directory = self.files.directory(uid)
        if not directory.exists():
            return
        record = self.files.load(uid)
        if record is not None:
            names = [c.name for c in [*record.spec.init_containers, *record.spec.containers]]
        else:
            containers = directory / "containers"
            names = sorted(p.name for p in containers.iterdir()) if containers.is_dir() else []
        for name in names:
            await self.ops.destroy(uid, name)
            self._unwatchable.discard(PodFiles.container_id(uid, name))
        if self.network is not None and (record is None or record.network_attached):
            await self.network.detach(uid)
        if keep_logs:
            files = {name: self.files.container(uid, name) for name in names}
            logs = {name: each.log for name, each in files.items()}
            # Started: its start was recorded (a silent run ran too; a created one did not).
            ran = any(each.started.exists() or each.log.exists() for each in files.values())
            keep = functools.partial(self.previous.keep, uid, logs, ran=ran)
            await anyio.to_thread.run_sync(keep)
        await anyio.to_thread.run_sync(remove_tree, directory)


def _pidfds_work() -> bool:
    """Return whether this kernel (and Python) can open a pidfd: Linux 5.3 and later."""
    try:
        pidfd = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):
        return False
    os.close(pidfd)
    return True
