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
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from ._base import Model
from ._errors import Conflict
from ._fielddocs import fields_described
from ._quantity import Cpu, Memory
from ._tracing import TRACEPARENT_PATTERN

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "MANIFEST_ANNOTATION",
    "MAX_REPLICAS",
    "ROLL_ON_CONFIG_ANNOTATION",
    "Condition",
    "ConfigMapVolume",
    "Container",
    "CountOrPercent",
    "DownwardAPIFile",
    "DownwardAPIVolume",
    "EmptyDirVolume",
    "EnvFromSource",
    "EnvVarSource",
    "ExecAction",
    "HostPathVolume",
    "HttpGetAction",
    "JobSpec",
    "KeyRef",
    "KeyToPath",
    "Name",
    "Origin",
    "Placement",
    "PlacementStrategy",
    "PodTemplate",
    "Port",
    "Probe",
    "ProjectedSource",
    "ProjectedVolume",
    "ResourceFieldRef",
    "ResourceList",
    "Resources",
    "RestartPolicy",
    "Revision",
    "SecretVolume",
    "TcpSocketAction",
    "UpdateStrategy",
    "UpdateType",
    "Volume",
    "VolumeMount",
    "Workload",
    "WorkloadMode",
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

MANIFEST_ANNOTATION = "shoal.dev/manifest"
"""Annotation naming the manifest file (``node:path``) that owns an object: the watched
directory prunes only what it owns, never what was applied by hand."""

ROLL_ON_CONFIG_ANNOTATION = "shoal.dev/roll-on-config-change"
"""A workload annotated ``"true"`` rolls out again when a ConfigMap or Secret its
environment or files use changes (files change in place without it)."""

CONFIG_HASH_ANNOTATION = "shoal.dev/config-hash"
"""Set on the template of a workload that rolls on config changes: a hash of the
ConfigMaps and Secrets it uses, so that their change is a template change."""


