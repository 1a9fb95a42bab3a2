"""Container-level work of :class:`~shoal.runtime.OciCliRuntime`: create, status, destroy.

A container is created by its shim (see :mod:`._shim`): the runtime writes
the bundle and ``shim.json``, hands that file to a shim (one is kept
started ahead, see :mod:`._shimlaunch`) and reads its one-line answer.
The answer comes once ``runc create`` is done, from a process that is
already detached, so nothing of the container depends on the agent
afterwards.

A container's status is derived, in this order, from

1. ``exit.json`` (written by the shim when init exited): *exited*, with the
   exit code, finish time, and OOMKilled when the cgroup's OOM killer fired;
2. the runtime's state (``runc state``, or one ``runc list`` for a whole
   listing): *created* or *running*; *stopped* without an exit file means the
   shim is still draining the pipes (waited for, briefly) or is gone (exit
   code 255 and a message saying the code was lost);
3. nothing at all: *created* ("waiting for its init containers") when the
   pod is complete and the container has no ``shim.json`` (a pod with init
   containers creates its containers once they have succeeded), *unknown*
   while a create is in flight, else exited 255.

Destroying a container is ``runc delete --force`` (kills init, removes its
state and cgroup), then waiting until its shim has recorded the exit and
quit, so that nothing writes into the pod directory once it is deleted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio

from shoal.interfaces import (
    Clock,
    Container,
    ContainerState,
    ContainerStatus,
    NotFound,
    PodStatus,
    RuntimeFailure,
)
from shoal.runtime.images._image_api import PreparedImage

from ._bundle import BundleOptions, build_config
from ._cgroups import detect_cgroups
from ._ocifiles import (
    ContainerFiles,
    ExitRecord,
    PodFiles,
    PodRecord,
    StartRecord,
    read_json,
    write_json,
    write_unread_json,
)
from ._rootfs import RootfsStrategy, prepare_rootfs
from ._runc import RuncCli, RuncState
from ._shimlaunch import ShimLauncher
from ._volumes import volume_mounts, volume_sources

__all__ = ["ContainerOps", "NodeSettings", "wait_until"]

_LOST = 255
"""Exit code reported when the real one is lost (the shim died)."""
_SIGTERM = 143
"""Exit code of a container stopped before it was ever created."""


async def wait_until(condition: Callable[[], bool], seconds: float, poll: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``seconds`` pass; return its last value."""
    # Files written by other processes (the shims) have no event to wait on: poll.
    with anyio.move_on_after(seconds):
        while True:
            if condition():
                return True
            await anyio.sleep(poll)
    return condition()


@dataclass(frozen=True)
class NodeSettings:
    """Node-wide choices that shape every container.

    Attributes:
        pids_limit: Most processes per container (0: no limit).
        read_only_rootfs: Mount every container's rootfs read-only.
        rootfs: ``auto`` (overlayfs, else copy), ``overlay`` or ``copy``.
        log_max_bytes: Rotate a container's log file at this size.
        log_max_files: Log files kept per container, the current one included.
        python: Interpreter that runs the shims.

    """

    pids_limit: int = 1024
    read_only_rootfs: bool = False
    rootfs: RootfsStrategy = "auto"
    log_max_bytes: int = 10 * 1024 * 1024
    log_max_files: int = 3
    python: str = sys.executable


