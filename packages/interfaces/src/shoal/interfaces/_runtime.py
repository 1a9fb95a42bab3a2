"""The ContainerRuntime protocol: how a node runs the pods of its instances.

A runtime works on **pods**: the containers of one instance, created together
and sharing one network namespace. A pod is identified by the instance's uid,
so a node can find its pods again after a restart (:meth:`ContainerRuntime.list`).

:class:`PodAccess` is the part of a runtime that looks into running pods
(logs, exec, stats): what the service layer needs for a pod on any node.
:class:`ContainerRuntime` extends it, and a client that reaches the runtime
of another node implements it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from pydantic import Field, model_validator

from ._base import Model
from ._workload import Container, Volume, check_volumes

__all__ = [
    "CRI_RUNTIME",
    "MOCK_RUNTIME",
    "ContainerRuntime",
    "ContainerState",
    "ContainerStats",
    "ContainerStatus",
    "ExecResult",
    "ImageInfo",
    "ImageManager",
    "ImageProgress",
    "LogLine",
    "PodAccess",
    "PodExits",
    "PodSpec",
    "PodStatus",
    "ProjectedFile",
]


MOCK_RUNTIME = "mock"
"""The mock runtime's ``name`` (a fake for tests and benchmarks): its pods live in the
agent's process, and it keeps no images."""
CRI_RUNTIME = "cri"
"""The CRI runtime's ``name``: containerd keeps its images, not Shoal."""


class ProjectedFile(Model):
    """One file of a volume whose contents Shoal works out (config_map, secret, downward_api)."""

    path: str
    """Relative to the volume; may contain directories."""
    data: bytes
    """The file's contents."""
    mode: int = 0o644
    """Its mode bits."""


class PodSpec(Model):
    """What the node asks a runtime to create."""

    uid: str
    """The instance uid; the pod's identity in the runtime."""
    name: str
    """The instance name, for humans and logs."""
    namespace: str
    """The instance's namespace."""
    workload: str
    """The workload's name."""
    containers: list[Container] = Field(min_length=1)
    """The containers to create, in order."""
    volumes: list[Volume] = Field(default_factory=list)
    """The pod's volumes, which its containers mount by name."""
    init_containers: list[Container] = Field(default_factory=list)
    """Run one after another, each to exit 0, before ``containers`` start."""
    files: dict[str, list[ProjectedFile]] = Field(default_factory=dict)
    """The files of each volume whose contents Shoal works out (see ``Volume.files``), by
    volume name; the runtime writes them so that a later :meth:`ContainerRuntime.update_files`
    swaps them all at once."""

    pod_ip_env: dict[str, list[str]] = Field(default_factory=dict)
    """By container name: variables whose value is the pod's own address (the downward API's
    status.podIP), which only the runtime knows once the pod's network exists."""

    def with_pod_ip(self, ip: str) -> PodSpec:
        """Return the pod with every variable of ``pod_ip_env`` set to ``ip``.

        ``$(NAME)`` of such a variable in the container's command, args and other
        variables, which the node could not expand, is replaced too.
        """
        if not self.pod_ip_env:
            return self

        def fill(text: str, names: list[str]) -> str:
            for name in names:
                text = text.replace(f"$({name})", ip)
            return text

        def filled(containers: list[Container]) -> list[Container]:
            out = []
            for c in containers:
                names = self.pod_ip_env.get(c.name, [])
                if not names:
                    out.append(c)
                    continue
                env = {k: fill(v, names) for k, v in c.env.items()}
                update: dict[str, object] = {"env": {**env, **dict.fromkeys(names, ip)}}
                if c.command is not None:
                    update["command"] = [fill(part, names) for part in c.command]
                if c.args is not None:
                    update["args"] = [fill(part, names) for part in c.args]
                out.append(c.model_copy(update=update))
            return out

        return self.model_copy(
            update={
                "containers": filled(self.containers),
                "init_containers": filled(self.init_containers),
            }
        )

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> Self:
        check_volumes([*self.init_containers, *self.containers], self.volumes)
        return self


