"""The planning tools (read-only) and the change tools (operator role).

``plan_workload`` and ``plan_drain`` show what a change would do and return
the plan id that authorises it. The change tools apply, scale, delete,
cordon, uncordon and drain; the destructive ones refuse to run without a
matching plan id or the user's confirmation (see :mod:`shoal.mcp._plans`).
In ``--read-only`` mode only the planning tools are registered.

No ``from __future__ import annotations`` here: the SDK evaluates tool
annotations in this module's globals, and the ``Resolve(...)`` markers name
resolvers that are local to :func:`register_change_tools`.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, ElicitationResult, MCPServer, Resolve
from mcp_types import ToolAnnotations
from pydantic import Field

from shoal.interfaces import (
    MAX_REPLICAS,
    Expected,
    InvalidInput,
    Node,
    NotFound,
    ObjectRef,
    ObjectSpec,
    Role,
    Service,
    Workload,
    WorkloadSpec,
    load_yaml_documents,
)
from shoal.kube import parse_documents

from ._args import Namespace, NodeName, PlanId, WorkloadName
from ._audit import Gate
from ._plans import (
    ChangePlan,
    apply_plan,
    confirmer,
    delete_plan,
    drain_plan,
    plan_to_ask,
    promote_plan,
    record_confirmation,
    scale_plan,
    sealed,
    undo_plan,
)
from ._redact import restore_secrets
from ._tools_config import CONFIG_CHANGE_TOOLS
from ._tools_read import READ
from ._views import Applied, NodeChanged, WorkloadChanged, WorkloadSummary, node_summaries

__all__ = ["CHANGE_TOOLS", "register_change_tools"]

CHANGE_TOOLS = (
    frozenset(
        {
            "apply_workload",
            "scale_workload",
            "delete_workload",
            "cordon_node",
            "uncordon_node",
            "drain_node",
            "undo_rollout",
            "promote_rollout",
            "pause_rollout",
            "resume_rollout",
        }
    )
    | CONFIG_CHANGE_TOOLS
)
"""Tools that change the cluster: hidden from viewers and absent in read-only mode."""

_MAX_MANIFEST = 256 * 1024
_CHANGE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
_DESTRUCTIVE = _CHANGE.model_copy(update={"destructive_hint": True})

WorkloadArg = Annotated[
    WorkloadSpec | None,
    Field(description="One workload as a JSON object (the Shoal workload schema)."),
]
ManifestArg = Annotated[
    str | None,
    Field(
        description="YAML text, one or more documents (---) of either dialect: Shoal's (kind "
        "Workload, ConfigMap, Secret or Namespace; e.g. the text of examples/hello.yaml) or "
        "Kubernetes' (apiVersion + kind: Deployment, DaemonSet, Job, Pod, ConfigMap, Secret, "
        "Namespace, List; e.g. examples/k8s/*.yaml). Kinds and fields Shoal does not honour "
        "(Service, Ingress, securityContext, ...) are reported in warnings, not applied."
    ),
]


async def object_specs(
    service: Service, workload: WorkloadSpec | None, manifest: str | None
) -> tuple[list[ObjectSpec], list[str]]:
    """Return the objects to apply and the translation's warnings.

    Redacted secret env values are restored from the stored workloads.

    Raises:
        InvalidInput: neither or both of ``workload`` and ``manifest``, or a bad manifest.
    """
    if (workload is None) == (manifest is None):
        raise InvalidInput(
            "pass exactly one of workload (a JSON object) or manifest (YAML text)",
            field="workload",
        )
    warnings: list[str] = []
    specs: list[ObjectSpec]
    if manifest is not None:
        if len(manifest) > _MAX_MANIFEST:
            raise InvalidInput(f"manifest is over {_MAX_MANIFEST} characters: split it")
        translation = parse_documents(load_yaml_documents(manifest, "manifest"), "manifest")
        specs, warnings = translation.objects, translation.warnings
    else:
        assert workload is not None
        specs = [workload]
    restored: list[ObjectSpec] = []
    for spec in specs:
        if not isinstance(spec, WorkloadSpec):
            restored.append(spec)
            continue
        try:
            stored = await service.get_workload(spec.name, spec.namespace)
        except NotFound:
            stored = None
        restored.append(restore_secrets(spec, stored))
    return restored, warnings


async def plan_apply(
    service: Service, workload: WorkloadSpec | None, manifest: str | None
) -> tuple[ChangePlan, list[ObjectSpec]]:
    """Return the plan of applying ``workload`` or ``manifest``, and the objects it applies."""
    specs, warnings = await object_specs(service, workload, manifest)
    return apply_plan(await service.apply(specs, dry_run=True), specs, warnings), specs


def _workload_ref(name: str, namespace: str) -> ObjectRef:
    return ObjectRef(kind="Workload", namespace=namespace, name=name)


def register_change_tools(server: MCPServer[Any], gate: Gate, *, read_only: bool) -> None:
    """Register the planning tools, and unless ``read_only`` the change tools."""

    async def planned_apply(
        ctx: Context, workload: WorkloadSpec | None, manifest: str | None, plan_id: str | None
    ) -> ChangePlan | None:
        async def make(service: Service) -> ChangePlan:
            return (await plan_apply(service, workload, manifest))[0]

        return await plan_to_ask(gate, ctx, plan_id, make)

    async def planned_scale(
        ctx: Context, name: str, namespace: str, replicas: int, plan_id: str | None
    ) -> ChangePlan | None:
        return await plan_to_ask(
            gate, ctx, plan_id, lambda s: scale_plan(s, name, namespace, replicas)
        )

    async def planned_delete(
        ctx: Context, name: str, namespace: str, plan_id: str | None
    ) -> ChangePlan | None:
        return await plan_to_ask(gate, ctx, plan_id, lambda s: delete_plan(s, name, namespace))

    async def planned_undo(
        ctx: Context, name: str, namespace: str, revision: int | None, plan_id: str | None
    ) -> ChangePlan | None:
        return await plan_to_ask(
            gate, ctx, plan_id, lambda s: undo_plan(s, name, namespace, revision)
        )

    async def planned_promote(
        ctx: Context, name: str, namespace: str, plan_id: str | None
    ) -> ChangePlan | None:
        return await plan_to_ask(gate, ctx, plan_id, lambda s: promote_plan(s, name, namespace))

    async def planned_drain(ctx: Context, name: str, plan_id: str | None) -> ChangePlan | None:
        return await plan_to_ask(gate, ctx, plan_id, lambda s: drain_plan(s, name))

    confirm_apply, confirm_scale = confirmer(planned_apply), confirmer(planned_scale)
    confirm_delete, confirm_undo = confirmer(planned_delete), confirmer(planned_undo)
    confirm_promote, confirm_drain = confirmer(planned_promote), confirmer(planned_drain)

    async def change_workload(
        ctx: Context,
        name: str,
        namespace: str,
        confirmation: ElicitationResult[Any],
        asked: ChangePlan | None,
        plan_id: str | None,
        plan: Callable[[Service], Awaitable[ChangePlan]],
        change: Callable[[Service, Expected | None], Awaitable[Workload]],
    ) -> WorkloadChanged:
        """Plan a change to one workload, check it is confirmed, make it, and report it.

        The change is made only if the workload is still the version planned
        (``made.expected``): the check and the write are one step in the service,
        so another writer's change in between is not carried along.
        """
        async with gate.call(ctx, Role.OPERATOR, _workload_ref(name, namespace)) as call:
            made = await plan(call.service)
            how = _confirmed(call, made, plan_id, confirmation, asked, gate.seal)
            workload = await change(call.service, made.expected)
        return WorkloadChanged(
            summary=made.summary,
            confirmed=how,
            workload=WorkloadSummary.of(workload),
            trace_id=call.trace_id,
        )

    @server.tool(annotations=READ)
    async def plan_workload(
        ctx: Context,
        action: Annotated[
            Literal["apply", "scale", "delete", "undo", "promote"],
            Field(
                description="apply a workload/manifest, scale one, delete one, undo its last "
                "rollout, or promote its canaries."
            ),
        ] = "apply",
        workload: WorkloadArg = None,
        manifest: ManifestArg = None,
        name: Annotated[str | None, Field(description="For scale and delete.")] = None,
        namespace: Namespace = "default",
        replicas: Annotated[
            int | None, Field(ge=0, le=MAX_REPLICAS, description="For scale: the new count.")
        ] = None,
        revision: Annotated[
            int | None, Field(ge=1, description="For undo: the kept revision to go back to.")
        ] = None,
    ) -> ChangePlan:
        """Plan a change without making it.

        Shows the field-by-field diff an apply would make, or what a scale or delete would stop.

        Returns the plan_id that delete_workload, scale_workload (to 0), apply_workload (to 0
        replicas), undo_rollout and promote_rollout require.
        """
        async with gate.call(ctx, Role.VIEWER) as call:
            if action == "apply":
                plan = (await plan_apply(call.service, workload, manifest))[0]
            elif name is None:
                raise InvalidInput(f"plan_workload(action={action!r}) needs name", field="name")
            elif action == "delete":
                plan = await delete_plan(call.service, name, namespace)
            elif action == "undo":
                plan = await undo_plan(call.service, name, namespace, revision)
            elif action == "promote":
                plan = await promote_plan(call.service, name, namespace)
            elif replicas is None:
                raise InvalidInput("plan_workload(action='scale') needs replicas", field="replicas")
            else:
                plan = await scale_plan(call.service, name, namespace, replicas)
            return sealed(plan, gate.seal, call.caller)

    @server.tool(annotations=READ)
    async def plan_drain(name: NodeName, ctx: Context) -> ChangePlan:
        """Plan draining a node: which instances would stop there and move elsewhere.

        Returns the plan_id drain_node requires.
        """
        async with gate.call(ctx, Role.VIEWER, ObjectRef(kind="Node", name=name)) as call:
            return sealed(await drain_plan(call.service, name), gate.seal, call.caller)

    if read_only:
        return

    @server.tool(annotations=_DESTRUCTIVE)
    async def apply_workload(
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_apply)],
        asked: Annotated[ChangePlan | None, Resolve(planned_apply)],
        workload: WorkloadArg = None,
        manifest: ManifestArg = None,
        plan_id: PlanId = None,
    ) -> Applied:
        """Create or update workloads, ConfigMaps, Secrets and Namespaces, all or nothing.

        Takes one workload (JSON) or a manifest (YAML) of Shoal's or Kubernetes' documents;
        what Shoal does not honour comes back in warnings. The control loop then converges.

        Pass a plan_id from plan_workload to apply exactly what was reviewed; scaling a workload to
        0 replicas this way needs one.
        """
        async with gate.call(ctx, Role.OPERATOR) as call:
            plan, specs = await plan_apply(call.service, workload, manifest)
            how = _confirmed(call, plan, plan_id, confirmation, asked, gate.seal)
            result = await call.service.apply(specs)
        config = [f"ConfigMap {c.key}" for c in result.config_maps]
        config += [f"Secret {s.key}" for s in result.secrets]
        config += [f"Namespace {n.key}" for n in result.namespaces]
        return Applied(
            plan_id=plan.plan_id,
            summary=plan.summary,
            confirmed=how,
            changes=plan.changes,
            workloads=[WorkloadSummary.of(w) for w in result.workloads],
            config=config,
            warnings=plan.warnings,
            trace_id=call.trace_id,
        )

    @server.tool(annotations=_DESTRUCTIVE)
    async def scale_workload(
        name: WorkloadName,
        replicas: Annotated[
            int, Field(ge=0, le=MAX_REPLICAS, description="The new replica count.")
        ],
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_scale)],
        asked: Annotated[ChangePlan | None, Resolve(planned_scale)],
        namespace: Namespace = "default",
        plan_id: PlanId = None,
    ) -> WorkloadChanged:
        """Set a workload's replica count.

        Scaling to 0 stops every instance and needs a plan_id from plan_workload(action='scale') or
        the user's confirmation.
        """
        return await change_workload(
            ctx,
            name,
            namespace,
            confirmation,
            asked,
            plan_id,
            lambda s: scale_plan(s, name, namespace, replicas),
            lambda s, v: s.scale(name, replicas, namespace, expected=v),
        )

    @server.tool(annotations=_DESTRUCTIVE)
    async def delete_workload(
        name: WorkloadName,
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_delete)],
        asked: Annotated[ChangePlan | None, Resolve(planned_delete)],
        namespace: Namespace = "default",
        plan_id: PlanId = None,
    ) -> WorkloadChanged:
        """Delete a workload: its instances stop and are removed, then it is gone.

        Needs a plan_id from plan_workload(action='delete') or the user's confirmation.
        """
        return await change_workload(
            ctx,
            name,
            namespace,
            confirmation,
            asked,
            plan_id,
            lambda s: delete_plan(s, name, namespace),
            lambda s, v: s.delete_workload(name, namespace, expected=v),
        )

    @server.tool(annotations=_DESTRUCTIVE)
    async def undo_rollout(
        name: WorkloadName,
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_undo)],
        asked: Annotated[ChangePlan | None, Resolve(planned_undo)],
        namespace: Namespace = "default",
        revision: Annotated[
            int | None,
            Field(ge=1, description="A kept revision (see get_rollout); the previous if omitted."),
        ] = None,
        plan_id: PlanId = None,
    ) -> WorkloadChanged:
        """Roll a workload back to a kept revision's template: a new rollout, and a new revision.

        Needs a plan_id from plan_workload(action='undo') or the user's confirmation.
        """
        return await change_workload(
            ctx,
            name,
            namespace,
            confirmation,
            asked,
            plan_id,
            lambda s: undo_plan(s, name, namespace, revision),
            lambda s, v: s.rollout_undo(name, revision, namespace, expected=v),
        )

    @server.tool(annotations=_DESTRUCTIVE)
    async def promote_rollout(
        name: WorkloadName,
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_promote)],
        asked: Annotated[ChangePlan | None, Resolve(planned_promote)],
        namespace: Namespace = "default",
        plan_id: PlanId = None,
    ) -> WorkloadChanged:
        """Promote a rollout's canaries: the rest of the old instances are replaced.

        Needs a plan_id from plan_workload(action='promote') or the user's confirmation.
        """
        return await change_workload(
            ctx,
            name,
            namespace,
            confirmation,
            asked,
            plan_id,
            lambda s: promote_plan(s, name, namespace),
            lambda s, v: s.promote_rollout(name, namespace, expected=v),
        )

    async def pause_or_resume(
        ctx: Context, name: str, namespace: str, paused: bool, summary: str
    ) -> WorkloadChanged:
        async with gate.call(ctx, Role.OPERATOR, _workload_ref(name, namespace)) as call:
            workload = await call.service.pause_rollout(name, paused, namespace)
        return WorkloadChanged(
            summary=summary,
            confirmed="not destructive",
            workload=WorkloadSummary.of(workload),
            trace_id=call.trace_id,
        )

    @server.tool(annotations=_CHANGE)
    async def pause_rollout(
        name: WorkloadName, ctx: Context, namespace: Namespace = "default"
    ) -> WorkloadChanged:
        """Pause a workload's rollout: no more old instances are replaced until resume_rollout.

        What was replaced stays, and scaling still works; an apply while paused waits too.
        """
        summary = (
            f"rollout of {namespace}/{name} paused: no more old instances are replaced until "
            "resume_rollout"
        )
        return await pause_or_resume(ctx, name, namespace, True, summary)

    @server.tool(annotations=_CHANGE)
    async def resume_rollout(
        name: WorkloadName, ctx: Context, namespace: Namespace = "default"
    ) -> WorkloadChanged:
        """Resume a paused rollout: it goes on replacing old instances under its strategy."""
        summary = f"rollout of {namespace}/{name} resumed: it goes on under its update strategy"
        return await pause_or_resume(ctx, name, namespace, False, summary)

    async def flag_node(
        ctx: Context, name: str, change: Callable[[Service], Awaitable[Node]], summary: str
    ) -> NodeChanged:
        async with gate.call(ctx, Role.OPERATOR, ObjectRef(kind="Node", name=name)) as call:
            node = await change(call.service)
            instances = await call.service.list_instances(node=name)
        (usage,) = node_summaries([node], instances)
        return NodeChanged(
            summary=summary, confirmed="not destructive", node=usage, trace_id=call.trace_id
        )

    @server.tool(annotations=_CHANGE)
    async def cordon_node(name: NodeName, ctx: Context) -> NodeChanged:
        """Stop placing new instances on a node; what runs there keeps running."""
        summary = f"node {name} cordoned: no new instances are placed there"
        return await flag_node(ctx, name, lambda s: s.cordon(name), summary)

    @server.tool(annotations=_CHANGE)
    async def uncordon_node(name: NodeName, ctx: Context) -> NodeChanged:
        """Allow placements on a node again (this also ends a drain)."""
        summary = f"node {name} uncordoned: instances may be placed there again"
        return await flag_node(ctx, name, lambda s: s.uncordon(name), summary)

    @server.tool(annotations=_DESTRUCTIVE)
    async def drain_node(
        name: NodeName,
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_drain)],
        asked: Annotated[ChangePlan | None, Resolve(planned_drain)],
        plan_id: PlanId = None,
    ) -> NodeChanged:
        """Cordon a node and move its instances elsewhere, replacement first.

        Needs a plan_id from plan_drain or the user's confirmation.
        """
        async with gate.call(ctx, Role.OPERATOR, ObjectRef(kind="Node", name=name)) as call:
            plan = await drain_plan(call.service, name)
            how = _confirmed(call, plan, plan_id, confirmation, asked, gate.seal)
            node = await call.service.drain(name)
            instances = await call.service.list_instances(node=name)
        (summary,) = node_summaries([node], instances)
        return NodeChanged(
            summary=plan.summary, confirmed=how, node=summary, trace_id=call.trace_id
        )


_confirmed = record_confirmation
