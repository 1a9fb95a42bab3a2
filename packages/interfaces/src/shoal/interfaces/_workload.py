"""The workload: desired state that operators and agents apply.

A :class:`WorkloadSpec` is what a user writes (YAML or JSON); a
:class:`Workload` is the stored object: the spec plus identity, generation and
the status the control loop observes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from ._base import Model
from ._fielddocs import fields_described
from ._quantity import Cpu, Memory

__all__ = [
    "MAX_REPLICAS",
    "Condition",
    "Container",
    "CountOrPercent",
    "EmptyDirVolume",
    "ExecAction",
    "HostPathVolume",
    "HttpGetAction",
    "Name",
    "Placement",
    "PlacementStrategy",
    "PodTemplate",
    "Port",
    "Probe",
    "ResourceList",
    "Resources",
    "RestartPolicy",
    "Revision",
    "TcpSocketAction",
    "UpdateStrategy",
    "UpdateType",
    "Volume",
    "VolumeMount",
    "Workload",
    "WorkloadPhase",
    "WorkloadSpec",
    "WorkloadStatus",
]

MAX_REPLICAS = 10_000
"""The most replicas one workload may ask for (every front door checks the same limit)."""

Name = Annotated[
    str,
    StringConstraints(max_length=50, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
"""A DNS-1123 label of at most 50 characters: lowercase letters, digits and '-'."""


class Spec(Model):
    """Base of user-written models: unknown fields are an error, not ignored."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=fields_described(),
        defer_build=True,
    )


class RestartPolicy(StrEnum):
    """When a finished container is started again."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class PlacementStrategy(StrEnum):
    """How the scheduler ranks the nodes that fit."""

    BINPACK = "binpack"
    SPREAD = "spread"


class Port(Spec):
    """A port the container listens on, optionally published on the node."""

    container_port: int = Field(ge=1, le=65535)
    """Port inside the container."""
    host_port: int | None = Field(default=None, ge=1, le=65535)
    """Port published on the node; two instances on one node cannot share it."""
    protocol: Literal["tcp", "udp"] = "tcp"
    """Transport protocol."""
    name: str | None = None
    """Optional name, for probes and humans."""


class ResourceList(Spec):
    """An amount of CPU and memory."""

    cpu: Cpu = 0
    """CPU in millicores; write '500m', '1.5' or a number of cores."""
    memory: Memory = 0
    """Memory in bytes; write '256Mi', '1G' or a number of bytes."""


class Resources(Spec):
    """What a container asks the scheduler for, and the most it may use."""

    requests: ResourceList = ResourceList()
    """Reserved on the node by the scheduler."""
    limits: ResourceList = ResourceList()
    """Enforced by the runtime; 0 means no limit."""


class ExecAction(Spec):
    """Run a command inside the container; exit code 0 is success."""

    command: list[str] = Field(min_length=1)
    """The command and its arguments."""


class HttpGetAction(Spec):
    """HTTP GET against the container; a 2xx or 3xx status is success."""

    port: int = Field(ge=1, le=65535)
    """Container port to connect to."""
    path: str = "/"
    """Request path."""


class TcpSocketAction(Spec):
    """Open a TCP connection to the container; connecting is success."""

    port: int = Field(ge=1, le=65535)
    """Container port to connect to."""


class Probe(Spec):
    """A periodic health check with Kubernetes semantics. Exactly one action is set."""

    exec: ExecAction | None = None
    """Run a command."""
    http_get: HttpGetAction | None = None
    """Send an HTTP GET."""
    tcp_socket: TcpSocketAction | None = None
    """Open a TCP connection."""
    initial_delay_seconds: float = Field(default=0, ge=0)
    """Wait this long after start before the first check."""
    period_seconds: float = Field(default=10, gt=0)
    """Time between checks."""
    timeout_seconds: float = Field(default=1, gt=0)
    """A check that takes longer has failed."""
    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failures before the probe counts as failed."""
    success_threshold: int = Field(default=1, ge=1)
    """Consecutive successes before the probe counts as passing again."""

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        actions = [a for a in (self.exec, self.http_get, self.tcp_socket) if a is not None]
        if len(actions) != 1:
            raise ValueError("a probe needs exactly one of exec, http_get or tcp_socket")
        return self


def _absolute_path(path: str, what: str) -> str:
    """Return ``path`` if it is absolute and has no '..'; raise ValueError saying the fix."""
    if not path.startswith("/"):
        raise ValueError(f"{what} {path!r} is relative: give an absolute path such as '/data'")
    if ".." in path.split("/"):
        raise ValueError(f"{what} {path!r} contains '..': write the path without it")
    return path


