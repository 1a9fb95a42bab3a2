"""The Service protocol: the one API behind every front door.

Two implementations exist: in-process (``shoal.core.ShoalService``) and the
signed REST client (``shoal.client.ShoalClient``), so the CLI and ``shoal mcp``
work the same against a local agent or a remote cluster.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field

from ._base import Model
from ._cluster import Member
from ._config import (
    CONFIG_MODELS,
    ConfigMap,
    ConfigMapSpec,
    Namespace,
    NamespaceSpec,
    SecretSpec,
    SecretView,
)
from ._errors import Conflict, InvalidInput
from ._event import Event, EventType, ObjectRef
from ._instance import Instance, ScheduleFailure
from ._node import Node
from ._runtime import ContainerStats, ExecResult, ImageInfo, ImageProgress, LogLine
from ._tracing import TraceView
from ._usage import USAGE_DEFAULT_RANGE, UsageKind, UsageSeries
from ._wire import Via
from ._workload import Workload, WorkloadSpec

ObjectSpec = WorkloadSpec | ConfigMapSpec | SecretSpec | NamespaceSpec
"""Anything apply takes: a workload, a ConfigMap, a Secret or a Namespace (Shoal's dialect;
``shoal.kube`` translates Kubernetes documents into these)."""

CONFIG_KINDS = tuple(CONFIG_MODELS)
"""The kinds :meth:`Service.delete_config` deletes: every configuration kind."""

__all__ = [
    "CONFIG_KINDS",
    "ApplyResult",
    "ChangeAction",
    "Expected",
    "Explanation",
    "FieldChange",
    "ManifestSource",
    "ObjectSpec",
    "Plan",
    "PlannedChange",
    "Service",
]


class ChangeAction(StrEnum):
    """What apply does to one workload."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


class FieldChange(Model):
    """One field whose value apply would change."""

    path: str
    """Dotted path, e.g. 'replicas' or 'template.containers[0].image'."""
    old: Any = None
    """Current value (None when created)."""
    new: Any = None
    """Value after apply."""


class PlannedChange(Model):
    """What apply does to one object, and for a workload what that means for its instances."""

    action: ChangeAction
    """create, update or unchanged."""
    namespace: str
    """The object's namespace ('' for a Namespace)."""
    name: str
    """The object's name."""
    kind: str = "Workload"
    """Workload, ConfigMap, Secret or Namespace (a Secret's values never appear in changes)."""
    changes: list[FieldChange] = Field(default_factory=list)
    """Changed fields (empty when unchanged)."""
    instances_to_create: int = 0
    """Instances the control loop will add."""
    instances_to_delete: int = 0
    """Instances the control loop will remove."""
    instances_to_replace: int = 0
    """Instances re-created because the template changed."""
    rollout: list[str] = Field(default_factory=list)
    """For a template change: the rollout's batches, in order (each new instance assumed to
    become available)."""

    def shown_changes(self) -> list[FieldChange]:
        """Return the changes worth showing: a manifest's ``origin.*`` copy only when alone.

        A translated object keeps its Kubernetes manifest in ``origin``, so a
        change of a field shows twice, and a creation lists the whole
        manifest again; the manifest's own line matters only for a field
        Shoal ignores (then it is the only change).
        """
        own = [c for c in self.changes if not c.path.startswith("origin.")]
        return own or self.changes


class Plan(Model):
    """The changes an apply makes (dry run) or made."""

    id: str
    """Digest of the requested changes; equal requests against equal state give equal ids."""
    changes: list[PlannedChange]
    """One entry per document, in request order."""


class ApplyResult(Model):
    """Outcome of apply."""

    plan: Plan
    """What changed, or would change."""
    applied: bool
    """False for a dry run."""
    workloads: list[Workload] = Field(default_factory=list)
    """The stored workloads after apply (empty for a dry run)."""
    config_maps: list[ConfigMap] = Field(default_factory=list)
    """The stored ConfigMaps after apply (empty for a dry run)."""
    secrets: list[SecretView] = Field(default_factory=list)
    """The stored Secrets after apply, without their values (empty for a dry run)."""
    namespaces: list[Namespace] = Field(default_factory=list)
    """The stored Namespaces after apply (empty for a dry run)."""
    warnings: list[str] = Field(default_factory=list)
    """What Shoal did not honour in the documents, per object and Kubernetes path."""
    trace_id: str | None = None
    """The trace of this apply (``get_trace`` shows it and the work it caused); None without
    tracing or for a dry run."""


_ETAG = re.compile(r'^"([0-9a-f]{1,64})/([1-9][0-9]{0,17})"$')


