"""ShoalService: the in-process implementation of the Service protocol.

Front doors call this and nothing else. It validates, reads and writes desired
state in the store, and records every change as an event naming the actor —
it never touches containers; the loops do that.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from opentelemetry.trace import format_trace_id
from pydantic import BaseModel

from shoal.interfaces import (
    CONFIGMAPS,
    CRI_RUNTIME,
    MAX_REPLICAS,
    MAX_TRACE_SPANS,
    NAMESPACES,
    NOT_SERVED,
    ROLL_ON_CONFIG_ANNOTATION,
    SECRETS,
    USAGE_DEFAULT_RANGE,
    WORKLOADS,
    Actor,
    ApplyResult,
    AuditEntry,
    AuditReport,
    ChangeAction,
    Clock,
    Compare,
    CompareTarget,
    ConfigMap,
    ConfigMapSpec,
    Conflict,
    ContainerRuntime,
    ContainerStats,
    Event,
    EventKind,
    EventType,
    ExecResult,
    Expected,
    Explanation,
    GossipState,
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
    Namespace,
    NamespaceSpec,
    Node,
    NotFound,
    ObjectRef,
    ObjectSpec,
    PodAccess,
    PutOp,
    RevisionConflict,
    Secret,
    SecretSpec,
    SecretView,
    StateStore,
    TraceQuery,
    TraceSource,
    TraceView,
    Unavailable,
    UsageHistory,
    UsageKind,
    UsageQuery,
    UsageSeries,
    Via,
    Workload,
    WorkloadMode,
    WorkloadSpec,
    check_trace_id,
    check_usage_range,
    config_key,
    config_map_key,
    secret_key,
)

from ._audit import AuditLog, audited
from ._configs import (
    ConfigSpec,
    StoredConfig,
    check_immutable,
    config_store_key,
    label_of,
    plan_config,
    read_config,
    read_used_config,
    rolls_on_config,
    stored_config,
    with_config_hash,
)
from ._explain import explain_instance
from ._jobs import refuse_job_template_change
from ._plan import make_plan, plan_change
from ._repo import EVENTS, Repository, Stored, decoder_of, node_key, workload_key
from ._revisions import first_revision, revision_of, template_hash, with_template
from ._traces import gather_trace
from ._tracing import origin_trace_id, propagated_context, span_context_of
from ._usage import limits_of, read_usage

__all__ = ["LocalNode", "ShoalService"]

M = TypeVar("M", bound=BaseModel)

DEFAULT_CONFIG_HASH_KEY = b"shoal config-hash"
"""The configuration-hash key of a service the agent did not give a secret one (tests)."""

SYSTEM = Actor(id="system", via=Via.SYSTEM)

APPLY_ATTEMPTS = 5
"""Tries of an apply whose transaction loses races to writes that change no object's spec."""

Basis = list[tuple[str, int]]
"""What an apply read, as (uid, generation) of each object ("", 0: none): its specs' versions."""


class _Raced(Exception):
    """An apply's transaction lost a race; nothing was written. Never leaves :meth:`apply`."""

    def __init__(self, basis: Basis) -> None:
        super().__init__(basis)
        self.basis = basis


