"""CriRuntime: pods on containerd (or any CRI v1 runtime) through the Kubernetes CRI.

For each pod the runtime

1. refuses host path volumes unless the node allows them, and makes sure
   every image is in the runtime's store (``ImageStatus``, else
   ``PullImage``), before anything is created;
2. makes the pod's directory under ``root`` (``pods/<uid>``): its emptyDir
   and file volumes (laid out as the runc runtime does, see
   :mod:`shoal.runtime._filevolumes`) and the ``logs/`` directory the runtime
   writes each container's CRI log into;
3. runs the pod sandbox (``RunPodSandbox``: the runtime's CNI config gives it
   its network and publishes its host ports; variables that want the pod's
   address get it now), then creates each container in it
   (``CreateContainer``), and with :meth:`CriRuntime.run` starts each. A pod
   with init containers gets its containers only once those have succeeded
   (``start`` runs them, in order, each to exit 0), as the kubelet does.

A failure undoes everything done so far. ``stop`` is ``StopContainer`` with
the grace period as its timeout (SIGTERM, then SIGKILL) for every running
container, keeping the sandbox so the pod can be started again: ``start``
starts created containers and replaces exited ones (a CRI container runs
once) in the same sandbox, keeping its address. ``remove`` stops and removes
the sandbox, which removes its containers, then the pod directory.

Nothing is kept only in this object: pods are found by their labels (see
:mod:`._cripod` and :mod:`._crilookup`), so a new object (the agent restarted) or a restarted
containerd lists the same pods and the node loop adopts them by uid. The
runtime's events API is not used: containerd 1.6 answers UNIMPLEMENTED to
``GetContainerEvents``, so status is asked for when it is needed.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from shoal.interfaces import (
    CRI_RUNTIME,
    AsyncClosing,
    Conflict,
    Container,
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
    ShoalError,
    Unavailable,
)
from shoal.runtime._filevolumes import update_file_volume
from shoal.runtime._initcontainers import LOG_LINES, check_container_names, init_container_failed
from shoal.runtime.oci._ociexec import measure_stats
from shoal.runtime.oci._previous import PreviousLogs
from shoal.runtime.oci._rootfs import remove_tree
from shoal.runtime.oci._volumes import check_host_paths, prepare_volumes, volume_sources

from ._client import DEFAULT_ENDPOINT, CriClient, check_cri, pb
from ._crilogs import read_cri_log
from ._crilookup import CriPod, PodLookup, spec_of
from ._cripod import (
    LABEL_OWNER,
    LABEL_UID,
    container_config,
    container_status,
    ordered,
    sandbox_config,
)
from ._images import CriImages

__all__ = ["RUNTIME_NOTE", "CriRuntime"]

RUNTIME_NOTE = "runtime.json"
"""The file under the runtime's root naming its owner and endpoint."""


async def _done() -> bool:
    await anyio.lowlevel.checkpoint()
    return True