class Versioned(Protocol):
    """What :class:`Expected` checks: a stored workload, ConfigMap or Secret."""

    @property
    def key(self) -> str:
        """Its ``namespace/name``."""
        ...

    @property
    def uid(self) -> str:
        """Its incarnation."""
        ...

    @property
    def generation(self) -> int:
        """Its spec's version."""
        ...


class Expected(Model):
    """The version of an object a change was planned against: the change waits for no other.

    A change made with one is refused (:class:`Conflict`, nothing written)
    once the object is another (deleted and made again: a new uid) or its
    spec changed (a new generation): a plan reviewed, then applied to
    something else, is what this prevents. It guards the changes of a
    workload and the deletion of a ConfigMap or a Secret. Over REST it is
    the ``If-Match`` header, ``"<uid>/<generation>"`` (:meth:`etag`);
    ``shoal get -o json`` shows both fields.
    """

    uid: str
    """The object's uid when the change was planned."""
    generation: int
    """Its generation then (it grows with every change of its spec)."""

    @classmethod
    def of(cls, current: Versioned) -> Expected:
        """Return what ``current`` is now."""
        return cls(uid=current.uid, generation=current.generation)

    def etag(self) -> str:
        """Return it as an ``If-Match`` header's value."""
        return f'"{self.uid}/{self.generation}"'

    @classmethod
    def from_etag(cls, text: str) -> Expected:
        """Read an ``If-Match`` header's value.

        Raises:
            InvalidInput: it is not ``"<uid>/<generation>"`` (one, quoted).

        """
        match = _ETAG.match(text.strip())
        if match is None:
            raise InvalidInput(
                f"If-Match {text[:80]!r} is not an object's version: send "
                '"<uid>/<generation>" (with the quotes), as `shoal get workload NAME -o json` '
                "shows them, or leave the header out",
                field="If-Match",
            )
        return cls(uid=match[1], generation=int(match[2]))

    def check(self, current: Versioned, kind: str = "workload") -> None:
        """Raise if ``current`` (a ``kind``) is not the version expected.

        Raises:
            Conflict: it was deleted and made again, or its spec changed.

        """
        if current.uid != self.uid:
            raise Conflict(
                f"{kind} {current.key} was deleted and made again since this change was "
                f"planned (uid {self.uid}, now {current.uid}): nothing was changed; plan it again",
                kind=kind,
                object=current.key,
            )
        if current.generation != self.generation:
            raise Conflict(
                f"{kind} {current.key} changed since this change was planned (generation "
                f"{self.generation}, now {current.generation}): nothing was changed; review "
                "it as it is now and plan again",
                kind=kind,
                object=current.key,
            )


class ManifestSource(Model):
    """One file of a watched manifests directory, as the node last read it."""

    path: str
    """The file's absolute path on the node."""
    node: str = ""
    """The node whose agent watches it."""
    hash: str = ""
    """SHA-256 of the content last read ('' if it could not be read)."""
    applied_hash: str = ""
    """SHA-256 of the content last applied (differs from hash while an error stands)."""
    applied_at: datetime | None = None
    """When its objects were last applied."""
    objects: list[str] = Field(default_factory=list)
    """The objects it owns, as 'Kind namespace/name'."""
    error: str = ""
    """Why the last content was not applied (its last good objects keep running)."""
    warnings: list[str] = Field(default_factory=list)
    """What the last applied content has that Shoal does not honour."""
    conflicts: list[str] = Field(default_factory=list)
    """Objects it defines that another file owns (the first path in sort order wins)."""
    skipped: bool = False
    """Paused by a FILE.skip marker: its objects stay as they are."""


class Explanation(Model):
    """Why an instance is where it is."""

    instance: Instance
    """The instance as stored."""
    summary: str
    """One sentence: what state it is in and why."""
    details: list[str] = Field(default_factory=list)
    """Supporting facts, most important first."""
    schedule_failure: ScheduleFailure | None = None
    """For a pending instance: the scheduler's reason per node."""
    events: list[Event] = Field(default_factory=list)
    """The latest events about the instance, newest last."""
    start_trace_id: str | None = None
    """The trace of the instance's last start (``get_trace`` shows its pull, create and
    start); None before its first start or without tracing."""
    cause_trace_id: str | None = None
    """The trace of the request that caused the instance (an apply, a scale, an undo)."""