@dataclass(frozen=True)
class LocalNode:
    """The node this service runs on: its name and runtime, for logs, exec and stats."""

    name: str
    runtime: ContainerRuntime
    images: ImageManager | None = None
    usage: UsageHistory | None = None
    """The node's usage history (None: it keeps none, e.g. a server-only node)."""


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
        traces: TraceSource | None = None,
        remote_usage: Callable[[Node], UsageQuery] | None = None,
        remote_traces: Callable[[Member], TraceQuery] | None = None,
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
        self.remote_usage = remote_usage
        """Reaches the usage history other nodes keep (over gRPC in a cluster); None: only
        this node's."""
        self.remote_traces = remote_traces
        """Reaches the spans other nodes recorded (over gRPC in a cluster); None: only ours."""
        self.config_hash_key = DEFAULT_CONFIG_HASH_KEY
        """Keys the configuration hash of roll-on-change workloads; the agent sets a secret one
        (derived from the secrets keyring) so that the hash tells nothing about a Secret."""
        self.manifests = manifests
        """Returns the files of this node's watched manifests directories; None: none watched."""
        self.traces = traces
        """The spans this node recorded (for get_trace); None: tracing is off."""
        self.repo = Repository(store, clock)
        self.audit = AuditLog(store, clock)
        """The hash-chained audit trail every mutating call appends to (see :mod:`._audit`)."""

    def with_actor(self, actor: Actor) -> ShoalService:
        """Return the same service acting as ``actor`` (for events and audit)."""
        acting = ShoalService(
            self.store,
            self.clock,
            actor,
            local=self.local,
            remote=self.remote,
            members=self.members,
            remote_images=self.remote_images,
            manifests=self.manifests,
            traces=self.traces,
            remote_usage=self.remote_usage,
            remote_traces=self.remote_traces,
        )
        acting.audit = self.audit  # one trail, appended in turn by every caller
        acting.config_hash_key = self.config_hash_key
        return acting

    # --- workloads -------------------------------------------------------

    @audited("apply", "Apply")
    async def apply(self, specs: Sequence[ObjectSpec], *, dry_run: bool = False) -> ApplyResult:
        """Create or update workloads and configuration in one transaction; see :class:`Service`.

        A workload annotated to roll on configuration changes gets a hash of the
        ConfigMaps and Secrets it uses in its template; when this apply changes
        one of them, the workloads of that namespace that use it and ask for it
        are updated in the same transaction (so they roll out).

        The transaction holds only if nothing it read was written meanwhile.
        A write that changes no object's spec (the control loop recording a
        workload's status, as it does through a rollout, or a daemon's count of
        nodes) costs the apply a new try, up to APPLY_ATTEMPTS in all; a write
        that does (another writer's change: a new generation, an object created
        or deleted) fails it with nothing applied.
        """
        read_as: Basis | None = None
        for _ in range(APPLY_ATTEMPTS):
            try:
                return await self._apply(specs, dry_run=dry_run, read_as=read_as)
            except _Raced as raced:
                read_as = raced.basis
        raise Conflict(
            f"this apply lost {APPLY_ATTEMPTS} races in a row to writes of the objects it "
            "changes (none to their specs); nothing was applied: run it again"
        )

    async def _apply(
        self, specs: Sequence[ObjectSpec], *, dry_run: bool, read_as: Basis | None
    ) -> ApplyResult:
        """One try of :meth:`apply`; ``read_as``: what a try that lost a race read.

        Raises:
            _Raced: the transaction lost a race (nothing was written).
            Conflict: the objects are not as ``read_as`` says any more: a spec changed.

        """
        labels = [label_of(spec) for spec in specs]
        for label in labels:
            if labels.count(label) > 1:
                raise InvalidSpec(f"{label} appears twice in one apply; keep one", object=label)
        configs: list[ConfigSpec] = [s for s in specs if not isinstance(s, WorkloadSpec)]
        read = {label_of(s): await self._stored_config(s) for s in configs}
        current_configs = {label: value for label, (value, _) in read.items()}
        for config in configs:
            check_immutable(config, current_configs[label_of(config)])
        config_changes = {
            label_of(s): plan_config(s, current_configs[label_of(s)]) for s in configs
        }
        lookup = _ConfigLookup(self.repo, [s for s in configs if not isinstance(s, NamespaceSpec)])

        workload_specs = [
            with_config_hash(s, await lookup.refs(s), self.config_hash_key)
            if rolls_on_config(s)
            else s
            for s in specs
            if isinstance(s, WorkloadSpec)
        ]
        current = [await self.repo.get_workload(s.namespace, s.name) for s in workload_specs]
        for stored in current:
            if stored is not None and stored.value.deleting:
                raise Conflict(
                    f"workload {stored.value.key} is being deleted; wait until `shoal get "
                    "workloads` no longer lists it, then apply again",
                    workload=stored.value.key,
                )
        workload_specs = [
            _kept_paused(spec, None if stored is None else stored.value)
            for spec, stored in zip(workload_specs, current, strict=True)
        ]
        for spec, stored in zip(workload_specs, current, strict=True):
            refuse_job_template_change(spec, None if stored is None else stored.value)
        rolled = await self._rolled_by_config(
            workload_specs,
            [s for s in configs if config_changes[label_of(s)].action != ChangeAction.UNCHANGED],
            lookup,
        )
        workload_specs += [spec for spec, _ in rolled]
        current += [stored for _, stored in rolled]
        workload_changes = [
            plan_change(spec, None if stored is None else stored.value)
            for spec, stored in zip(workload_specs, current, strict=True)
        ]
        by_label = {label_of(s): c for s, c in zip(workload_specs, workload_changes, strict=True)}
        by_label |= config_changes
        changes = [by_label[label] for label in labels]
        changes += workload_changes[len(workload_specs) - len(rolled) :]
        basis = [("", 0) if s is None else (s.value.uid, s.value.generation) for s in current]
        basis += [("", 0) if c is None else (c.uid, c.generation) for c in current_configs.values()]
        if read_as is not None and basis != read_as:
            raise Conflict(
                "an object of this apply was changed by another writer while it ran; nothing "
                "was applied: see what would change now with `shoal diff`, then apply again"
            )
        plan = make_plan(changes, basis)
        warnings = [
            f"{label_of(spec)}: {note}"
            for spec in specs
            if spec.origin is not None
            for note in spec.origin.ignored
        ]
        warnings += [
            f"{_applied_as(spec)} {spec.key} replaces the {_applied_as(stored.value.spec)} of "
            "that name: Shoal keeps one workload per namespace and name, whatever its kind"
            for spec, stored in zip(workload_specs, current, strict=True)
            if stored is not None and _applied_as(spec) != _applied_as(stored.value.spec)
        ]
        if dry_run:
            return ApplyResult(plan=plan, applied=False, warnings=warnings)

        now = self.clock.now()
        traceparent = propagated_context()
        compares: list[Compare] = []
        ops: list[PutOp] = []
        result = ApplyResult(plan=plan, applied=True, warnings=warnings, trace_id=origin_trace_id())
        for config in configs:
            stored_before = current_configs[label_of(config)]
            key = config_store_key(config)
            if config_changes[label_of(config)].action == ChangeAction.UNCHANGED:
                assert stored_before is not None
                _add_config(result, stored_before)
                continue
            value = stored_config(config, stored_before, now)
            revision = read[label_of(config)][1]
            compares.append(Compare(key, CompareTarget.MOD_REVISION, revision))
            ops.append(PutOp(key, value.model_dump_json().encode()))
            namespace = None if isinstance(config, NamespaceSpec) else config.namespace
            verb = "created" if stored_before is None else "updated"
            event = self.repo.new_event(
                ObjectRef(kind=config.kind, namespace=namespace, name=config.name),
                "Created" if stored_before is None else "Updated",
                f"{verb} by {self.actor.id}",  # never the data: a Secret's values stay out
                self.actor,
            )
            ops.append(self.repo.event_op(event))
            _add_config(result, value)
        for spec, stored, change in zip(workload_specs, current, workload_changes, strict=True):
            key = workload_key(spec.namespace, spec.name)
            cause = f"apply by {self.actor.id}"
            if any(spec is r for r, _ in rolled):
                cause = f"configuration it uses changed (apply by {self.actor.id})"
            if stored is None:
                workload = Workload(
                    spec=spec,
                    uid=secrets.token_hex(8),
                    created_at=now,
                    updated_at=now,
                    revisions=first_revision(spec, now, cause),
                    promoted_revision=1,  # the first template replaces nothing: no canaries
                )
            elif change.action == ChangeAction.UPDATE:
                workload = with_template(stored.value, spec, now, cause)
            else:
                result.workloads.append(stored.value)
                continue
            workload = workload.model_copy(update={"trace_context": traceparent})
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
            result.workloads.append(workload)
        if ops:
            outcome = await self.store.txn(compares, ops)
            if not outcome.succeeded:
                raise _Raced(basis)
        return result

    async def _stored_config(self, spec: ConfigSpec) -> tuple[StoredConfig | None, int]:
        """Return the stored object of ``spec``'s kind and name and its revision (0: none)."""
        namespace = "" if isinstance(spec, NamespaceSpec) else spec.namespace
        return await read_config(self.store, spec.kind, namespace, spec.name)

    async def _rolled_by_config(
        self,
        applied: Sequence[WorkloadSpec],
        changed: Sequence[ConfigSpec],
        lookup: _ConfigLookup,
    ) -> list[tuple[WorkloadSpec, Stored[Workload]]]:
        """Return the stored workloads (not in this apply) that roll because ``changed`` did."""
        changed_refs = {
            (s.namespace, s.kind, s.name) for s in changed if not isinstance(s, NamespaceSpec)
        }
        in_apply = {s.key for s in applied}
        rolled: list[tuple[WorkloadSpec, Stored[Workload]]] = []
        decode = decoder_of(Workload)
        marker = ROLL_ON_CONFIG_ANNOTATION.encode()
        for namespace in sorted({ns for ns, _, _ in changed_refs}):
            listed = await self.store.list(f"{WORKLOADS}{namespace}/")
            # Only the workloads that asked to roll are decoded: a byte search
            # is ~100 times cheaper than decoding every workload of the namespace.
            for stored in (decode(kv) for kv in listed.items if marker in kv.value):
                spec = stored.value.spec
                if spec.key in in_apply or stored.value.deleting or not rolls_on_config(spec):
                    continue
                refs = {(namespace, kind, name) for kind, name in spec.template.config_refs()}
                if refs & changed_refs:
                    updated = with_config_hash(spec, await lookup.refs(spec), self.config_hash_key)
                    if updated.template != spec.template:
                        rolled.append((updated, stored))
        return rolled

    # --- configuration ---------------------------------------------------

    async def _list_configs(self, prefix: str, namespace: str | None, model: type[M]) -> list[M]:
        where = prefix if namespace is None else f"{prefix}{namespace}/"
        return [model.model_validate_json(kv.value) for kv in (await self.store.list(where)).items]

    async def list_config_maps(self, namespace: str | None = None) -> list[ConfigMap]:
        """Return ConfigMaps, of one namespace or all."""
        return await self._list_configs(CONFIGMAPS, namespace, ConfigMap)

    async def get_config_map(self, name: str, namespace: str = "default") -> ConfigMap:
        """Return one ConfigMap. Raises NotFound."""
        kv = await self.store.get(config_map_key(namespace, name))
        if kv is None:
            raise _not_found("configmap", namespace, name, "shoal get configmaps")
        return ConfigMap.model_validate_json(kv.value)

    async def list_secrets(self, namespace: str | None = None) -> list[SecretView]:
        """Return Secrets, of one namespace or all, without their values."""
        return [s.view() for s in await self._list_configs(SECRETS, namespace, Secret)]

    async def get_secret(
        self, name: str, namespace: str = "default", *, show_values: bool = False
    ) -> SecretView:
        """Return one Secret; its values only with ``show_values`` (recorded as an event)."""
        kv = await self.store.get(secret_key(namespace, name))
        if kv is None:
            raise _not_found("secret", namespace, name, "shoal get secrets")
        secret = Secret.model_validate_json(kv.value)
        if show_values:
            await self._event(
                ObjectRef(kind="Secret", namespace=namespace, name=name),
                "ValuesShown",
                f"values shown to {self.actor.id}",
            )
        return secret.view(show_values=show_values)

    async def list_namespaces(self) -> list[Namespace]:
        """Return the Namespace objects, and an entry for every namespace objects use."""
        stored = {n.spec.name: n for n in await self._list_configs(NAMESPACES, None, Namespace)}
        used: set[str] = {"default"}
        for prefix in (WORKLOADS, CONFIGMAPS, SECRETS):
            keys = (await self.store.list(prefix)).items
            used |= {kv.key[len(prefix) :].split("/", 1)[0] for kv in keys}
        epoch = datetime.fromtimestamp(0, tz=UTC)
        for name in used - set(stored):
            stored[name] = Namespace(
                spec=NamespaceSpec(name=name), uid="", created_at=epoch, updated_at=epoch
            )
        return [stored[name] for name in sorted(stored)]

    @audited("delete_config", "Config")
    async def delete_config(
        self,
        kind: Literal["ConfigMap", "Secret", "Namespace"],
        name: str,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> None:
        """Delete a ConfigMap, a Secret or an empty Namespace; see :class:`Service`."""
        key = config_key(kind, namespace, name)
        if kind == "Namespace" and expected is not None:
            raise InvalidInput(
                f"namespace {name} has no version to expect: delete it without one (no If-Match)",
                field="expected",
            )
        revision: int | None = None
        if kind != "Namespace" and expected is not None:
            kv = await self.store.get(key)
            if kv is not None:
                stored = (ConfigMap if kind == "ConfigMap" else Secret).model_validate_json(
                    kv.value
                )
                expected.check(stored, kind)
                revision = kv.mod_revision
        if kind == "Namespace":
            for prefix, what in (
                (WORKLOADS, "workloads"),
                (CONFIGMAPS, "configmaps"),
                (SECRETS, "secrets"),
            ):
                if (await self.store.list(f"{prefix}{name}/")).items:
                    raise Conflict(
                        f"namespace {name} still holds {what}: delete them first "
                        f"(`shoal get {what} -n {name}`)",
                        namespace=name,
                    )
            ref = ObjectRef(kind="Namespace", name=name)
        else:
            ref = ObjectRef(kind=kind, namespace=namespace, name=name)
        try:
            deleted = await self.store.delete(key, expected_revision=revision)
        except RevisionConflict:
            if await self.store.get(key) is None:
                deleted = None  # gone meanwhile: not found, below
            else:
                raise Conflict(
                    f"{kind} {namespace}/{name} changed while it was being deleted: nothing was "
                    "deleted; review it as it is now and plan again",
                    kind=kind,
                    name=name,
                ) from None
        if deleted is None:
            where = name if kind == "Namespace" else f"{namespace}/{name}"
            raise NotFound(
                f"{kind.lower()} {where} not found: list them with `shoal get {kind.lower()}s`",
                kind=kind,
                name=name,
            )
        await self._event(ref, "Deleted", f"deleted by {self.actor.id}")

    async def list_workloads(self, namespace: str | None = None) -> list[Workload]:
        """Return workloads, of one namespace or all."""
        return [stored.value for stored in await self.repo.list_workloads(namespace)]

    async def get_workload(self, name: str, namespace: str = "default") -> Workload:
        """Return one workload."""
        stored = await self.repo.get_workload(namespace, name)
        if stored is None:
            raise _not_found("workload", namespace, name, "shoal get workloads")
        return stored.value

    @audited("scale", "Workload")
    async def scale(
        self,
        name: str,
        replicas: int,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Set a workload's replica count (if it is ``expected``, when given)."""
        if not 0 <= replicas <= MAX_REPLICAS:
            raise InvalidInput(
                f"replicas must be between 0 and {MAX_REPLICAS}, got {replicas}", field="replicas"
            )

        def change(workload: Workload) -> Workload | None:
            if workload.deleting:
                raise Conflict(f"workload {workload.key} is being deleted; it cannot be scaled")
            _check_scalable(workload)
            if workload.spec.replicas == replicas:
                return None
            spec = workload.spec.model_copy(update={"replicas": replicas})
            return with_template(workload, spec, self.clock.now(), "scale")

        before = await self.get_workload(name, namespace)
        workload = await self._update_workload(namespace, name, change, expected)
        if workload.spec.replicas != before.spec.replicas:
            await self._event(
                _workload_ref(namespace, name),
                "Scaled",
                f"replicas {before.spec.replicas} → {replicas} by {self.actor.id}",
            )
        return workload

    @audited("rollout_undo", "Workload")
    async def rollout_undo(
        self,
        name: str,
        revision: int | None = None,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Roll a workload back to a kept revision's template (the one before, by default).

        The rollback is itself a rollout, under the workload's update strategy,
        and makes a new revision.
        """
        before = await self.get_workload(name, namespace)
        if expected is not None:
            expected.check(before)
        before.check_rollouts("undo")
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

        workload = await self._update_workload(namespace, name, change, expected)
        if workload.revision != before.revision:
            await self._event(
                _workload_ref(namespace, name),
                "RolledBack",
                f"rolling back to the template of revision {target.number} (now revision "
                f"{workload.revision}) by {self.actor.id}",
            )
        return workload

    @audited("promote_rollout", "Workload")
    async def promote_rollout(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        """Promote the current revision's canaries: its rollout replaces every old instance.

        Raises:
            NotFound: no such workload.
            Conflict: no canaries wait (none configured, or already promoted).

        """

        def change(workload: Workload) -> Workload | None:
            workload.check_promotable()
            return workload.model_copy(update={"promoted_revision": workload.revision})

        workload = await self._update_workload(namespace, name, change, expected)
        await self._event(
            _workload_ref(namespace, name),
            "Promoted",
            f"canaries of revision {workload.revision} promoted by {self.actor.id}: "
            "the rollout replaces the rest",
        )
        return workload

    @audited("pause_rollout", "Workload")
    async def pause_rollout(
        self,
        name: str,
        paused: bool = True,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Pause (or resume, with ``paused=False``) a workload's rollouts."""

        def change(workload: Workload) -> Workload | None:
            workload.check_rollouts("pause" if paused else "resume")
            if workload.spec.paused == paused:
                return None
            spec = workload.spec.model_copy(update={"paused": paused})
            return with_template(workload, spec, self.clock.now(), "pause")

        before = await self.get_workload(name, namespace)
        workload = await self._update_workload(namespace, name, change, expected)
        if workload.spec.paused != before.spec.paused:
            await self._event(
                _workload_ref(namespace, name),
                "RolloutPaused" if paused else "RolloutResumed",
                f"rollouts {'paused' if paused else 'resumed'} by {self.actor.id}",
            )
        return workload

    @audited("delete_workload", "Workload")
    async def delete_workload(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        """Mark a workload for deletion (if it is ``expected``, when given)."""

        def change(workload: Workload) -> Workload | None:
            return None if workload.deleting else workload.model_copy(update={"deleting": True})

        workload = await self._update_workload(namespace, name, change, expected)
        await self._event(
            _workload_ref(namespace, name),
            "Deleting",
            f"deletion requested by {self.actor.id}; stopping its instances",
        )
        return workload

    async def _update_workload(
        self,
        namespace: str,
        name: str,
        change: Callable[[Workload], Workload | None],
        expected: Expected | None = None,
    ) -> Workload:
        """Change a workload (compare-and-swap, tried again on a race).

        With ``expected``, each try first checks the workload is that version
        (:meth:`Expected.check`): the check and the write are one step.
        """
        cause = propagated_context()

        def stamped(workload: Workload) -> Workload | None:
            if expected is not None:
                expected.check(workload)
            changed = change(workload)
            if changed is None or changed == workload or cause is None:
                return changed  # no change: no write, and the cause stays the last change's
            return changed.model_copy(update={"trace_context": cause})

        try:
            return await self.repo.update(workload_key(namespace, name), Workload, stamped)
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
        explanation = explain_instance(
            instance,
            None if node is None else node.value,
            None if workload is None else workload.value,
            events[-10:],
            self.clock.now(),
        )
        cause = span_context_of(instance.trace_context)
        details = list(explanation.details)
        if instance.start_trace_id:
            details.append(
                f"its last start is trace {instance.start_trace_id} (`shoal trace` or MCP's "
                "get_trace shows it)"
            )
        return explanation.model_copy(
            update={
                "start_trace_id": instance.start_trace_id,
                "cause_trace_id": None if cause is None else format_trace_id(cause.trace_id),
                "details": details,
            }
        )

    async def get_trace(self, trace_id: str) -> TraceView:
        """Return the spans of one trace and of the traces linked to it, from every node.

        This node's own, and in a cluster those of the nodes the trace crossed
        (see :mod:`._traces`); the nodes whose spans could not be had are in
        ``missing``.
        """
        try:
            wanted = check_trace_id(trace_id)
        except ValueError as exc:
            raise InvalidInput(str(exc), trace_id=trace_id) from None
        name = "" if self.local is None else self.local.name
        if self.traces is None:
            return TraceView(trace_id=wanted, node=name, nodes=[name] if name else [])
        local = self.traces.trace(wanted)
        if name:  # a buffer without spans of the trace names no node
            local = local.model_copy(update={"node": name})
        if self.remote_traces is None or self.members is None:
            return local.model_copy(update={"nodes": [local.node] if local.node else []})
        return await gather_trace(local, self.members, self.remote_traces, MAX_TRACE_SPANS)

    async def _running_pod(
        self,
        name: str,
        namespace: str,
        container: str | None,
        *,
        started: bool = True,
        init: bool = False,
    ) -> tuple[PodAccess, Instance, str]:
        """Return the pods of the node holding a started instance, the instance, a container.

        ``started=False`` takes an instance that has no containers now (its
        previous run's logs may be kept); ``init`` takes an init container's name too.
        """
        inst = await self.get_instance(name, namespace)
        if inst.node is None or (started and not inst.container_ids):
            raise Conflict(
                f"instance {inst.key} has no containers yet (state {inst.state.value}): "
                f"see `shoal explain {inst.name}`",
                instance=inst.key,
            )
        names = [c.name for c in inst.template.containers]
        if init:
            names += [c.name for c in inst.template.init_containers]
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
        previous: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Yield an instance's log lines from the runtime of its node."""
        if tail is not None and tail < 0:
            raise InvalidInput(f"tail must be 0 or more, got {tail}", field="tail")
        if previous and follow:
            raise InvalidInput(
                "previous cannot be combined with follow: the previous run has ended; "
                "leave out follow",
                field="follow",
            )
        runtime, inst, chosen = await self._running_pod(
            name, namespace, container, started=not previous, init=True
        )
        lines = runtime.logs(
            inst.uid, chosen, follow=follow, tail=tail, since=since, previous=previous
        )
        try:
            try:
                first = await anext(lines, None)
            except NotFound as exc:
                if not previous:
                    raise
                raise NotFound(
                    f"instance {inst.key} has no previous run's log of {chosen!r} on "
                    f"{inst.node}: {exc.message} (a run's log is kept as its instance starts "
                    "again, until the instance is removed)",
                    instance=inst.key,
                    container=chosen,
                ) from exc
            if first is None:
                return
            yield first
            async for line in lines:
                yield line
        finally:  # a reader that stops early ends the runtime's (a remote node's stream)
            close = getattr(lines, "aclose", None)
            if close is not None:
                await close()

    @audited("exec", "Instance")
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

    async def usage(
        self,
        kind: UsageKind,
        name: str,
        namespace: str = "default",
        *,
        range: str = USAGE_DEFAULT_RANGE,
    ) -> UsageSeries:
        """Return the usage history of an instance or a node; see :class:`Service`."""
        span = check_usage_range(range)
        if kind == "node":
            node = await self.get_node(name)
            limits = (int(node.capacity.cpu), int(node.capacity.memory))
            return await read_usage(
                await self._usage_on(node.name),
                kind,
                name,
                "",
                node.name,
                span,
                self.clock.now(),
                limits,
            )
        inst = await self.get_instance(name, namespace)
        if inst.node is None:  # never placed: nothing sampled it
            return UsageSeries(kind=kind, name=name, namespace=namespace, range=span)
        return await read_usage(
            await self._usage_on(inst.node),
            kind,
            name,
            namespace,
            inst.node,
            span,
            self.clock.now(),
            limits_of(inst),
        )

    async def _usage_on(self, node: str) -> UsageQuery:
        """Return the usage history that ``node`` keeps: this node's, or reached over gRPC.

        Raises:
            Unavailable: this node keeps none, or the other node cannot be reached from here.
        """
        if self.local is not None and node == self.local.name:
            if self.local.usage is None:
                raise Unavailable(f"node {node} keeps no usage history (it runs no instances)")
            return self.local.usage
        record = await self.repo.get_node(node)
        if self.remote_usage is None or record is None:
            raise Unavailable(
                f"the usage history of node {node} is kept on that node, which this server "
                "cannot reach: run the command against that node's agent",
                node=node,
            )
        return self.remote_usage(record.value)

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
        try:
            return list(await self.remote_images(record.value).list())
        except Unavailable as exc:
            if exc.details.get("reason") != NOT_SERVED:
                raise
            runtime = record.value.runtime
            raise Unavailable(
                f"node {node} keeps no images Shoal lists (its runtime is {runtime}): images "
                "are kept by nodes that run an OCI runtime such as --runtime runc"
                + (
                    "; a CRI node's are containerd's (`crictl images` there)"
                    if runtime == CRI_RUNTIME
                    else ""
                ),
                node=node,
            ) from None

    @audited("pull_image", "Image")
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

    @audited("import_image", "Image")
    async def import_image(self, path: str, reference: str | None = None) -> list[ImageInfo]:
        """Import an image from a path on this node."""
        infos = list(await self._images().import_path(path, reference))
        names = ", ".join(i.reference for i in infos)
        await self._event(ObjectRef(kind="Image", name=names or path), "Imported", f"from {path}")
        return infos

    @audited("remove_image", "Image")
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

    @audited("gc_images", "Images")
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

    # --- audit -----------------------------------------------------------

    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        """Return the last ``limit`` entries of the audit trail, oldest first."""
        return await self.audit.entries(limit)

    async def verify_audit(self) -> AuditReport:
        """Check the audit trail's hash chain: every entry there, unedited, in order."""
        return await self.audit.verify()

    # --- nodes -----------------------------------------------------------

    async def list_nodes(self) -> list[Node]:
        """Return every node."""
        return [stored.value for stored in await self.repo.list_nodes()]

    async def get_node(self, name: str) -> Node:
        """Return one node."""
        return (await self._stored_node(name)).value

    async def _stored_node(self, name: str) -> Stored[Node]:
        """Return a node's record as stored (with its revision).

        Raises:
            NotFound: no such node.
        """
        stored = await self.repo.get_node(name)
        if stored is None:
            raise NotFound(f"node {name!r} not found: list nodes with `shoal get nodes`", node=name)
        return stored

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

    @audited("cordon", "Node")
    async def cordon(self, name: str) -> Node:
        """Stop placing new instances on a node."""
        return await self._set_node_flags(name, cordoned=True, reason="Cordoned")

    @audited("uncordon", "Node")
    async def uncordon(self, name: str) -> Node:
        """Allow placements on a node again, ending any drain."""
        return await self._set_node_flags(name, cordoned=False, draining=False, reason="Uncordoned")

    @audited("drain", "Node")
    async def drain(self, name: str) -> Node:
        """Cordon a node and move its instances elsewhere."""
        return await self._set_node_flags(name, cordoned=True, draining=True, reason="Draining")

    @audited("delete_node", "Node")
    async def delete_node(self, name: str) -> Node:
        """Forget a node that failed or left: its record, so its name is free again.

        The instances lost with it go too (their replacements run elsewhere);
        the control loop deletes them once the record is gone. If the machine
        comes back with its data dir, it registers again as a new node.

        Raises:
            NotFound: no such node.
            Conflict: it is alive or suspect (drain it and stop its agent first).
        """
        stored = await self._stored_node(name)
        node = stored.value
        if node.state in (GossipState.ALIVE, GossipState.SUSPECT):
            raise Conflict(
                f"node {name} is {node.state.value}: only a node that failed or left is deleted. "
                f"Drain it (`shoal drain {name}`), stop its agent (it leaves the cluster), "
                "then delete it",
                node=name,
            )
        try:
            await self.store.delete(stored.key, expected_revision=stored.revision)
        except RevisionConflict:
            raise Conflict(
                f"node {name} changed while it was being deleted: check `shoal get nodes`, "
                "then try again",
                node=name,
            ) from None
        await self._event(
            ObjectRef(kind="Node", name=name),
            "NodeDeleted",
            f"node {name} ({node.state.value}) deleted by {self.actor.id}: its lost instances "
            "go, and its name is free",
        )
        return node

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
        actor: str | None = None,
        via: Via | None = None,
        trace_id: str | None = None,
    ) -> list[Event]:
        """Return the latest events, oldest first, optionally about one object; see Service."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}", field="limit")
        if trace_id is not None:
            try:
                trace_id = check_trace_id(trace_id)
            except ValueError as exc:
                raise InvalidInput(str(exc), field="trace_id") from None
        events = [
            e
            for e in await self.repo.list_events(kind, namespace, name)
            if (kind is None or e.object.kind.lower() == kind.lower())
            and (name is None or e.object.name == name)
            and (namespace is None or e.object.namespace == namespace)
            and (actor is None or e.actor.id == actor)
            and (via is None or e.actor.via == via)
            and (trace_id is None or e.trace_id == trace_id)
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


def _add_config(result: ApplyResult, value: StoredConfig) -> None:
    if isinstance(value, ConfigMap):
        result.config_maps.append(value)
    elif isinstance(value, Secret):
        result.secrets.append(value.view())
    else:
        result.namespaces.append(value)


class _ConfigLookup:
    """ConfigMaps and Secrets by reference: this apply's first, then the store's."""

    def __init__(self, repo: Repository, applying: Sequence[ConfigMapSpec | SecretSpec]) -> None:
        self.repo = repo
        self.applying: dict[tuple[str, str, str], ConfigMapSpec | SecretSpec] = {
            (s.namespace, s.kind, s.name): s for s in applying
        }

    async def get(self, namespace: str, kind: str, name: str) -> ConfigMapSpec | SecretSpec | None:
        spec = self.applying.get((namespace, kind, name))
        if spec is not None:
            return spec
        return await read_used_config(self.repo.store, kind, namespace, name)

    async def refs(
        self, spec: WorkloadSpec
    ) -> dict[tuple[str, str], ConfigMapSpec | SecretSpec | None]:
        return {
            (kind, name): await self.get(spec.namespace, kind, name)
            for kind, name in spec.template.config_refs()
        }


def _applied_as(spec: WorkloadSpec) -> str:
    """Return the kind ``spec`` was written as: its Kubernetes kind, or Workload."""
    return spec.origin.kind if spec.origin is not None else "Workload"


def _kept_paused(spec: WorkloadSpec, stored: Workload | None) -> WorkloadSpec:
    """Return ``spec``, paused if the stored workload is and ``spec`` does not say ``paused``.

    As in Kubernetes: a rollout paused by `shoal rollout pause` stays paused
    when a manifest that does not mention ``paused`` is applied again; only
    `shoal rollout resume` or ``paused: false`` resumes it.
    """
    if stored is None or not stored.spec.paused or "paused" in spec.model_fields_set:
        return spec
    return spec.model_copy(update={"paused": True})


def _workload_ref(namespace: str, name: str) -> ObjectRef:
    return ObjectRef(kind="Workload", namespace=namespace, name=name)


def _not_found(kind: str, namespace: str, name: str, hint: str) -> NotFound:
    return NotFound(
        f"{kind} {namespace}/{name} not found: list them with `{hint}`",
        kind=kind,
        namespace=namespace,
        name=name,
    )


def _check_scalable(workload: Workload) -> None:
    """Refuse to scale a workload whose mode does not count replicas (nothing would change).

    Raises:
        InvalidInput: it is a daemon or a job.

    """
    mode = workload.spec.mode
    if mode == WorkloadMode.DAEMON:
        raise InvalidInput(
            f"{workload.key} is a daemon: it runs one instance on each node its placement "
            "constraints allow, whatever replicas says; change its constraints (or cordon "
            "nodes) to change where it runs",
            field="replicas",
        )
    if mode == WorkloadMode.JOB:
        raise InvalidInput(
            f"{workload.key} is a job: job.completions and job.parallelism say how many runs "
            "it makes, not replicas; change them in its manifest and apply it",
            field="replicas",
        )