class ContainerState(StrEnum):
    """State of one container in the runtime."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class ContainerStatus(Model):
    """One container as the runtime sees it."""

    name: str
    """Container name within the pod."""
    id: str
    """Runtime container id."""
    state: ContainerState
    """created, running, exited or unknown."""
    exit_code: int | None = None
    """Set once exited."""
    started_at: datetime | None = None
    """When it last started."""
    finished_at: datetime | None = None
    """When it last exited."""
    message: str = ""
    """Why it is in this state, when there is something to say (e.g. OOMKilled)."""


class PodStatus(Model):
    """A pod as the runtime sees it."""

    uid: str
    """The instance uid."""
    name: str
    """The instance name."""
    namespace: str
    """The instance namespace."""
    containers: list[ContainerStatus]
    """Its containers, in creation order."""
    ip: str | None = None
    """Address its network namespace answers on (127.0.0.1 with host networking)."""

    @property
    def running(self) -> bool:
        """Return whether every container runs."""
        return all(c.state == ContainerState.RUNNING for c in self.containers)

    @property
    def exited(self) -> bool:
        """Return whether any container has exited."""
        return any(c.state == ContainerState.EXITED for c in self.containers)


class ImageInfo(Model):
    """An image present on the node."""

    reference: str
    """The reference it was asked for by."""
    digest: str
    """Content digest of its manifest."""
    size: int = 0
    """Bytes on disk."""


class LogLine(Model):
    """One line a container wrote."""

    time: datetime
    """When it was written."""
    stream: str
    """stdout or stderr."""
    line: str
    """The text, without its newline."""


class ExecResult(Model):
    """Outcome of running a command in a container."""

    exit_code: int
    """The command's exit code."""
    stdout: str = ""
    """What it wrote to stdout."""
    stderr: str = ""
    """What it wrote to stderr."""


class ContainerStats(Model):
    """Resource use of one container."""

    name: str
    """Container name within the pod."""
    cpu_millicores: int = 0
    """Recent CPU use."""
    memory_bytes: int = 0
    """Current memory use."""
    pids: int = 0
    """Number of processes."""


class ImageProgress(Model):
    """One step of pulling an image, for progress bars."""

    digest: str
    """The blob this is about."""
    kind: str
    """manifest, config or layer."""
    status: str
    """cached, downloading, downloaded or unpacked."""
    completed: int = 0
    """Bytes held so far."""
    total: int = 0
    """Bytes the blob has."""