class EmptyDirVolume(Spec):
    """Scratch space that starts empty when the instance is created and is deleted with it.

    Every container of the pod that mounts it sees the same files; they survive
    container restarts, not the instance.
    """

    size_limit: Memory = 0
    """Most bytes it may hold; 0 means no limit (a directory on the node's disk). A limit is
    enforced: the volume is then a tmpfs of that size, its contents use the node's memory, and
    a write past the limit fails with 'No space left on device'."""


class HostPathVolume(Spec):
    """A file or directory of the node, mounted as it is (writes reach the node).

    Only nodes whose agent runs with --allow-host-paths accept it; any other node
    fails the instance with a message saying so.
    """

    path: str
    """Absolute path on the node, without '..'; it must exist when the instance is created."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return _absolute_path(path, "host path")


class Volume(Spec):
    """Storage that the containers of a pod can mount. Exactly one source is set."""

    name: Name
    """Unique within the pod; a container's volume_mounts name it."""
    empty_dir: EmptyDirVolume | None = None
    """Scratch space created empty with the instance and deleted with it."""
    host_path: HostPathVolume | None = None
    """A path of the node (only where the node allows host paths)."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [s for s in (self.empty_dir, self.host_path) if s is not None]
        if len(sources) != 1:
            raise ValueError(
                f"volume {self.name!r} needs exactly one of empty_dir or host_path "
                "(write 'empty_dir: {}' for scratch space)"
            )
        return self


class VolumeMount(Spec):
    """Where a pod volume appears inside one container."""

    name: Name
    """The volume to mount: the name of one of the template's volumes."""
    mount_path: str
    """Absolute path inside the container, without '..'; unique within the container."""
    read_only: bool = False
    """Mount read-only: writes through this mount fail."""

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        _absolute_path(path, "mount_path")
        if posixpath.normpath(path) in ("/", "//"):
            raise ValueError("mount_path '/' would hide the image: mount the volume on a directory")
        return path


def check_volumes(containers: Sequence[Container], volumes: Sequence[Volume]) -> None:
    """Check that volume names are unique and that every mount names a volume.

    Raises:
        ValueError: a volume name is used twice or a mount names no volume of the pod.

    """
    names: set[str] = set()
    for volume in volumes:
        if volume.name in names:
            raise ValueError(
                f"volume name {volume.name!r} is used twice: give each volume of the pod "
                "its own name"
            )
        names.add(volume.name)
    for container in containers:
        for mount in container.volume_mounts:
            if mount.name not in names:
                defined = ", ".join(sorted(names)) or "none"
                raise ValueError(
                    f"container {container.name!r} mounts volume {mount.name!r}, which the "
                    f"pod does not define (its volumes: {defined}): add it to the template's "
                    "volumes or correct the name"
                )


class Container(Spec):
    """One container of a pod."""

    name: Name
    """Unique within the pod."""
    image: str = Field(min_length=1)
    """OCI image reference, e.g. 'busybox:1.36' or 'registry:5000/app@sha256:...'."""
    command: list[str] | None = None
    """Replaces the image's entrypoint (Kubernetes semantics)."""
    args: list[str] | None = None
    """Replaces the image's cmd (Kubernetes semantics)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables, added to the image's."""
    working_dir: str | None = None
    """Working directory; defaults to the image's."""
    ports: list[Port] = Field(default_factory=list)
    """Ports the container listens on."""
    resources: Resources = Resources()
    """Requests (for scheduling) and limits (enforced)."""
    liveness_probe: Probe | None = None
    """Restart the container when this fails."""
    readiness_probe: Probe | None = None
    """The instance counts as ready only while this passes."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    """Pod volumes mounted into this container, each at its own mount_path."""

    @model_validator(mode="after")
    def _unique_mount_paths(self) -> Self:
        seen: set[str] = set()
        for mount in self.volume_mounts:
            path = posixpath.normpath(mount.mount_path)
            if path in seen:
                raise ValueError(
                    f"container {self.name!r} mounts two volumes at {path!r}: give each "
                    "mount its own mount_path"
                )
            seen.add(path)
        return self


class PodTemplate(Spec):
    """The containers of every instance; they share one network namespace."""

    containers: list[Container] = Field(min_length=1)
    """At least one container; names must be unique."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels copied onto every instance."""
    volumes: list[Volume] = Field(default_factory=list)
    """Volumes the containers can mount by name; names must be unique."""

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for container in self.containers:
            if container.name in seen:
                raise ValueError(
                    f"container name {container.name!r} is used twice: give each container "
                    "of the template its own name"
                )
            seen.add(container.name)
        ports: set[tuple[int, str]] = set()
        for container in self.containers:
            for port in container.ports:
                if port.host_port is None:
                    continue
                if (port.host_port, port.protocol) in ports:
                    raise ValueError(
                        f"host port {port.host_port}/{port.protocol} is published twice in one pod"
                    )
                ports.add((port.host_port, port.protocol))
        check_volumes(self.containers, self.volumes)
        return self

    def requests(self) -> ResourceList:
        """Return the sum of the containers' resource requests."""
        # model_construct: the sums are validated millicores and bytes already, and
        # validating again would read an int CPU as whole cores.
        return ResourceList.model_construct(
            cpu=sum(c.resources.requests.cpu for c in self.containers),
            memory=sum(c.resources.requests.memory for c in self.containers),
        )

    def host_ports(self) -> set[tuple[int, str]]:
        """Return the (port, protocol) pairs this pod publishes on its node."""
        return {
            (p.host_port, p.protocol)
            for c in self.containers
            for p in c.ports
            if p.host_port is not None
        }