class Spec(Model):
    """Base of user-written models: unknown fields are an error, not ignored."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=fields_described(),
        defer_build=True,
    )


class Origin(Model):
    """The Kubernetes manifest an object was translated from, kept for ``get -o yaml`` and diffs."""

    api_version: str
    """Its apiVersion, e.g. 'apps/v1'."""
    kind: str
    """Its kind, e.g. 'Deployment'."""
    manifest: dict[str, Any] = Field(default_factory=dict)
    """The document as applied (a Secret's without its data)."""
    ignored: list[str] = Field(default_factory=list)
    """Kubernetes paths of the fields Shoal does not honour, each with why."""


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


_FIELD_PATH = re.compile(
    r"metadata\.(name|namespace|uid|labels|annotations)"
    r"|metadata\.(labels|annotations)\['[^']+'\]"
    r"|spec\.(nodeName|serviceAccountName)|status\.(podIP|podIPs|hostIP|hostIPs)"
)
_RESOURCES = ("limits.cpu", "limits.memory", "requests.cpu", "requests.memory")


def _relative_file(path: str) -> str:
    """Return ``path`` if it names a file under a volume; raise ValueError saying the fix."""
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or "." in parts or not path or path.startswith(".."):
        raise ValueError(
            f"path {path!r} must be relative, without '..' (e.g. 'conf/app.properties')"
        )
    return path


class KeyToPath(Spec):
    """One key of a ConfigMap or Secret projected to a file path of its own."""

    key: str
    """The key whose value the file holds."""
    path: str
    """The file's path, relative to the volume (no '..')."""
    mode: int | None = Field(default=None, ge=0, le=0o777)
    """The file's mode bits; the volume's default_mode if unset."""

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        return _relative_file(path)


class ConfigMapVolume(Spec):
    """The keys of a ConfigMap as files; they change in place when the ConfigMap changes."""

    name: Name
    """The ConfigMap, in the pod's namespace."""
    items: list[KeyToPath] | None = None
    """Only these keys, at these paths; every key as a file of its name if unset."""
    default_mode: int = Field(default=0o644, ge=0, le=0o777)
    """Mode bits of the files."""
    optional: bool = False
    """Start without it (an empty volume) when the ConfigMap or a listed key is missing."""


class SecretVolume(Spec):
    """The keys of a Secret as files (on a tmpfs); they change in place when the Secret does."""

    name: Name
    """The Secret, in the pod's namespace."""
    items: list[KeyToPath] | None = None
    """Only these keys, at these paths; every key as a file of its name if unset."""
    default_mode: int = Field(default=0o644, ge=0, le=0o777)
    """Mode bits of the files."""
    optional: bool = False
    """Start without it when the Secret or a listed key is missing."""


class ResourceFieldRef(Spec):
    """A container's resource request or limit, as a variable or a file."""

    resource: str
    """limits.cpu, limits.memory, requests.cpu or requests.memory."""
    container_name: str | None = None
    """The container whose resources to read; the variable's own container if unset."""
    divisor: int = Field(default=1, ge=1)
    """Divide by this: millicores or bytes (1m of CPU is 1; 1Mi of memory is 1048576)."""

    @field_validator("resource")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in _RESOURCES:
            raise ValueError(f"resource {value!r} is not one of {', '.join(_RESOURCES)}")
        return value


class DownwardAPIFile(Spec):
    """A file holding one fact about the pod."""

    path: str
    """The file's path, relative to the volume (no '..')."""
    field_path: str | None = None
    """A pod field: metadata.name, metadata.namespace, metadata.uid, metadata.labels,
    metadata.annotations (one 'key="value"' per line), or one label or annotation
    (metadata.labels['app'])."""
    resource_field_ref: ResourceFieldRef | None = None
    """A container's resource request or limit (in a volume, the first container's when
    container_name is unset)."""
    mode: int | None = Field(default=None, ge=0, le=0o777)
    """The file's mode bits; the volume's default_mode if unset."""

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        return _relative_file(path)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.field_path is None) == (self.resource_field_ref is None):
            raise ValueError(
                f"file {self.path!r} needs exactly one of field_path or resource_field_ref"
            )
        if self.field_path is not None and not _FIELD_PATH.fullmatch(self.field_path):
            raise ValueError(f"field_path {self.field_path!r} is not a pod field Shoal knows")
        return self


class DownwardAPIVolume(Spec):
    """Facts about the pod (its name, labels, resources) as files."""

    items: list[DownwardAPIFile] = Field(default_factory=list)
    """The files."""
    default_mode: int = Field(default=0o644, ge=0, le=0o777)
    """Mode bits of the files."""