class _ProgressLike(Protocol):
    @property
    def digest(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def completed(self) -> int: ...
    @property
    def total(self) -> int: ...


@runtime_checkable
class ImageManager(Protocol):
    """The images of a node, as an operator manages them (``shoal images``)."""

    async def list(self) -> Sequence[ImageInfo]:
        """Return every image the node holds."""
        ...

    async def pull(
        self, reference: str, *, progress: Callable[[_ProgressLike], object] | None = None
    ) -> ImageInfo:
        """Pull ``reference`` from its registry, reporting each step to ``progress``.

        Raises:
            ImageError: it cannot be found, fetched or verified.
        """
        ...

    async def import_path(
        self, path: Path | str, reference: str | None = None
    ) -> Sequence[ImageInfo]:
        """Import an OCI image layout directory or a ``docker save`` tarball.

        Raises:
            ImageError: the path is not an image.
        """
        ...

    async def remove(self, reference: str) -> Sequence[ImageInfo]:
        """Forget ``reference`` (its blobs stay until ``gc``). Raises NotFound."""
        ...

    async def gc(self, *, in_use: Iterable[str] = ()) -> int:
        """Free what no image (nor ``in_use`` digest) needs; return the bytes freed."""
        ...


@runtime_checkable
class PodAccess(Protocol):
    """Logs, exec and stats of the pods on one node, local or reached over the network.

    :class:`ContainerRuntime` extends it. An implementation that
    reaches another node also raises Unavailable when that node cannot be
    reached, and passes on the errors the node's runtime raised.
    """

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
        """Yield a container's log lines, oldest first; with ``follow``, keep yielding new ones.

        ``since`` keeps the lines written at or after it, then ``tail`` the
        last ``tail`` of those. With ``follow`` the iterator ends once the
        container exits; closing it early stops the reading. With
        ``previous``, the lines of the pod's previous run: those kept when it
        was removed to start again (:meth:`ContainerRuntime.remove` with
        ``keep_logs``), which has ended, so ``follow`` adds nothing.

        Raises:
            NotFound: no such pod or container, or (``previous``) no previous
                run's log of it is kept (on first iteration).

        """
        ...

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        """Run ``command`` in a running container; kill it after ``time_limit`` seconds.

        Raises:
            NotFound: no such pod or container.
            Conflict: the container is not running.

        """
        ...

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        """Return resource use of the pod's containers.

        Raises:
            NotFound: no such pod.

        """
        ...


@runtime_checkable
class ContainerRuntime(PodAccess, Protocol):
    """Runs pods on this node. Every method may raise RuntimeFailure."""

    name: str
    """Short name, e.g. 'mock' or 'runc'."""

    async def ensure_image(
        self, image: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageInfo:
        """Make ``image`` available locally, pulling it if needed.

        ``credentials`` — ``(user, password)`` by registry host, from the pod's
        image pull secrets — are used for this pull, before the node's own.

        Raises:
            ImageError: the image does not exist or cannot be fetched.

        """
        ...

    async def create(self, pod: PodSpec) -> PodStatus:
        """Create (not start) the pod's containers.

        Raises:
            Conflict: a pod with this uid exists already.
            RuntimeFailure: a container could not be created; nothing is left behind.

        """
        ...

    async def start(self, uid: str) -> PodStatus:
        """Start every container of the pod.

        Raises:
            NotFound: no such pod.

        """
        ...

    async def run(self, pod: PodSpec) -> PodStatus:
        """Create the pod's containers and start them: :meth:`create` then :meth:`start`.

        What the node loop calls for a new instance. A runtime may do it in
        fewer steps (``runc run`` instead of ``runc create`` then ``runc
        start``); the outcome is the same.

        Raises:
            Conflict: a pod with this uid exists already.
            RuntimeFailure: a container could not be created or started; the
                pod may be left behind created, for :meth:`remove`.

        """
        ...

    async def update_files(self, uid: str, volume: str, files: Sequence[ProjectedFile]) -> None:
        """Replace the files of one of the pod's file volumes, all at once.

        A container reading the volume sees either every old file or every new
        one (the kubelet's ``..data`` symlink swap); mounts with a sub_path keep
        what they had.

        Raises:
            NotFound: no such pod, or it has no file volume named ``volume``.

        """
        ...

    async def stop(self, uid: str, grace: float) -> PodStatus:
        """Stop the pod: SIGTERM, then SIGKILL after ``grace`` seconds.

        Raises:
            NotFound: no such pod.

        """
        ...

    async def remove(self, uid: str, *, keep_logs: bool = False) -> None:
        """Remove the pod and everything it holds. Removing a missing pod is a no-op.

        With ``keep_logs`` (the pod is removed to start it again), its
        containers' logs are kept as its previous run's, for ``logs(...,
        previous=True)``, in place of those kept before; without, those kept
        before are removed too (the pod goes for good).
        """
        ...

    async def prune_logs(self, keep: Collection[str]) -> Sequence[str]:
        """Remove the previous runs' logs kept of pods that are gone, but those of ``keep``.

        ``keep`` holds the uids of the pods whose instances this node still has
        (a pod that exists keeps its logs regardless); returns the uids whose
        kept logs went. The node loop calls it on its whole passes, so logs
        kept of an instance that left while no pod remained do not stay.
        """
        ...

    async def inspect(self, uid: str) -> PodStatus:
        """Return the pod's current status.

        Raises:
            NotFound: no such pod.

        """
        ...

    async def list(self) -> Sequence[PodStatus]:
        """Return every pod this runtime holds, for adoption after a restart."""
        ...

    async def aclose(self) -> None:
        """Release what the runtime holds open (not the containers)."""
        ...


@runtime_checkable
class PodExits(Protocol):
    """A runtime that says at once when a container of a pod exits, rather than at a list.

    Without it the node loop sees an exit at its next pass over the node's
    pods (every couple of seconds); with it, the instance is synced as soon as
    its container is gone: a crash is restarted, a job's end counted, without
    that wait. The passes stay: they catch what a notice missed.
    """

    def on_exit(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """Call ``listener(pod uid)`` whenever a container of a running pod exits.

        For the pods this runtime started or listed; a call may come for a pod
        that is already stopping or gone (the listener looks again). Returns
        the function that stops the calls.
        """
        ...