class CriRuntime(AsyncClosing):
    """A ContainerRuntime over the Kubernetes CRI v1 API (containerd, CRI-O).

    Args:
        root: Directory for pod directories (emptyDir volumes, CRI logs).
        endpoint: The runtime's socket, ``unix:///run/containerd/containerd.sock``.
        owner: The label value that marks this node's pods; two agents sharing
            one containerd need different owners.
        allow_host_paths: Whether pods may mount host path volumes.
        host_network: Run pods in the node's network namespace instead of
            the runtime's CNI network.
        host_ip: Host address published ports are bound to.
        cgroup_parent: The cgroup (cgroupfs driver) pods' containers are put under.
        stats_interval: Seconds over which ``stats`` measures CPU use.
        client: A client to use instead of one for ``endpoint``.

    """

    name = CRI_RUNTIME

    def __init__(
        self,
        root: Path,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        owner: str = "shoal",
        allow_host_paths: bool = False,
        host_network: bool = False,
        host_ip: str = "127.0.0.1",
        cgroup_parent: str = "/shoal-cri",
        stats_interval: float = 0.1,
        client: CriClient | None = None,
    ) -> None:
        self.root = root
        self.previous = PreviousLogs(root)
        self.client = client if client is not None else CriClient(endpoint)
        self.endpoint = self.client.endpoint
        self.owner = owner
        self.allow_host_paths = allow_host_paths
        self.host_network = host_network
        self.host_ip = host_ip
        self.cgroup_parent = cgroup_parent
        self.stats_interval = stats_interval
        self.images = CriImages(self.client)
        self.pods = PodLookup(self.client, owner, host_network=host_network)
        """Finds this owner's pods by their labels (see :mod:`._crilookup`)."""
        self._locks: dict[str, anyio.Lock] = {}
        self._present: set[str] = set()
        """Images ``ensure_image`` found since the last ``create``, which need no second look."""
        self._closed = False

    async def connect(self) -> pb.VersionResponse:
        """Check that the endpoint answers CRI v1 and is ready; return its version.

        Ready means the runtime says so (``Status``: RuntimeReady) and, unless
        pods use the host's network, that it has a CNI network (NetworkReady):
        without one every sandbox would fail.

        Raises:
            Unavailable: it cannot be reached, does not speak CRI v1, or is not
                ready (the message names the condition and the fix).

        """
        version = await check_cri(self.client)
        reply = await self.client.runtime("Status", pb.StatusRequest(), pb.StatusResponse)
        conditions = {c.type: c for c in reply.status.conditions}
        needed = ["RuntimeReady"] if self.host_network else ["RuntimeReady", "NetworkReady"]
        for name in needed:
            condition = conditions.get(name)
            if condition is not None and not condition.status:
                fix = (
                    "write a CNI network for it (`make run RUNTIME=cri` runs "
                    "scripts/setup_containerd.py, which writes Shoal's bridge network), "
                    "or start the agent with --network host"
                    if name == "NetworkReady"
                    else "see the runtime's log"
                )
                raise Unavailable(
                    f"the CRI runtime at {self.endpoint} is not ready: {name} is false "
                    f"({condition.reason}: {condition.message}); {fix}",
                    endpoint=self.endpoint,
                    condition=name,
                )
        await anyio.to_thread.run_sync(self._note_runtime)
        return version

    def _note_runtime(self) -> None:
        """Write ``root/runtime.json`` (owner, endpoint), so a reset finds the pods (blocking)."""
        self.root.mkdir(parents=True, exist_ok=True)
        note = {"owner": self.owner, "endpoint": self.endpoint}
        temporary = self.root / ".runtime.json.tmp"
        temporary.write_text(json.dumps(note) + "\n")
        temporary.replace(self.root / RUNTIME_NOTE)

    @classmethod
    def of_root(cls, root: Path, **options: Any) -> CriRuntime | None:
        """Return a runtime for the pods a CriRuntime on ``root`` ran, or None if none did.

        For ``shoal node reset``: the owner and endpoint are those the node's
        runtime noted when it connected (``root/runtime.json``).
        """
        try:
            note = json.loads((root / RUNTIME_NOTE).read_text())
        except (OSError, ValueError):
            return None
        return cls(root, endpoint=str(note["endpoint"]), owner=str(note["owner"]), **options)

    async def __aenter__(self) -> CriRuntime:
        await self.connect()
        return self

    async def ensure_image(
        self, image: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageInfo:
        """Make ``image`` present in the runtime's image store, pulling it if needed.

        ``credentials`` (the pod's, by registry) go with the pull, before the node's own.

        Raises:
            ImageError: it is not there and cannot be pulled (the runtime's reason).

        """
        info = await self.images.ensure(image, credentials)
        self._present.add(image)
        return info

    async def create(self, pod: PodSpec) -> PodStatus:
        """Create the pod's sandbox and containers (not started).

        Raises:
            Conflict: a pod with this uid exists already.
            Forbidden: the pod has a host path volume and host paths are not allowed.
            InvalidInput: a host path does not exist, or a port cannot be published.
            ImageError: an image is missing and cannot be pulled; nothing was created.
            RuntimeFailure: the runtime failed; nothing is left behind.

        """
        return await self._create(pod, start=False)

    async def run(self, pod: PodSpec) -> PodStatus:
        """Create the pod and start each container as it is created.

        A pod with init containers is created, then started (:meth:`start`
        runs the init containers first).

        Raises:
            Conflict, Forbidden, InvalidInput, ImageError: as :meth:`create`.
            RuntimeFailure: a container could not be created or started
                (nothing is left behind), or an init container failed (the pod
                stays, its containers created, for :meth:`remove` or another
                :meth:`start`).

        """
        if pod.init_containers:
            await self._create(pod, start=False)
            return await self.start(pod.uid)
        return await self._create(pod, start=True)

    async def _create(self, pod: PodSpec, *, start: bool) -> PodStatus:
        check_container_names(pod)
        check_host_paths(pod, self.allow_host_paths)
        async with self._lock(pod.uid):
            if await self.pods.find(pod.uid) is not None:
                raise Conflict(f"a pod with uid {pod.uid!r} exists already", uid=pod.uid)
            present, self._present = self._present, set()
            for image in dict.fromkeys(c.image for c in [*pod.init_containers, *pod.containers]):
                if image not in present:
                    await self.images.ensure(image)
            directory = self._directory(pod.uid)
            config = sandbox_config(
                pod,
                owner=self.owner,
                log_directory=directory / "logs",
                cgroup_parent=self.cgroup_parent,
                host_network=self.host_network,
                host_ip=self.host_ip,
            )
            try:
                await anyio.to_thread.run_sync(self._lay_out, pod)
                reply = await self.client.runtime(
                    "RunPodSandbox",
                    pb.RunPodSandboxRequest(config=config),
                    pb.RunPodSandboxResponse,
                )
                self.pods.ids[pod.uid] = reply.pod_sandbox_id
                if pod.pod_ip_env:  # the downward API's podIP: known now that the sandbox is
                    sandbox = await self.pods.sandbox_status(reply.pod_sandbox_id)
                    pod = pod.with_pod_ip(self.pods.ip(sandbox) or "")
                sources = volume_sources(directory, pod.volumes)
                # With init containers, the containers are created once those succeed
                # (as the kubelet does): a sub_path may name what an init container wrote.
                for index, container in enumerate([] if pod.init_containers else pod.containers):
                    container_id = await self._create_container(
                        reply.pod_sandbox_id, config, pod, container, str(index), sources
                    )
                    if start:
                        await self._start_container(pod, container.name, container_id)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._destroy(pod.uid)
                raise
        return await self.inspect(pod.uid)

    async def _create_container(
        self,
        sandbox_id: str,
        config: pb.PodSandboxConfig,
        pod: PodSpec,
        container: Container,
        key: str,
        sources: dict[str, Path],
        attempt: int = 0,
    ) -> str:
        settings = await anyio.to_thread.run_sync(
            functools.partial(
                container_config,
                pod,
                container,
                key,
                owner=self.owner,
                volume_sources=sources,
                host_network=self.host_network,
                attempt=attempt,
            )
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=settings, sandbox_config=config
        )
        try:
            reply = await self.client.runtime(
                "CreateContainer", request, pb.CreateContainerResponse
            )
        except NotFound as exc:  # the image went away since it was ensured
            image = container.image
            raise ImageError(f"image {image!r} is not in the runtime: {exc}", image=image) from exc
        return reply.container_id

    async def _run_inits(
        self,
        sandbox_id: str,
        config: pb.PodSandboxConfig,
        pod: PodSpec,
        sources: dict[str, Path],
        previous: Sequence[pb.Container],
    ) -> None:
        """Run the pod's init containers one after another, each to exit 0.

        One that exited 0 before (``previous``) is not run again.

        Raises:
            RuntimeFailure: one could not start or exited with another code.

        """
        done = {c.metadata.name: c for c in previous}
        for index, container in enumerate(pod.init_containers):
            old = done.get(container.name)
            attempt = 0
            if old is not None:
                status = await self.pods.container_status(old.id)
                if status.state == pb.CONTAINER_EXITED and status.exit_code == 0:
                    continue
                attempt = old.metadata.attempt + 1
                await self._remove_container(old.id)
            container_id = await self._create_container(
                sandbox_id, config, pod, container, f"init-{index}", sources, attempt
            )
            await self._start_container(pod, container.name, container_id)
            while True:
                status = await self.pods.container_status(container_id)
                if status.state == pb.CONTAINER_EXITED:
                    break
                # CRI 1.6 has no event for an exit (GetContainerEvents is UNIMPLEMENTED): poll.
                await anyio.sleep(0.05)
            if status.exit_code != 0:
                path = self._directory(pod.uid) / "logs" / f"{container.name}.log"
                lines = [
                    line.line
                    async for line in read_cri_log(
                        path, _done, follow=False, tail=LOG_LINES, since=None
                    )
                ]
                raise init_container_failed(pod.uid, container.name, status.exit_code, lines)

    async def _start_container(self, pod: PodSpec, name: str, container_id: str) -> None:
        try:
            await self.client.runtime(
                "StartContainer",
                pb.StartContainerRequest(container_id=container_id),
                pb.StartContainerResponse,
            )
        except ShoalError as exc:
            raise RuntimeFailure(
                f"container {name!r} of pod {pod.uid!r} could not start: {exc.message}",
                uid=pod.uid,
                container=name,
            ) from exc

    async def start(self, uid: str) -> PodStatus:
        """Run the init containers that have not succeeded, then start the containers.

        Created containers are started; exited ones are replaced by new ones
        in the same sandbox (a CRI container runs once), keeping its address.

        Raises:
            NotFound: no such pod.
            RuntimeFailure: the sandbox is gone (remove the pod and create it
                again), an init container failed (naming it, with its last log
                lines), or a container could not be started.

        """
        pod = await self._ready_pod(uid)
        running = {c.metadata.name for c in pod.containers if c.state == pb.CONTAINER_RUNNING}
        if pod.spec.init_containers and any(c.name not in running for c in pod.spec.containers):
            # Not under the pod's lock: stop and remove must be able to end an init that hangs.
            config, sources = self._configs(pod.spec)
            filled = pod.spec.with_pod_ip(self.pods.ip(pod.sandbox) or "")
            await self._run_inits(pod.sandbox.id, config, filled, sources, pod.inits)
        async with self._lock(uid):
            pod = await self._ready_pod(uid)
            config, sources = self._configs(pod.spec)
            filled = pod.spec.with_pod_ip(self.pods.ip(pod.sandbox) or "")
            for index, spec in enumerate(filled.containers):
                current = next((c for c in pod.containers if c.metadata.name == spec.name), None)
                if current is not None and current.state == pb.CONTAINER_RUNNING:
                    continue
                if current is not None and current.state == pb.CONTAINER_CREATED:
                    await self._start_container(pod.spec, spec.name, current.id)
                    continue
                attempt = 0
                if current is not None:
                    attempt = current.metadata.attempt + 1
                    await self._remove_container(current.id)
                container_id = await self._create_container(
                    pod.sandbox.id, config, filled, spec, str(index), sources, attempt
                )
                await self._start_container(pod.spec, spec.name, container_id)
        return await self.inspect(uid)

    async def _ready_pod(self, uid: str) -> CriPod:
        pod = await self.pods.get(uid)
        if pod.sandbox.state != pb.SANDBOX_READY:
            raise RuntimeFailure(
                f"the sandbox of pod {uid!r} is not ready (its network is gone): "
                "remove the pod and create it again",
                uid=uid,
            )
        return pod

    def _configs(self, pod: PodSpec) -> tuple[pb.PodSandboxConfig, dict[str, Path]]:
        """Return the pod's sandbox config and the host path of each of its volumes."""
        directory = self._directory(pod.uid)
        config = sandbox_config(
            pod,
            owner=self.owner,
            log_directory=directory / "logs",
            cgroup_parent=self.cgroup_parent,
            host_network=self.host_network,
            host_ip=self.host_ip,
        )
        return config, volume_sources(directory, pod.volumes)

    async def update_files(self, uid: str, volume: str, files: Sequence[ProjectedFile]) -> None:
        """Replace the files of one of the pod's file volumes, all at once.

        The volume is laid out as the kubelet does (a ``..data`` symlink swap, see
        :mod:`shoal.runtime._filevolumes`); a container sees the new set at once.

        Raises:
            NotFound: no such pod, or it has no file volume named ``volume``.

        """
        pod = await self.pods.get(uid)
        spec = next((v for v in pod.spec.volumes if v.name == volume and v.files), None)
        if spec is None:
            raise NotFound(
                f"pod {uid!r} has no config_map, secret, downward_api or projected volume "
                f"named {volume!r}",
                uid=uid,
                volume=volume,
            )
        target = self._directory(uid) / "volumes" / volume
        await anyio.to_thread.run_sync(update_file_volume, target, spec, files)

    async def stop(self, uid: str, grace: float) -> PodStatus:
        """SIGTERM every running container, SIGKILL after ``grace`` seconds (whole seconds, up).

        Raises:
            NotFound: no such pod.

        """
        timeout = max(0, math.ceil(grace))
        async with self._lock(uid):
            pod = await self.pods.get(uid)
            running = [c.id for c in pod.containers if c.state == pb.CONTAINER_RUNNING]

            async def stop_one(container_id: str) -> None:
                request = pb.StopContainerRequest(container_id=container_id, timeout=timeout)
                await self.client.runtime(
                    "StopContainer", request, pb.StopContainerResponse, deadline=timeout + 30
                )

            async with anyio.create_task_group() as group:
                for container_id in running:
                    group.start_soon(stop_one, container_id)
        return await self.inspect(uid)

    async def remove(self, uid: str, *, keep_logs: bool = False) -> None:
        """Stop and remove the pod's sandbox (and containers), then its directory.

        Removing a missing pod does nothing. With ``keep_logs`` its logs are
        kept as its previous run's (:class:`~shoal.runtime.oci._previous.PreviousLogs`);
        without, those kept before go too.

        Raises:
            RuntimeFailure: the runtime could not remove it (the message says why).

        """
        if not keep_logs:
            await anyio.to_thread.run_sync(self.previous.drop, uid)
        lock = self._lock(uid)
        async with lock:
            await self._destroy(uid, keep_logs=keep_logs)
        if not lock.statistics().tasks_waiting:
            self._locks.pop(uid, None)

    async def prune_logs(self, keep: Collection[str]) -> list[str]:
        """Remove the previous runs' logs kept of pods that are gone, but those of ``keep``."""

        def pod_exists(uid: str) -> bool:
            return self._directory(uid).is_dir()

        return await anyio.to_thread.run_sync(self.previous.prune, keep, pod_exists)

    async def inspect(self, uid: str) -> PodStatus:
        """Return the pod's status.

        Raises:
            NotFound: no such pod.

        """
        return await self.pods.status(await self.pods.get(uid))

    async def list(self) -> Sequence[PodStatus]:
        """Return every pod of this owner in the runtime, oldest first."""
        sandboxes = await self.pods.sandboxes({LABEL_OWNER: self.owner})
        if not sandboxes:
            return []
        reply = await self.client.runtime(
            "ListContainers",
            pb.ListContainersRequest(
                filter=pb.ContainerFilter(label_selector={LABEL_OWNER: self.owner})
            ),
            pb.ListContainersResponse,
        )
        by_sandbox: dict[str, list[pb.Container]] = {}
        for container in reply.containers:
            by_sandbox.setdefault(container.pod_sandbox_id, []).append(container)
        newest: dict[str, pb.PodSandbox] = {}
        for sandbox in sorted(sandboxes, key=lambda s: s.created_at):
            newest[sandbox.labels[LABEL_UID]] = sandbox
        result = []
        for uid, sandbox in newest.items():
            try:
                status = await self.pods.sandbox_status(sandbox.id)
            except NotFound:  # removed meanwhile
                continue
            self.pods.ids[uid] = sandbox.id
            pod = CriPod(spec_of(status), status, ordered(by_sandbox.get(sandbox.id, [])))
            result.append(await self.pods.status(pod))
        return result

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
        """Yield the container's log lines (CRI log format); with ``follow``, until it exits.

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

        async def finished() -> bool:
            return True

        async for line in read_cri_log(path, finished, follow=False, tail=tail, since=since):
            yield line

    async def _logs(
        self, uid: str, container: str, *, follow: bool, tail: int | None, since: datetime | None
    ) -> AsyncIterator[LogLine]:
        pod = await self.pods.get(uid)
        if container not in {c.name for c in [*pod.spec.init_containers, *pod.spec.containers]}:
            pod.container(container)  # raises NotFound naming the containers
        path = self._directory(uid) / "logs" / f"{container}.log"

        async def finished() -> bool:
            if self._closed:
                return True
            try:
                current = (await self.pods.get(uid)).container(container, init=True)
            except NotFound:
                return True
            return current.state == pb.CONTAINER_EXITED

        async for line in read_cri_log(path, finished, follow=follow, tail=tail, since=since):
            yield line

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        """Run ``command`` in the running container (``ExecSync``); kill it after ``time_limit``.

        A command that outlives ``time_limit`` gives exit code 137; one that is
        not in the image gives 127, as in a shell.

        Raises:
            NotFound: no such pod or container.
            Conflict: the container is not running.

        """
        pod = await self.pods.get(uid)
        if container in {c.name for c in pod.spec.containers} and container not in {
            c.metadata.name for c in pod.containers
        }:
            raise Conflict(
                f"container {container!r} of pod {uid!r} is waiting for its init containers, "
                "not running: start the pod before exec",
                uid=uid,
                container=container,
            )
        current = pod.container(container)
        if current.state != pb.CONTAINER_RUNNING:
            state = container_status(container, await self.pods.container_status(current.id)).state
            raise Conflict(
                f"container {container!r} of pod {uid!r} is {state.value}, not running: "
                "start it before exec",
                uid=uid,
                container=container,
            )
        seconds = max(1, math.ceil(time_limit))
        request = pb.ExecSyncRequest(container_id=current.id, cmd=list(command), timeout=seconds)
        try:
            reply = await self.client.runtime(
                "ExecSync", request, pb.ExecSyncResponse, deadline=seconds + 30
            )
        except RuntimeFailure as exc:
            message = exc.message
            if "timeout" in message.lower() or "deadline" in message.lower():
                return ExecResult(exit_code=137, stderr=f"killed after {time_limit}s: {message}")
            if "not found" in message or "no such file" in message:
                return ExecResult(exit_code=127, stderr=message)
            if "permission denied" in message:
                return ExecResult(exit_code=126, stderr=message)
            raise
        return ExecResult(
            exit_code=reply.exit_code,
            stdout=reply.stdout.decode("utf-8", errors="replace"),
            stderr=reply.stderr.decode("utf-8", errors="replace"),
        )

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        """Return CPU (over ``stats_interval``), memory and pids of each container.

        Read from the containers' cgroups (``<cgroup_parent>/<container id>``,
        the cgroupfs driver's layout), as the runc runtime measures them.

        Raises:
            NotFound: no such pod.

        """
        pod = await self.pods.get(uid)
        ids = {c.metadata.name: c.id for c in pod.containers}
        paths = {
            spec.name: f"{self.cgroup_parent.rstrip('/')}/{ids.get(spec.name, 'none')}"
            for spec in pod.spec.containers
        }
        return await measure_stats(paths, self.stats_interval)

    async def aclose(self) -> None:
        """End log followers and close the connection; pods keep running."""
        self._closed = True
        await self.client.aclose()

    # -- helpers --------------------------------------------------------------

    def _directory(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def _lay_out(self, pod: PodSpec) -> None:
        directory = self._directory(pod.uid)
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        prepare_volumes(directory, pod.volumes, pod.files)

    def _lock(self, uid: str) -> anyio.Lock:
        return self._locks.setdefault(uid, anyio.Lock())

    async def _remove_container(self, container_id: str) -> None:
        try:
            await self.client.runtime(
                "RemoveContainer",
                pb.RemoveContainerRequest(container_id=container_id),
                pb.RemoveContainerResponse,
            )
        except NotFound:
            await anyio.lowlevel.checkpoint()

    async def _destroy(self, uid: str, *, keep_logs: bool = False) -> None:
        self.pods.ids.pop(uid, None)
        for sandbox in await self.pods.sandboxes({LABEL_OWNER: self.owner, LABEL_UID: uid}):
            for call, request, reply in (
                ("StopPodSandbox", pb.StopPodSandboxRequest, pb.StopPodSandboxResponse),
                ("RemovePodSandbox", pb.RemovePodSandboxRequest, pb.RemovePodSandboxResponse),
            ):
                try:
                    await self.client.runtime(call, request(pod_sandbox_id=sandbox.id), reply)
                except NotFound:
                    break
        directory = self._directory(uid)
        if keep_logs and directory.is_dir():
            # containerd makes a container's log file as it starts it: none, none started.
            logs = {log.stem: log for log in (directory / "logs").glob("*.log")}
            keep = functools.partial(self.previous.keep, uid, logs, ran=bool(logs))
            await anyio.to_thread.run_sync(keep)
        await anyio.to_thread.run_sync(remove_tree, directory)