class ProjectedSource(Spec):
    """One source of a projected volume: exactly one is set."""

    config_map: ConfigMapVolume | None = None
    """Keys of a ConfigMap."""
    secret: SecretVolume | None = None
    """Keys of a Secret."""
    downward_api: DownwardAPIVolume | None = None
    """Facts about the pod."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        if sum(s is not None for s in (self.config_map, self.secret, self.downward_api)) != 1:
            raise ValueError(
                "a projected source needs exactly one of config_map, secret or downward_api"
            )
        return self


class ProjectedVolume(Spec):
    """Several ConfigMaps, Secrets and pod facts as the files of one directory."""

    sources: list[ProjectedSource] = Field(min_length=1)
    """The sources, merged in order."""
    default_mode: int = Field(default=0o644, ge=0, le=0o777)
    """Mode bits of the files."""


class Volume(Spec):
    """Storage that the containers of a pod can mount. Exactly one source is set."""

    name: Name
    """Unique within the pod; a container's volume_mounts name it."""
    empty_dir: EmptyDirVolume | None = None
    """Scratch space created empty with the instance and deleted with it."""
    host_path: HostPathVolume | None = None
    """A path of the node (only where the node allows host paths)."""
    config_map: ConfigMapVolume | None = None
    """The keys of a ConfigMap as files."""
    secret: SecretVolume | None = None
    """The keys of a Secret as files."""
    downward_api: DownwardAPIVolume | None = None
    """Facts about the pod as files."""
    projected: ProjectedVolume | None = None
    """Several of the above in one directory."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if len(self.sources()) != 1:
            raise ValueError(
                f"volume {self.name!r} needs exactly one of empty_dir, host_path, config_map, "
                "secret, downward_api or projected (write 'empty_dir: {}' for scratch space)"
            )
        return self

    def sources(self) -> list[Spec]:
        """Return the sources that are set (one, once validated)."""
        candidates: tuple[Spec | None, ...] = (
            self.empty_dir,
            self.host_path,
            self.config_map,
            self.secret,
            self.downward_api,
            self.projected,
        )
        return [s for s in candidates if s is not None]

    @property
    def files(self) -> bool:
        """Whether Shoal writes its files (config_map, secret, downward_api or projected)."""
        return self.empty_dir is None and self.host_path is None


class VolumeMount(Spec):
    """Where a pod volume appears inside one container."""

    name: Name
    """The volume to mount: the name of one of the template's volumes."""
    mount_path: str
    """Absolute path inside the container, without '..'; unique within the container."""
    read_only: bool = False
    """Mount read-only: writes through this mount fail."""
    sub_path: str | None = None
    """Mount only this file or directory of the volume (relative, no '..'); such a mount
    does not follow later changes of a ConfigMap or Secret."""

    @field_validator("sub_path")
    @classmethod
    def _relative(cls, path: str | None) -> str | None:
        return None if path is None else _relative_file(path)

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


class KeyRef(Spec):
    """One key of a ConfigMap or Secret in the pod's namespace."""

    name: Name
    """The ConfigMap or Secret."""
    key: str
    """The key."""
    optional: bool = False
    """Leave the variable unset, rather than wait, when the object or key is missing."""


class EnvVarSource(Spec):
    """Where one variable's value comes from: exactly one is set."""

    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap."""
    secret_key_ref: KeyRef | None = None
    """A key of a Secret."""
    field_path: str | None = None
    """A pod field: metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'],
    metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP,
    status.hostIP."""
    resource_field_ref: ResourceFieldRef | None = None
    """A resource request or limit of this container (or of container_name)."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        sources = (
            self.config_map_key_ref,
            self.secret_key_ref,
            self.field_path,
            self.resource_field_ref,
        )
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "an env_refs entry needs exactly one of config_map_key_ref, secret_key_ref, "
                "field_path or resource_field_ref"
            )
        if self.field_path is not None:
            if not _FIELD_PATH.fullmatch(self.field_path) or self.field_path in (
                "metadata.labels",
                "metadata.annotations",
            ):
                raise ValueError(
                    f"field_path {self.field_path!r} is not a pod field a variable can hold "
                    "(e.g. metadata.name, metadata.labels['app'], status.podIP)"
                )
        return self