class ContainerOps:
    """Creates, inspects and destroys the containers of pods under one root."""

    def __init__(self, runc: RuncCli, files: PodFiles, settings: NodeSettings) -> None:
        self.runc = runc
        self.files = files
        self.settings = settings
        self.launcher = ShimLauncher(settings.python)

    def cgroup(self, uid: str, name: str) -> str:
        """Return the cgroup path of a container."""
        return f"/shoal/{PodFiles.container_id(uid, name)}"

    def bundle(self, record: PodRecord, name: str, image: PreparedImage) -> ContainerFiles:
        """Make the container's rootfs and config.json (blocking: run in a thread).

        ``name`` is one of the pod's containers or init containers.
        """
        spec = _spec(record, name)
        files = self.files.container(record.spec.uid, name)
        files.directory.mkdir(parents=True, exist_ok=True)
        rootfs, _ = prepare_rootfs(image.layers, files.directory, self.settings.rootfs)
        pod_directory = self.files.directory(record.spec.uid)
        etc = pod_directory / "etc"
        options = BundleOptions(
            hostname=record.spec.name,
            cgroups_path=self.cgroup(record.spec.uid, name),
            netns=Path(record.netns) if record.netns else None,
            pids_limit=self.settings.pids_limit,
            read_only_rootfs=self.settings.read_only_rootfs,
            swap_accounting=detect_cgroups().swap_accounting(),
            files={f"/etc/{n}": etc / n for n in ("hosts", "resolv.conf", "hostname")},
            volumes=volume_sources(pod_directory, record.spec.volumes),
            pod_volumes=tuple(record.spec.volumes),
        )
        write_unread_json(files.config, build_config(spec, image.config, rootfs, options))
        return files

    def refresh_sub_paths(self, record: PodRecord, name: str) -> None:
        """Resolve the container's sub_path mounts again in its config.json (blocking).

        A sub_path mount binds what its path named when the container was
        created; a container created again (a restart) sees what it names now.
        """
        spec = _spec(record, name)
        if not any(mount.sub_path for mount in spec.volume_mounts):
            return
        files = self.files.container(record.spec.uid, name)
        config = json.loads(files.config.read_text())
        sources = volume_sources(self.files.directory(record.spec.uid), record.spec.volumes)
        fresh = volume_mounts(spec, sources, record.spec.volumes)
        # build_config puts the volume mounts last.
        config["mounts"][len(config["mounts"]) - len(fresh) :] = fresh
        write_json(files.config, config)

    def end_uncreated(self, record: PodRecord, clock: Clock) -> None:
        """Record containers never created (waiting for init containers) as stopped (blocking).

        No shim will ever write their ``exit.json``: this does, as SIGTERM would have.
        """
        for spec in record.spec.containers:
            files = self.files.container(record.spec.uid, spec.name)
            if not files.shim_config.exists() and not files.exit.exists():
                files.directory.mkdir(parents=True, exist_ok=True)
                write_json(files.exit, ExitRecord(exit_code=_SIGTERM, finished_at=clock.now()))

    def running_init_containers(self, record: PodRecord) -> list[ContainerStatus]:
        """Return the pod's init containers that run now (to stop them with the pod)."""
        uid = record.spec.uid
        live = []
        for spec in record.spec.init_containers:
            files = self.files.container(uid, spec.name)
            if files.shim_alive() and not files.ended():
                container_id = PodFiles.container_id(uid, spec.name)
                live.append(
                    ContainerStatus(name=spec.name, id=container_id, state=ContainerState.RUNNING)
                )
        return live

    async def run_to_completion(self, record: PodRecord, name: str, clock: Clock) -> ExitRecord:
        """Start the (init) container with its bundle made, and wait for it to exit.

        A previous run's runc state and records are cleared first; once it has
        exited its runc state and cgroup are deleted (its files stay, logs included).

        Raises:
            RuntimeFailure: it could not be started.
            NotFound: the pod was removed while it ran.

        """
        uid = record.spec.uid
        files = self.files.container(uid, name)
        if files.shim_pid.exists():  # run before
            await self.destroy(uid, name)
            for stale in (files.exit, files.started, files.init_pid):
                stale.unlink(missing_ok=True)
        await self.spawn_shim(uid, name, files, start=True)
        write_json(files.started, StartRecord(started_at=clock.now()))
        await wait_until(files.ended, float("inf"), poll=0.05)
        ended = read_json(files.exit, ExitRecord)
        if not self.files.exists(uid):
            raise NotFound(f"pod {uid!r} was removed while init container {name!r} ran", uid=uid)
        await self.destroy(uid, name)
        if ended is None:
            return ExitRecord(exit_code=_LOST, finished_at=clock.now())
        return ended

    async def create(
        self, record: PodRecord, name: str, image: PreparedImage, *, start: bool = False
    ) -> None:
        """Build the container's bundle and have its shim ``runc create`` it.

        With ``start``, the shim runs ``runc run --detach`` instead: the
        container is created and started in one runc call.

        Raises:
            RuntimeFailure: the bundle could not be made or runc refused it.

        """
        files = await anyio.to_thread.run_sync(self.bundle, record, name, image)
        await self.spawn_shim(record.spec.uid, name, files, start=start)

    async def spawn_shim(
        self, uid: str, name: str, files: ContainerFiles, *, start: bool = False
    ) -> None:
        """Start the container's shim and wait for ``runc create`` (``run`` with ``start``).

        Raises:
            RuntimeFailure: the shim or runc failed; the message is runc's.

        """
        self.write_shim_config(uid, name, files, start=start)
        await self.launch_shim(uid, name, files)

    def write_shim_config(
        self, uid: str, name: str, files: ContainerFiles, *, start: bool = False
    ) -> None:
        """Write what the container's shim is told (blocking, but brief)."""
        settings = {
            "start": start,
            "runtime": self.runc.path,
            "state_root": str(self.runc.state_root),
            "id": PodFiles.container_id(uid, name),
            "max_bytes": self.settings.log_max_bytes,
            "max_files": self.settings.log_max_files,
            "oom_file": str(detect_cgroups().oom_file(self.cgroup(uid, name)) or ""),
            **files.shim_settings(),
        }
        write_unread_json(files.shim_config, settings)
        self.runc.state_root.mkdir(parents=True, exist_ok=True)

    async def launch_shim(self, uid: str, name: str, files: ContainerFiles) -> None:
        """Hand the container's written ``shim.json`` to a shim and wait for runc.

        Raises:
            RuntimeFailure: the shim or runc failed; the message is runc's.

        """
        answer, stderr = await self.launcher.launch(files.shim_config)
        if answer.get("ok") is True:
            return
        error = answer.get("error") or stderr
        raise RuntimeFailure(
            f"container {name!r} could not be created: {error or 'the shim gave no answer'}",
            uid=uid,
            container=name,
        )

    async def destroy(self, uid: str, name: str) -> None:
        """Kill and delete the container; wait for its shim to record the end and quit.

        Raises:
            RuntimeFailure: runc could not delete it.

        """
        files = self.files.container(uid, name)
        await self.runc.delete(PodFiles.container_id(uid, name))
        if not await wait_until(lambda: not files.shim_alive(), 10.0):
            raise RuntimeFailure(
                f"the shim of container {name!r} of pod {uid!r} did not exit after its "
                f"container was deleted (pid in {files.shim_pid})",
                uid=uid,
                container=name,
            )

    async def stop(
        self, uid: str, live: Sequence[ContainerStatus], grace: float, clock: Clock
    ) -> None:
        """SIGTERM the ``live`` containers, wait ``grace`` seconds on ``clock``, SIGKILL the rest.

        Returns once every shim has recorded its container's exit.

        Raises:
            RuntimeFailure: a container survived SIGKILL for 10 seconds.

        """
        for container in live:
            await self.runc.kill(container.id, "TERM")
        files_of = [self.files.container(uid, c.name) for c in live]
        async with anyio.create_task_group() as group:

            async def grace_period() -> None:
                await clock.sleep(grace)
                group.cancel_scope.cancel()

            group.start_soon(grace_period)
            await wait_until(lambda: all(files.ended() for files in files_of), float("inf"))
            group.cancel_scope.cancel()
        for container in live:
            files = self.files.container(uid, container.name)
            if files.ended() or not await self.runc.kill(container.id, "KILL"):
                continue
            started = read_json(files.started, StartRecord)
            note = f"killed: SIGTERM ignored for the {grace:g}s grace period"
            write_json(
                files.started,
                StartRecord(
                    started_at=started.started_at if started else clock.now(), message=note
                ),
            )
        if not await wait_until(lambda: all(files.ended() for files in files_of), 10.0):
            raise RuntimeFailure(f"a container of pod {uid!r} did not die on SIGKILL", uid=uid)

    @staticmethod
    def assume(record: PodRecord, status: str) -> dict[str, RuncState]:
        """Return runtime states saying every container is ``status`` (just made so)."""
        return {
            PodFiles.container_id(record.spec.uid, c.name): RuncState("", status, 0, "")
            for c in record.spec.containers
        }

    async def status(
        self, record: PodRecord, states: dict[str, RuncState] | None = None
    ) -> PodStatus:
        """Return the pod's status from its files and the runtime's state.

        Args:
            record: The pod's record.
            states: A ``runc list`` result to use instead of one ``runc state`` each.

        """
        containers = []
        for spec in record.spec.containers:
            container_id = PodFiles.container_id(record.spec.uid, spec.name)
            files = self.files.container(record.spec.uid, spec.name)
            state = states.get(container_id) if states is not None else None
            if states is None and not files.exit.exists():
                state = await self.runc.state(container_id)
            containers.append(await self._container(record, spec.name, files, state))
        return PodStatus(
            uid=record.spec.uid,
            name=record.spec.name,
            namespace=record.spec.namespace,
            containers=containers,
            ip=record.ip,
        )

    async def _container(
        self, record: PodRecord, name: str, files: ContainerFiles, state: RuncState | None
    ) -> ContainerStatus:
        container_id = PodFiles.container_id(record.spec.uid, name)
        if state is not None and state.status == "stopped" and not files.exit.exists():
            # The shim writes exit.json once it has drained the pipes: give it a moment.
            await wait_until(lambda: files.exit.exists() or not files.shim_alive(), 5.0)
        started = read_json(files.started, StartRecord)
        started_at = started.started_at if started else None
        ended = read_json(files.exit, ExitRecord)
        if ended is not None:
            return ContainerStatus(
                name=name,
                id=container_id,
                state=ContainerState.EXITED,
                exit_code=ended.exit_code,
                started_at=started_at,
                finished_at=ended.finished_at,
                message=self._exit_message(record, name, ended, started),
            )
        waiting = state is None or state.status == "created"  # "created": assumed by create
        if record.complete and waiting and not files.shim_config.exists():
            message = "waiting for its init containers"
            return ContainerStatus(
                name=name, id=container_id, state=ContainerState.CREATED, message=message
            )
        if state is not None and state.status == "created":
            return ContainerStatus(name=name, id=container_id, state=ContainerState.CREATED)
        if state is not None and state.status in ("running", "paused"):
            return ContainerStatus(
                name=name,
                id=container_id,
                state=ContainerState.RUNNING,
                started_at=started_at or _parse_time(state.created),
            )
        if (state is None or state.status == "creating") and files.shim_alive():
            message = "being created"
            return ContainerStatus(
                name=name, id=container_id, state=ContainerState.UNKNOWN, message=message
            )
        if state is None and not record.complete:
            message = "never created: the agent stopped while creating the pod"
            return ContainerStatus(
                name=name, id=container_id, state=ContainerState.UNKNOWN, message=message
            )
        return ContainerStatus(
            name=name,
            id=container_id,
            state=ContainerState.EXITED,
            exit_code=_LOST,
            started_at=started_at,
            message="exit code lost: the container's shim is gone (was it killed, or the "
            "host rebooted?)",
        )

    def _exit_message(
        self, record: PodRecord, name: str, ended: ExitRecord, started: StartRecord | None
    ) -> str:
        if ended.oom_killed:
            spec = next(c for c in record.spec.containers if c.name == name)
            limit = spec.resources.limits.memory
            return (
                f"OOMKilled: the container used more memory than its limit "
                f"({limit} bytes); raise resources.limits.memory"
            )
        return started.message if started is not None else ""


def _spec(record: PodRecord, name: str) -> Container:
    return next(
        c for c in [*record.spec.init_containers, *record.spec.containers] if c.name == name
    )


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