class Placement(Spec):
    """Where instances may run and how nodes are ranked."""

    constraints: dict[str, str] = Field(default_factory=dict)
    """Node labels that must all match exactly, e.g. {'zone': 'a'}."""
    strategy: PlacementStrategy = PlacementStrategy.BINPACK
    """binpack fills the busiest node that fits; spread prefers the emptiest."""


class UpdateType(StrEnum):
    """How a workload moves to a new template."""

    ROLLING = "rolling"
    """Replace instances a few at a time, within a surge and an unavailability budget."""
    RECREATE = "recreate"
    """Stop every old instance, then start the new ones (downtime, never two versions)."""


_PERCENT = re.compile(r"(100|[1-9]?[0-9])%")

CountOrPercent = int | str
"""A count (``2``) or a percentage of the replicas (``"25%"``, 0-100%)."""


def _resolve(value: int | str, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * replicas
    return -(-share // 100) if round_up else share // 100


class UpdateStrategy(Spec):
    """How a template change rolls out (Kubernetes' Deployment strategy, Nomad's update block)."""

    type: UpdateType = UpdateType.ROLLING
    """rolling (the default) or recreate."""
    max_surge: CountOrPercent = "25%"
    """How many instances above ``replicas`` a rolling update may run (percentages round up)."""
    max_unavailable: CountOrPercent = "25%"
    """How many of ``replicas`` may be unavailable during a rolling update (rounds down)."""
    min_ready_seconds: int = Field(default=0, ge=0, le=3600)
    """How long a new instance must stay ready before it counts as available."""
    progress_deadline_seconds: int = Field(default=600, ge=1, le=86400)
    """A rollout that makes no progress for this long is marked failed."""
    auto_revert: bool = False
    """When a rollout fails, roll back to the last revision that completed."""
    canary: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    """Start this many instances of a new template beside the old ones, then wait for
    ``shoal rollout promote`` before replacing the rest (0: no canaries)."""

    @field_validator("max_surge", "max_unavailable", mode="before")
    @classmethod
    def _count_or_percent(cls, value: object) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and _PERCENT.fullmatch(value.strip()):
            return value.strip()
        raise ValueError(
            f"{value!r} is neither a count (0 or more) nor a percentage from 0% to 100% "
            "(e.g. 1 or '25%')"
        )

    @model_validator(mode="after")
    def _can_progress(self) -> Self:
        zero = (0, "0%")
        if self.type == UpdateType.ROLLING and self.max_surge in zero:
            if self.max_unavailable in zero:
                raise ValueError(
                    "max_surge and max_unavailable are both 0, so a rolling update could "
                    "never replace an instance: allow a surge (e.g. max_surge: 1) or some "
                    "unavailability (e.g. max_unavailable: 1)"
                )
        return self

    def surge(self, replicas: int) -> int:
        """Return max_surge as a count of instances for ``replicas``."""
        return _resolve(self.max_surge, replicas, round_up=True)

    def unavailable(self, replicas: int) -> int:
        """Return max_unavailable as a count of instances for ``replicas``.

        At least one instance may be replaced at a time when max_surge resolves
        to 0 (as Kubernetes does), so a small workload still progresses.
        """
        count = _resolve(self.max_unavailable, replicas, round_up=False)
        if count == 0 and self.surge(replicas) == 0:
            return 1
        return count


class WorkloadSpec(Spec):
    """Desired state of a workload, as written in a Shoal workload file."""

    kind: Literal["Workload"] = "Workload"
    """Document kind; only 'Workload' for now."""
    name: Name
    """Unique within the namespace."""
    namespace: Name = "default"
    """Namespace of the workload."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels."""
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    """How many instances should run."""
    template: PodTemplate
    """The pod every instance runs."""
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    """Always, OnFailure or Never."""
    placement: Placement = Placement()
    """Node constraints and ranking strategy."""
    update: UpdateStrategy = UpdateStrategy()
    """How a template change rolls out."""
    revision_history_limit: int = Field(default=10, ge=1, le=100)
    """How many revisions (templates) are kept for ``rollout history`` and ``undo``."""
    paused: bool = False
    """A paused rollout makes no progress until resumed; scaling still applies."""

    @model_validator(mode="after")
    def _canary_fits(self) -> Self:
        if self.update.canary > self.replicas:
            raise ValueError(
                f"update.canary is {self.update.canary} but replicas is {self.replicas}: "
                f"use at most {self.replicas} canaries, or 0 for none"
            )
        return self

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return f"{self.namespace}/{self.name}"


class WorkloadPhase(StrEnum):
    """Summary of a workload's status, derived by the control loop."""

    PENDING = "pending"
    PROGRESSING = "progressing"
    RUNNING = "running"
    DEGRADED = "degraded"
    DELETING = "deleting"


class Condition(Model):
    """A named observation about a workload, Kubernetes style."""

    type: str
    """e.g. 'Available', 'Scheduled'."""
    status: bool
    """Whether the condition holds."""
    reason: str = ""
    """One-word cause."""
    message: str = ""
    """What a human should know."""


class WorkloadStatus(Model):
    """What the control loop last observed for a workload."""

    observed_generation: int = 0
    """The generation the control loop last acted on."""
    phase: WorkloadPhase = WorkloadPhase.PENDING
    """Summary state."""
    replicas: int = 0
    """Instances that exist and are not being deleted."""
    scheduled_replicas: int = 0
    """Instances placed on a node."""
    running_replicas: int = 0
    """Instances whose containers run."""
    ready_replicas: int = 0
    """Running instances that pass their readiness probes."""
    updated_replicas: int = 0
    """Instances that run the current template (revision)."""
    available_replicas: int = 0
    """Ready instances that have stayed ready ``min_ready_seconds``."""
    revision: int = 0
    """The revision the instances are being moved to (or run)."""
    complete_revision: int = 0
    """The last revision whose rollout completed (what an auto-revert goes back to)."""
    progress_at: datetime | None = None
    """When the rollout last made progress (a rollout without any for its deadline failed)."""
    conditions: list[Condition] = Field(default_factory=list)
    """Named observations."""


class Revision(Model):
    """One template a workload has had, kept for ``rollout history`` and ``undo``."""

    number: int
    """Counts up from 1 with every template change (an undo makes a new one too)."""
    template_hash: str
    """A short hash of the template: equal templates, equal hashes."""
    template: PodTemplate
    """The template itself, for an undo."""
    created_at: datetime
    """When it became the workload's template."""
    cause: str = ""
    """What made it: 'apply', 'undo to revision 3', 'auto-revert after ...'."""


class Workload(Model):
    """A stored workload: its spec, identity, generation and observed status."""

    spec: WorkloadSpec
    """The desired state as last applied."""
    uid: str
    """Unique id of this workload object; a re-created workload gets a new one."""
    generation: int = 1
    """Incremented on every change of the spec."""
    created_at: datetime
    """When the workload was first applied."""
    updated_at: datetime
    """When the spec last changed."""
    deleting: bool = False
    """Set by delete; the control loop removes the instances, then the workload."""
    revision: int = 1
    """The number of the current template's revision."""
    revisions: list[Revision] = Field(default_factory=list)
    """The kept revisions, oldest first; the last is the current one."""
    promoted_revision: int = 0
    """The last revision whose canaries were promoted (its rollout may replace every instance)."""
    status: WorkloadStatus = WorkloadStatus()
    """Observed by the control loop."""

    @property
    def name(self) -> str:
        """Return the workload's name."""
        return self.spec.name

    @property
    def namespace(self) -> str:
        """Return the workload's namespace."""
        return self.spec.namespace

    @property
    def key(self) -> str:
        """Return ``namespace/name``."""
        return self.spec.key