class EnvFromSource(Spec):
    """Every key of a ConfigMap or Secret as a variable: exactly one of the two is set."""

    config_map: str | None = None
    """The ConfigMap's name."""
    secret: str | None = None
    """The Secret's name."""
    prefix: str = ""
    """Prepended to every key to make the variable's name."""
    optional: bool = False
    """Start without these variables when the object is missing (rather than wait)."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.config_map is None) == (self.secret is None):
            raise ValueError("an env_from entry needs exactly one of config_map or secret")
        return self


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
    """Environment variables, added to the image's. '$(NAME)' in a value, in command and in
    args is replaced by the variable NAME when it is defined ('$$' writes a '$')."""
    env_from: list[EnvFromSource] = Field(default_factory=list)
    """ConfigMaps and Secrets whose keys all become variables (env and env_refs win)."""
    env_refs: dict[str, EnvVarSource] = Field(default_factory=dict)
    """Variables whose values come from a ConfigMap, a Secret or the pod itself."""
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
    startup_probe: Probe | None = None
    """Liveness and readiness wait until this has passed once; failing it restarts."""
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
    init_containers: list[Container] = Field(default_factory=list)
    """Run one after another, each to a successful exit, before the containers start."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations copied onto every instance (and readable through the downward API)."""
    termination_grace_period_seconds: int | None = Field(default=None, ge=0, le=3600)
    """Seconds between SIGTERM and SIGKILL when an instance stops; the node's default if unset."""
    service_account_name: str = ""
    """Kept for the downward API (spec.serviceAccountName); Shoal has no service accounts."""
    image_pull_secrets: list[str] = Field(default_factory=list)
    """Secrets of type kubernetes.io/dockerconfigjson whose credentials pull the images."""

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for container in [*self.init_containers, *self.containers]:
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
        check_volumes([*self.init_containers, *self.containers], self.volumes)
        return self

    def requests(self) -> ResourceList:
        """Return the sum of the containers' resource requests."""
        # model_construct: the sums are validated millicores and bytes already, and
        # validating again would read an int CPU as whole cores.
        # Init containers run one at a time before the others: the pod needs the
        # larger of the biggest of them and the sum of the rest (as Kubernetes counts).
        inits = [c.resources.requests for c in self.init_containers]
        return ResourceList.model_construct(
            cpu=max(
                sum(c.resources.requests.cpu for c in self.containers),
                max((r.cpu for r in inits), default=0),
            ),
            memory=max(
                sum(c.resources.requests.memory for c in self.containers),
                max((r.memory for r in inits), default=0),
            ),
        )

    def config_refs(self) -> set[tuple[str, str]]:
        """Return the ConfigMaps and Secrets the pod uses, as ``(kind, name)`` pairs.

        Through env_from, env_refs, volumes (projected included) and
        image_pull_secrets; all in the pod's namespace.
        """
        refs: set[tuple[str, str]] = {("Secret", name) for name in self.image_pull_secrets}
        for container in [*self.init_containers, *self.containers]:
            for source in container.env_from:
                if source.config_map is not None:
                    refs.add(("ConfigMap", source.config_map))
                if source.secret is not None:
                    refs.add(("Secret", source.secret))
            for ref in container.env_refs.values():
                if ref.config_map_key_ref is not None:
                    refs.add(("ConfigMap", ref.config_map_key_ref.name))
                if ref.secret_key_ref is not None:
                    refs.add(("Secret", ref.secret_key_ref.name))
        for volume in self.volumes:
            pairs = [(volume.config_map, volume.secret)]
            if volume.projected is not None:
                pairs += [(s.config_map, s.secret) for s in volume.projected.sources]
            for config_map, secret in pairs:
                if config_map is not None:
                    refs.add(("ConfigMap", config_map.name))
                if secret is not None:
                    refs.add(("Secret", secret.name))
        return refs

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
    auto_promote: bool = False
    """Promote the canaries without waiting for ``shoal rollout promote``, once they are all
    available (ready for min_ready_seconds)."""

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


class WorkloadMode(StrEnum):
    """How many instances a workload wants, and whether they end."""

    REPLICAS = "replicas"
    """``replicas`` instances, replaced when they go (a Kubernetes Deployment)."""
    DAEMON = "daemon"
    """One instance on every node that fits the placement (a DaemonSet)."""
    JOB = "job"
    """Instances that run to completion (a Job): see ``job``."""


