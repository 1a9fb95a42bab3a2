"""ShoalService: the in-process implementation of the Service protocol.

Front doors call this and nothing else. It validates, reads and writes desired
state in the store, and records every change as an event naming the actor —
it never touches containers; the loops do that.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shoal.interfaces import (
    MAX_REPLICAS,
    Actor,
    ApplyResult,
    ChangeAction,
    Clock,
    Compare,
    CompareTarget,
    Conflict,
    ContainerRuntime,
    ContainerStats,
    Event,
    EventKind,
    EventType,
    ExecResult,
    Explanation,
    ImageInfo,
    ImageManager,
    ImageProgress,
    ImageShare,
    Instance,
    InstanceState,
    InvalidInput,
    InvalidSpec,
    LogLine,
    ManifestSource,
    Member,
    Node,
    NotFound,
    ObjectRef,
    PodAccess,
    PutOp,
    StateStore,
    Unavailable,
    Via,
    Workload,
    WorkloadSpec,
)

from ._explain import explain_instance
from ._plan import make_plan, plan_change
from ._repo import EVENTS, Repository, node_key, workload_key
from ._revisions import first_revision, revision_of, template_hash, with_template

__all__ = ["LocalNode", "ShoalService"]

SYSTEM = Actor(id="system", via=Via.SYSTEM)


@dataclass(frozen=True)
class LocalNode:
    """The node this service runs on: its name and runtime, for logs, exec and stats."""

    name: str
    runtime: ContainerRuntime
    images: ImageManager | None = None


class ShoalService:
    """The service layer over a state store, acting as one :class:`Actor`."""

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        actor: Actor = SYSTEM,
        *,
        local: LocalNode | None = None,
        remote: Callable[[Node], PodAccess] | None = None,
        members: Callable[[], Awaitable[Sequence[Member]]] | None = None,
        remote_images: Callable[[Node], ImageShare] | None = None,
        manifests: Callable[[], list[ManifestSource]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.actor = actor
        self.local = local
        self.remote = remote
        """Reaches the pods of other nodes (over gRPC in a cluster); None: only local ones."""
        self.members = members
        """Returns the gossip members (the cluster manager's view); None: no cluster manager."""
        self.remote_images = remote_images
        """Reaches the images of other nodes (over gRPC in a cluster); None: only local ones."""
        self.manifests = manifests
        """Returns the files of this node's watched manifests directories; None: none watched."""
        self.repo = Repository(store, clock)

    def with_actor(self, actor: Actor) -> ShoalService:
        """Return the same service acting as ``actor`` (for events and audit)."""
        return ShoalService(
            self.store,
            self.clock,
            actor,
            local=self.local,
            remote=self.remote,
            members=self.members,
            remote_images=self.remote_images,
            manifests=self.manifests,
        )

    # --- workloads -------------------------------------------------------

    async def apply(self, specs: Sequence[WorkloadSpec], *, dry_run: bool = False) -> ApplyResult:
        """Create or update workloads in one transaction; see :class:`Service`."""
        keys = [spec.key for spec in specs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise InvalidSpec(f"workload {dup} appears twice in one apply; keep one", workload=dup)
        current = [await self.repo.get_workload(s.namespace, s.name) for s in specs]
        for stored in current:
            if stored is not None and stored.value.deleting:
                raise Conflict(
                    f"workload {stored.value.key} is being deleted; wait until `shoal get "
                    "workloads` no longer lists it, then apply again",
                    workload=stored.value.key,
                )
        changes = [
            plan_change(spec, None if stored is None else stored.value)
            for spec, stored in zip(specs, current, strict=True)
        ]
        basis = [("", 0) if s is None else (s.value.uid, s.value.generation) for s in current]
        plan = make_plan(changes, basis)
        if dry_run:
            return ApplyResult(plan=plan, applied=False)

        now = self.clock.now()
        compares: list[Compare] = []
        ops: list[PutOp] = []
        results: list[Workload] = []
        for spec, stored, change in zip(specs, current, changes, strict=True):
            key = workload_key(spec.namespace, spec.name)
            if stored is None:
                workload = Workload(
                    spec=spec,
                    uid=secrets.token_hex(8),
                    created_at=now,
                    updated_at=now,
                    revisions=first_revision(spec, now, f"apply by {self.actor.id}"),
                    promoted_revision=1,  # the first template replaces nothing: no canaries
                )
            elif change.action == ChangeAction.UPDATE:
                workload = with_template(stored.value, spec, now, f"apply by {self.actor.id}")
            else:
                results.append(stored.value)
                continue
            compares.append(
                Compare(key, CompareTarget.MOD_REVISION, 0 if stored is None else stored.revision)
            )
            ops.append(PutOp(key, workload.model_dump_json().encode()))
            verb = "created" if stored is None else f"updated to generation {workload.generation}"
            fields = ", ".join(c.path for c in change.changes[:8]) if stored else ""
            event = self.repo.new_event(
                _workload_ref(spec.namespace, spec.name),
                "Created" if stored is None else "Updated",
                f"{verb} by {self.actor.id}" + (f" ({fields})" if fields else ""),
                self.actor,
            )
            ops.append(self.repo.event_op(event))
            results.append(workload)
        if ops:
            outcome = await self.store.txn(compares, ops)
            if not outcome.succeeded:
                raise Conflict(
                    "a workload changed while this apply ran; nothing was applied: run it again"
                )
        return ApplyResult(plan=plan, applied=True, workloads=results)

    async def list_workloads(self, namespace: str | None = None) -> list[Workload]:
        """Return workloads, of one namespace or all."""
        return [stored.value for stored in await self.repo.list_workloads(namespace)]

    async def get_workload(self, name: str, namespace: str = "default") -> Workload:
        """Return one workload."""
        stored = await self.repo.get_workload(namespace, name)
        if stored is None:
            raise _not_found("workload", namespace, name, "shoal get workloads")
        return stored.value

    async def scale(self, name: str, replicas: int, namespace: str = "default") -> Workload:
        """Set a workload's replica count."""
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidInput(
                f"replicas must be between 0 and {MAX_REPLICAS}, got {replicas}", field="replicas"
            )

        def change(workload: Workload) -> Workload | None:
            if workload.deleting:
                raise Conflict(f"workload {workload.key} is being deleted; it cannot be scaled")
            if workload.spec.replicas == replicas:
                return None
            spec = workload.spec.model_copy(update={"replicas": replicas})
            return with_template(workload, spec, self.clock.now(), "scale")

        before = await self.get_workload(name, namespace)
        workload = await self._update_workload(namespace, name, change)
        if workload.spec.replicas != before.spec.replicas:
            await self._event(
                _workload_ref(namespace, name),
                "Scaled",
                f"replicas {before.spec.replicas} → {replicas} by {self.actor.id}",
            )
        return workload

    async def rollout_undo(
        self, name: str, revision: int | None = None, namespace: str = "default"
    ) -> Workload:
        """Roll a workload back to a kept revision's template (the one before, by default).

        The rollback is itself a rollout, under the workload's update strategy,
        and makes a new revision.
        """
        before = await self.get_workload(name, namespace)
        target = revision_of(before, revision)

        def change(workload: Workload) -> Workload | None:
            if workload.deleting:
                raise Conflict(f"workload {workload.key} is being deleted; it cannot roll back")
            chosen = revision_of(workload, revision)
            if template_hash(workload.spec.template) == chosen.template_hash:
                return None  # already runs that template
            spec = workload.spec.model_copy(update={"template": chosen.template})
            return with_template(
                workload, spec, self.clock.now(), f"undo to revision {chosen.number}"
            )

        workload = await self._update_workload(namespace, name, change)
        if workload.revision != before.revision:
            await self._event(
                _workload_ref(namespace, name),
                "RolledBack",
                f"rolling back to the template of revision {target.number} (now revision "
                f"{workload.revision}) by {self.actor.id}",
            )
        return workload

    async def promote_rollout(self, name: str, namespace: str = "default") -> Workload:
        """Promote the current revision's canaries: its rollout replaces every old instance.

        Raises:
            NotFound: no such workload.
            Conflict: no canaries wait (none configured, or already promoted).

        """

        def change(workload: Workload) -> Workload | None:
            if not workload.spec.update.canary:
                raise Conflict(
                    f"workload {workload.key} has no canaries to promote (update.canary is 0)",
                    workload=workload.key,
                )
            if workload.promoted_revision >= workload.revision:
                raise Conflict(
                    f"revision {workload.revision} of {workload.key} is promoted already",
                    workload=workload.key,
                )
            return workload.model_copy(update={"promoted_revision": workload.revision})

        workload = await self._update_workload(namespace, name, change)
        await self._event(
            _workload_ref(namespace, name),
            "Promoted",
            f"canaries of revision {workload.revision} promoted by {self.actor.id}: "
            "the rollout replaces the rest",
        )
        return workload

    async def pause_rollout(
        self, name: str, paused: bool = True, namespace: str = "default"
    ) -> Workload:
        """Pause (or resume, with ``paused=False``) a workload's rollouts."""

        def change(workload: Workload) -> Workload | None:
            if workload.spec.paused == paused:
                return None
            spec = workload.spec.model_copy(update={"paused": paused})
            return with_template(workload, spec, self.clock.now(), "pause")

        before = await self.get_workload(name, namespace)
        workload = await self._update_workload(namespace, name, change)
        if workload.spec.paused != before.spec.paused:
            await self._event(
                _workload_ref(namespace, name),
                "RolloutPaused" if paused else "RolloutResumed",
                f"rollouts {'paused' if paused else 'resumed'} by {self.actor.id}",
            )
        return workload

    async def delete_workload(self, name: str, namespace: str = "default") -> Workload:
        """Mark a workload for deletion."""

        def change(workload: Workload) -> Workload | None:
            return None if workload.deleting else workload.model_copy(update={"deleting": True})

        workload = await self._update_workload(namespace, name, change)
        await self._event(
            _workload_ref(namespace, name),
            "Deleting",
            f"deletion requested by {self.actor.id}; stopping its instances",
        )
        return workload

    async def _update_workload(
        self, namespace: str, name: str, change: Callable[[Workload], Workload | None]
    ) -> Workload:
        try:
            return await self.repo.update(workload_key(namespace, name), Workload, change)
        except NotFound:
            raise _not_found("workload", namespace, name, "shoal get workloads") from None

    async def list_manifests(self) -> list[ManifestSource]:
        """Return the files of this node's watched manifests directories (empty if none)."""
        return [] if self.manifests is None else self.manifests()

    # --- instances -------------------------------------------------------

    async def list_instances(
        self, namespace: str | None = None, workload: str | None = None, node: str | None = None
    ) -> list[Instance]:
        """Return instances, filtered by namespace, workload and node."""
        return [
            stored.value
            for stored in await self.repo.list_instances(namespace)
            if (workload is None or stored.value.workload == workload)
            and (node is None or stored.value.node == node)
        ]

    async def get_instance(self, name: str, namespace: str = "default") -> Instance:
        """Return one instance."""
        stored = await self.repo.get_instance(namespace, name)
        if stored is None:
            raise _not_found("instance", namespace, name, "shoal get instances")
        return stored.value

    async def explain(self, name: str, namespace: str = "default") -> Explanation:
        """Say why an instance is where it is."""
        instance = await self.get_instance(name, namespace)
        node = None if instance.node is None else await self.repo.get_node(instance.node)
        workload = await self.repo.get_workload(namespace, instance.workload)
        events = sorted(
            [
                *await self.repo.list_events("Instance", namespace, name),
                *await self.repo.list_events("Workload", namespace, instance.workload),
            ],
            key=lambda e: e.id,
        )
        return explain_instance(
            instance,
            None if node is None else node.value,
            None if workload is None else workload.value,
            events[-10:],
            self.clock.now(),
        )

    async def _running_pod(
        self, name: str, namespace: str, container: str | None
    ) -> tuple[PodAccess, Instance, str]:
        """Return the pods of the node holding a started instance, the instance, a container."""
        inst = await self.get_instance(name, namespace)
        if not inst.container_ids:
            raise Conflict(
                f"instance {inst.key} has no containers yet (state {inst.state.value}): "
                f"see `shoal explain {inst.name}`",
                instance=inst.key,
            )
        names = [c.name for c in inst.template.containers]
        chosen = container or names[0]
        if chosen not in names:
            raise NotFound(
                f"instance {inst.key} has no container {chosen!r}; it has {', '.join(names)}",
                instance=inst.key,
                container=chosen,
            )
        if self.local is not None and inst.node == self.local.name:
            return self.local.runtime, inst, chosen
        node = None if inst.node is None else await self.repo.get_node(inst.node)
        if self.remote is None or node is None:
            raise Unavailable(
                f"instance {inst.key} runs on node {inst.node}, which this server cannot reach: "
                "run the command against that node's agent",
                node=inst.node,
            )
        return self.remote(node.value), inst, chosen

    async def logs(
        self,
        name: str,
        namespace: str = "default",
        *,
        container: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Yield an instance's log lines from the runtime of its node."""
        if tail is not None and tail < 0:
            raise InvalidInput(f"tail must be 0 or more, got {tail}", field="tail")
        runtime, inst, chosen = await self._running_pod(name, namespace, container)
        async for line in runtime.logs(inst.uid, chosen, follow=follow, tail=tail, since=since):
            yield line

    async def exec(
        self,
        name: str,
        command: Sequence[str],
        namespace: str = "default",
        *,
        container: str | None = None,
        time_limit: float = 30,
    ) -> ExecResult:
        """Run a command in a running instance's container."""
        if not command:
            raise InvalidInput("exec needs a command, e.g. `shoal exec web-1 -- ls /`")
        runtime, inst, chosen = await self._running_pod(name, namespace, container)
        if inst.state != InstanceState.RUNNING:
            raise Conflict(f"instance {inst.key} is {inst.state.value}, not running")
        result = await runtime.exec(inst.uid, chosen, list(command), time_limit)
        await self._event(
            ObjectRef(kind="Instance", namespace=namespace, name=name),
            "Exec",
            f"{self.actor.id} ran {command[0]!r} in {chosen} (exit {result.exit_code})",
        )
        return result

    async def stats(self, name: str, namespace: str = "default") -> list[ContainerStats]:
        """Return the resource use of a running instance's containers."""
        runtime, inst, _ = await self._running_pod(name, namespace, None)
        return list(await runtime.stats(inst.uid))

    def _images(self) -> ImageManager:
        if self.local is None or self.local.images is None:
            runtime = "none" if self.local is None else self.local.runtime.name
            raise Unavailable(
                f"this node's runtime ({runtime}) keeps no images; images need an OCI "
                "runtime such as --runtime runc"
            )
        return self.local.images

    async def list_images(self, node: str | None = None) -> list[ImageInfo]:
        """Return the images on ``node`` (this node by default), reached through its Images service.

        Raises:
            NotFound: no such node.
            Unavailable: it keeps no images, or cannot be reached.
        """
        if node is None or (self.local is not None and node == self.local.name):
            return list(await self._images().list())
        record = await self.repo.get_node(node)
        if record is None:
            raise NotFound(f"node {node} is not in the cluster: see `shoal get nodes`", node=node)
        if self.remote_images is None:
            raise Unavailable(
                f"this server cannot reach node {node}'s images: it is not clustered", node=node
            )
        return list(await self.remote_images(record.value).list())

    async def pull_image(
        self, reference: str, *, progress: Callable[[ImageProgress], object] | None = None
    ) -> ImageInfo:
        """Pull an image onto this node, reporting progress."""

        def relay(step: Any) -> None:
            if progress is not None:
                progress(
                    ImageProgress(
                        digest=step.digest,
                        kind=step.kind,
                        status=step.status,
                        completed=step.completed,
                        total=step.total,
                    )
                )

        info = await self._images().pull(reference, progress=relay)
        await self._event(ObjectRef(kind="Image", name=reference), "Pulled", f"{info.digest}")
        return info

    async def import_image(self, path: str, reference: str | None = None) -> list[ImageInfo]:
        """Import an image from a path on this node."""
        infos = list(await self._images().import_path(path, reference))
        names = ", ".join(i.reference for i in infos)
        await self._event(ObjectRef(kind="Image", name=names or path), "Imported", f"from {path}")
        return infos

    async def remove_image(self, reference: str) -> list[ImageInfo]:
        """Forget an image reference unless an instance on this node uses it."""
        users = [
            i.key
            for i in await self.list_instances()
            if not i.deleting
            and (self.local is None or i.node == self.local.name)
            and any(c.image == reference for c in i.template.containers)
        ]
        if users:
            raise Conflict(
                f"image {reference} is used by {', '.join(users[:5])}: delete or change "
                "those workloads first",
                image=reference,
            )
        removed = list(await self._images().remove(reference))
        await self._event(ObjectRef(kind="Image", name=reference), "Removed", "reference removed")
        return removed

    async def gc_images(self) -> int:
        """Free the blobs and layers no image reference needs."""
        freed = int(await self._images().gc())
        await self._event(
            ObjectRef(kind="Node", name=self.local.name if self.local else "-"),
            "ImagesCollected",
            f"freed {freed} bytes",
        )
        return freed

    async def record_event(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        *,
        event_type: EventType = EventType.NORMAL,
        details: dict[str, str] | None = None,
    ) -> Event:
        """Record an event as this service's actor."""
        return await self.repo.record(
            obj, reason, message, self.actor, event_type=event_type, details=details
        )

    # --- nodes -----------------------------------------------------------

    async def list_nodes(self) -> list[Node]:
        """Return every node."""
        return [stored.value for stored in await self.repo.list_nodes()]

    async def get_node(self, name: str) -> Node:
        """Return one node."""
        stored = await self.repo.get_node(name)
        if stored is None:
            raise NotFound(f"node {name!r} not found: list nodes with `shoal get nodes`", node=name)
        return stored.value

    async def list_members(self) -> list[Member]:
        """Return the gossip members this node knows, sorted by name.

        Raises:
            Unavailable: this service was built without a cluster manager.

        """
        if self.members is None:
            raise Unavailable(
                "this service has no cluster manager, so it knows no gossip members: it was "
                "built without one (an agent's service always has one)"
            )
        return sorted(await self.members(), key=lambda member: member.name)

    async def cordon(self, name: str) -> Node:
        """Stop placing new instances on a node."""
        return await self._set_node_flags(name, cordoned=True, reason="Cordoned")

    async def uncordon(self, name: str) -> Node:
        """Allow placements on a node again, ending any drain."""
        return await self._set_node_flags(name, cordoned=False, draining=False, reason="Uncordoned")

    async def drain(self, name: str) -> Node:
        """Cordon a node and move its instances elsewhere."""
        return await self._set_node_flags(name, cordoned=True, draining=True, reason="Draining")

    async def _set_node_flags(self, name: str, *, reason: str, **flags: bool) -> Node:
        await self.get_node(name)  # a clear NotFound first
        node = await self.repo.update(
            node_key(name), Node, lambda current: current.model_copy(update=flags)
        )
        await self._event(
            ObjectRef(kind="Node", name=name), reason, f"{reason.lower()} by {self.actor.id}"
        )
        return node

    # --- events ----------------------------------------------------------

    async def list_events(
        self,
        *,
        limit: int = 100,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> list[Event]:
        """Return the latest events, oldest first, optionally about one object."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}", field="limit")
        events = [
            e
            for e in await self.repo.list_events(kind, namespace, name)
            if (kind is None or e.object.kind.lower() == kind.lower())
            and (name is None or e.object.name == name)
            and (namespace is None or e.object.namespace == namespace)
        ]
        return events[-limit:]

    async def watch_events(self) -> AsyncIterator[Event]:
        """Yield events as they are recorded, from now on."""
        async for change in self.store.watch(EVENTS):
            if change.kind == EventKind.PUT:
                yield Event.model_validate_json(change.kv.value)

    async def _event(
        self, obj: ObjectRef, reason: str, message: str, event_type: EventType = EventType.NORMAL
    ) -> Event:
        return await self.repo.record(obj, reason, message, self.actor, event_type=event_type)


def _workload_ref(namespace: str, name: str) -> ObjectRef:
    return ObjectRef(kind="Workload", namespace=namespace, name=name)


def _not_found(kind: str, namespace: str, name: str, hint: str) -> NotFound:
    return NotFound(
        f"{kind} {namespace}/{name} not found: list them with `{hint}`",
        kind=kind,
        namespace=namespace,
        name=name,
    )