@runtime_checkable
class Service(Protocol):
    """Everything a front door may do. Methods raise ShoalError subclasses only."""

    async def apply(self, specs: Sequence[ObjectSpec], *, dry_run: bool = False) -> ApplyResult:
        """Create or update workloads, ConfigMaps, Secrets and Namespaces, all or nothing.

        With ``dry_run`` only plan. Warnings carried by the specs' origins (what a
        Kubernetes document had that Shoal ignores) come back in the result.

        Raises:
            InvalidSpec: the documents conflict (e.g. the same object twice).
            Conflict: a workload is being deleted, or an immutable ConfigMap or
                Secret would change.

        """
        ...

    async def list_config_maps(self, namespace: str | None = None) -> list[ConfigMap]:
        """Return ConfigMaps, of one namespace or all."""
        ...

    async def get_config_map(self, name: str, namespace: str = "default") -> ConfigMap:
        """Return one ConfigMap. Raises NotFound."""
        ...

    async def list_secrets(self, namespace: str | None = None) -> list[SecretView]:
        """Return Secrets, of one namespace or all, without their values."""
        ...

    async def get_secret(
        self, name: str, namespace: str = "default", *, show_values: bool = False
    ) -> SecretView:
        """Return one Secret; its values only with ``show_values`` (front doors let admins only).

        Raises:
            NotFound: no such Secret.

        """
        ...

    async def list_namespaces(self) -> list[Namespace]:
        """Return the Namespace objects, and an entry for every namespace objects use."""
        ...

    async def delete_config(
        self,
        kind: Literal["ConfigMap", "Secret", "Namespace"],
        name: str,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> None:
        """Delete a ConfigMap, a Secret or a Namespace (``namespace`` ignored for one).

        Pods that use a deleted ConfigMap or Secret keep what they have; new ones wait for it.
        With ``expected``, a ConfigMap or Secret is deleted only if it is that version
        (checked as it is deleted); a Namespace has no version.

        Raises:
            NotFound: no such object.
            Conflict: a Namespace that still holds workloads, ConfigMaps or Secrets, or
                the object is not the ``expected`` version.
            InvalidInput: ``expected`` for a Namespace.

        """
        ...

    async def list_manifests(self) -> list[ManifestSource]:
        """Return the files of this node's watched manifests directories (empty if none)."""
        ...

    async def list_workloads(self, namespace: str | None = None) -> list[Workload]:
        """Return workloads, of one namespace or all."""
        ...

    async def get_workload(self, name: str, namespace: str = "default") -> Workload:
        """Return one workload. Raises NotFound."""
        ...

    async def scale(
        self,
        name: str,
        replicas: int,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Set a workload's replica count.

        Raises NotFound, InvalidInput; Conflict if it is not ``expected`` (see :class:`Expected`).
        """
        ...

    async def rollout_undo(
        self,
        name: str,
        revision: int | None = None,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Roll back to a kept revision's template (the one before the current by default).

        The rollback is a rollout like any other, and makes a new revision.

        Raises:
            NotFound: no such workload, or the revision is not kept (the
                message lists the kept ones).
            Conflict: the workload is being deleted, or is not ``expected``.

        """
        ...

    async def promote_rollout(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        """Promote the current revision's canaries: the rollout replaces the rest.

        Raises:
            NotFound: no such workload.
            Conflict: no canaries wait (none configured, or already promoted), or
                it is not ``expected``.

        """
        ...

    async def pause_rollout(
        self,
        name: str,
        paused: bool = True,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Pause a workload's rollouts, or resume them with ``paused=False``.

        Raises NotFound; Conflict if it is not ``expected``.
        """
        ...

    async def delete_workload(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        """Mark a workload for deletion; its instances are stopped, then it is removed.

        Raises:
            NotFound: no such workload.
            Conflict: it is not ``expected``.

        """
        ...

    async def list_instances(
        self, namespace: str | None = None, workload: str | None = None, node: str | None = None
    ) -> list[Instance]:
        """Return instances, filtered by namespace, workload and node."""
        ...

    async def get_instance(self, name: str, namespace: str = "default") -> Instance:
        """Return one instance. Raises NotFound."""
        ...

    async def list_nodes(self) -> list[Node]:
        """Return every node."""
        ...

    async def get_node(self, name: str) -> Node:
        """Return one node. Raises NotFound."""
        ...

    async def list_members(self) -> list[Member]:
        """Return the gossip members this node's cluster manager knows, sorted by name.

        Each has its name, gossip address, state and tags. Members without a node
        record are listed too (e.g. a node refused at registration); on a node
        alone, the list holds just itself.

        Raises:
            Unavailable: the service has no cluster manager to ask.

        """
        ...

    async def cordon(self, name: str) -> Node:
        """Stop placing new instances on a node. Raises NotFound."""
        ...

    async def uncordon(self, name: str) -> Node:
        """Allow placements on a node again (and end a drain). Raises NotFound."""
        ...

    async def drain(self, name: str) -> Node:
        """Cordon a node and move its instances elsewhere, replacement first.

        Raises:
            NotFound: no such node.
        """
        ...

    async def delete_node(self, name: str) -> Node:
        """Forget a node that failed or left (its record: its name is free again); return it.

        The instances lost with it go too: their replacements run elsewhere.

        Raises:
            NotFound: no such node.
            Conflict: it is alive or suspect (drain it and stop its agent first).
        """
        ...

    async def list_events(
        self,
        *,
        limit: int = 100,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        actor: str | None = None,
        via: Via | None = None,
        trace_id: str | None = None,
    ) -> list[Event]:
        """Return the latest events (oldest first), optionally about one object.

        ``actor`` keeps the events of one key (or component), ``via`` those that
        came through one front door, ``trace_id`` those of the work one request
        caused, on every node (see ``get_trace``).

        Raises:
            InvalidInput: ``limit`` below 1, or ``trace_id`` not 32 hex digits.
        """
        ...

    def watch_events(self) -> AsyncIterator[Event]:
        """Yield events as they are recorded, from now on."""
        ...

    async def explain(self, name: str, namespace: str = "default") -> Explanation:
        """Say why an instance is pending, failing or running where it is. Raises NotFound."""
        ...

    async def get_trace(self, trace_id: str) -> TraceView:
        """Return the spans of one trace and of the traces linked to it, from every node.

        In a cluster, those of each node the trace crossed; ``missing`` names the
        nodes whose spans could not be had, and why.

        Raises:
            InvalidInput: ``trace_id`` is not 32 hex digits.
        """
        ...

    def logs(
        self,
        name: str,
        namespace: str = "default",
        *,
        container: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        previous: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Yield an instance's log lines (its first container unless ``container``).

        ``container`` may name an init container. With ``previous``, those of
        its previous run (as ``kubectl logs --previous``): kept by its node when
        the instance started again, so a crash loop's last words can be read
        after the restart.

        Raises:
            NotFound: no such instance or container, or (``previous``) no
                previous run's log is kept.
            Conflict: the instance has no containers (not started yet).
            Unavailable: its node cannot be reached.
        """
        ...

    async def exec(
        self,
        name: str,
        command: Sequence[str],
        namespace: str = "default",
        *,
        container: str | None = None,
        time_limit: float = 30,
    ) -> ExecResult:
        """Run ``command`` in a running instance's container and return its result.

        Raises:
            NotFound: no such instance or container.
            Conflict: the instance is not running.
            Unavailable: its node cannot be reached.
        """
        ...

    async def stats(self, name: str, namespace: str = "default") -> list[ContainerStats]:
        """Return the resource use of a running instance's containers.

        Raises:
            NotFound: no such instance.
            Conflict: the instance is not running.
        """
        ...

    async def usage(
        self,
        kind: UsageKind,
        name: str,
        namespace: str = "default",
        *,
        range: str = USAGE_DEFAULT_RANGE,
    ) -> UsageSeries:
        """Return the usage history of an instance or a node over ``range`` (15m, 1h, 6h, 24h).

        An instance's history is kept by the node that runs it; one never
        started has an empty series. ``namespace`` is ignored for a node.

        Raises:
            InvalidInput: ``range`` is not one of USAGE_RANGES (the message lists them).
            NotFound: no such instance or node.
            Unavailable: the node keeping it cannot be reached, or keeps no history.
        """
        ...

    async def list_images(self, node: str | None = None) -> list[ImageInfo]:
        """Return the images on ``node`` (the server's own by default).

        Raises:
            NotFound: no such node.
            Unavailable: the node keeps no images (no OCI runtime), or cannot be reached.
        """
        ...

    async def pull_image(
        self, reference: str, *, progress: Callable[[ImageProgress], object] | None = None
    ) -> ImageInfo:
        """Pull an image onto the server's node. Raises ImageError, Unavailable."""
        ...

    async def import_image(self, path: str, reference: str | None = None) -> list[ImageInfo]:
        """Import an OCI layout directory or `docker save` tarball at ``path`` on the node."""
        ...

    async def remove_image(self, reference: str) -> list[ImageInfo]:
        """Forget an image reference. Raises NotFound, Conflict (in use)."""
        ...

    async def gc_images(self) -> int:
        """Free the space of images no reference or instance needs; return bytes freed."""
        ...

    async def record_event(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        *,
        event_type: EventType = EventType.NORMAL,
        details: dict[str, str] | None = None,
    ) -> Event:
        """Record an event as the caller (front doors audit their calls with it)."""
        ...