class JobSpec(Spec):
    """How a run-to-completion workload finishes (Kubernetes' Job)."""

    completions: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    """How many instances must exit 0 for the job to be complete."""
    parallelism: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    """How many instances may run at once (0 suspends the job)."""
    backoff_limit: int = Field(default=6, ge=0, le=1000)
    """Failed runs (container restarts included) after which the job fails."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """The job fails, and its instances stop, once it has run this long."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the workload this long after it completed or failed; kept if unset."""


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
    mode: WorkloadMode = WorkloadMode.REPLICAS
    """replicas (the default), daemon (one per eligible node, replicas ignored) or job."""
    job: JobSpec | None = None
    """For mode job: completions, parallelism, backoff and deadlines (defaults if unset)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Free-form annotations (Shoal's own start with 'shoal.dev/')."""
    origin: Origin | None = None
    """The Kubernetes manifest this came from, if any."""

    @model_validator(mode="after")
    def _mode_fits(self) -> Self:
        if self.mode == WorkloadMode.JOB and self.restart_policy == RestartPolicy.ALWAYS:
            raise ValueError("a job's instances must end: set restart_policy to OnFailure or Never")
        if self.job is not None and self.mode != WorkloadMode.JOB:
            raise ValueError("job is set but mode is not 'job': set mode: job, or remove job")
        if self.update.canary and self.mode != WorkloadMode.REPLICAS:
            raise ValueError(
                f"update.canary is for mode replicas only (a {self.mode.value} rolls without "
                "canaries): remove update.canary"
            )
        return self

    @property
    def job_spec(self) -> JobSpec:
        """Return ``job``, or the defaults."""
        return self.job or JobSpec()

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
    COMPLETE = "complete"
    """A job whose completions all exited 0."""
    FAILED = "failed"
    """A job past its backoff_limit or its active_deadline_seconds."""


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
    desired_replicas: int = 0
    """Instances wanted: ``replicas``, a daemon's eligible nodes, or a job's active slots."""
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
    succeeded: int = 0
    """For a job: instances that exited 0."""
    failed: int = 0
    """For a job: failed runs, restarts included (the job fails past its backoff_limit)."""
    finished_at: datetime | None = None
    """For a job: when it completed or failed."""


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
    trace_context: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)
    """The W3C ``traceparent`` of the request that last changed this workload (an apply, a
    scale, an undo, a delete): the control loop's spans link to it and its events carry its
    trace id. None when no tracing was set up."""

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

    @property
    def wanted_replicas(self) -> int:
        """Return how many instances it wants: ``replicas``, or what its status last counted.

        A daemon wants one per eligible node and a job its runs at once; the
        control loop counts those (``status.desired_replicas``): ``replicas``
        says nothing for them.
        """
        return self.wanted_with(self.status)

    def check_rollouts(self, verb: str) -> None:
        """Raise if it is a job: its template never changes, so it has no rollouts.

        Raises:
            Conflict: it is a job (``verb`` names what was asked: undo, pause, resume, promote).

        """
        if self.spec.mode == WorkloadMode.JOB:
            raise Conflict(
                f"workload {self.key} is a job: its template never changes, so it has no "
                f"rollout to {verb}; `shoal describe workload {self.name}` shows its runs",
                workload=self.key,
            )

    def check_promotable(self) -> None:
        """Raise unless canaries of its current revision wait to be promoted.

        What ``promote_rollout`` and every plan of it check, so a plan is
        never offered for a promotion that would be refused.

        Raises:
            Conflict: it is a job (no rollouts), has no canaries (``update.canary``
                is 0), or its revision is promoted already.

        """
        self.check_rollouts("promote")
        if not self.spec.update.canary:
            raise Conflict(
                f"workload {self.key} has no canaries to promote (update.canary is 0)",
                workload=self.key,
            )
        if self.promoted_revision >= self.revision:
            raise Conflict(
                f"revision {self.revision} of {self.key} is promoted already",
                workload=self.key,
            )

    def wanted_with(self, status: WorkloadStatus) -> int:
        """Return :attr:`wanted_replicas` as it would be with ``status`` (one being made)."""
        if self.spec.mode == WorkloadMode.REPLICAS:
            return self.spec.replicas
        return status.desired_replicas
