"""The configuration tools: look at ConfigMaps, Secrets and Namespaces; delete with a plan.

``list_config_maps``, ``list_secrets`` and ``list_namespaces`` are reads
(viewer). A Secret is shown by its keys and their sizes: no tool ever returns
its values. Deleting a ConfigMap or a Secret is destructive (pods that use it
cannot start again until it is back): ``delete_config_map`` and
``delete_secret`` need the plan_id of ``plan_delete_config`` for exactly that
object as it is now, or the user's confirmation, like ``delete_workload``.

No ``from __future__ import annotations`` here: the SDK evaluates tool
annotations in this module's globals, and the ``Resolve(...)`` markers name
resolvers that are local to :func:`register_config_tools`.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, ElicitationResult, MCPServer, Resolve
from mcp_types import ToolAnnotations
from pydantic import Field

from shoal.interfaces import ConfigMap, ObjectRef, Role, SecretView

from ._args import Namespace, OptionalNamespace, PlanId
from ._audit import Gate
from ._plans import (
    ChangePlan,
    config_delete_plan,
    confirmer,
    plan_to_ask,
    record_confirmation,
    sealed,
)
from ._views import Model

__all__ = ["CONFIG_CHANGE_TOOLS", "CONFIG_READ_TOOLS", "register_config_tools"]

CONFIG_READ_TOOLS = frozenset(
    {"list_config_maps", "list_secrets", "list_namespaces", "plan_delete_config"}
)
"""The read-only configuration tools."""
CONFIG_CHANGE_TOOLS = frozenset({"delete_config_map", "delete_secret"})
"""The configuration tools that change the cluster: hidden from viewers, absent read-only."""

_READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
_DESTRUCTIVE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
_MAX_VALUE = 4096
"""Characters of one ConfigMap value that list_config_maps(include_data=True) returns."""

ConfigName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        description="Name of the ConfigMap or Secret, e.g. from list_config_maps or list_secrets.",
    ),
]


class ConfigMapSummary(Model):
    """One ConfigMap: its keys and their sizes (and its text values when asked)."""

    name: str
    """ConfigMap name."""
    namespace: str
    """Namespace; only pods of this namespace can use it."""
    sizes: dict[str, int]
    """Each key's value length in bytes (data and binary_data)."""
    immutable: bool
    """Its data cannot change; delete and recreate it to change it."""
    origin: str
    """The Kubernetes kind it was applied as ('ConfigMap'), or '' from Shoal's dialect."""
    generation: int
    """Incremented on every change."""
    updated_at: datetime
    """When it last changed."""
    data: dict[str, str] | None = None
    """Its text values (each cut at 4096 characters), only with include_data."""

    @classmethod
    def of(cls, config_map: ConfigMap, include_data: bool) -> "ConfigMapSummary":
        """Summarise ``config_map``."""
        spec = config_map.spec
        data = None
        if include_data:
            data = {
                k: v if len(v) <= _MAX_VALUE else v[:_MAX_VALUE] + "... (cut)"
                for k, v in spec.data.items()
            }
        return cls(
            name=spec.name,
            namespace=spec.namespace,
            sizes={k: len(v) for k, v in spec.files().items()},
            immutable=spec.immutable,
            origin=spec.origin.kind if spec.origin is not None else "",
            generation=config_map.generation,
            updated_at=config_map.updated_at,
            data=data,
        )


class ConfigMapList(Model):
    """ConfigMaps, sorted by namespace and name."""

    config_maps: list[ConfigMapSummary]
    """One entry per ConfigMap."""


class SecretSummary(Model):
    """One Secret: its type, keys and their sizes. Never its values."""

    name: str
    """Secret name."""
    namespace: str
    """Namespace; only pods of this namespace can use it."""
    type: str
    """Opaque, kubernetes.io/tls, kubernetes.io/basic-auth, kubernetes.io/dockerconfigjson, ..."""
    sizes: dict[str, int]
    """Each key's value length in bytes; the values are never shown to an agent."""
    immutable: bool
    """Its data cannot change."""
    generation: int
    """Incremented on every change."""
    updated_at: datetime
    """When it last changed."""

    @classmethod
    def of(cls, secret: SecretView) -> "SecretSummary":
        """Summarise ``secret`` (a view without values)."""
        return cls(
            name=secret.name,
            namespace=secret.namespace,
            type=secret.type,
            sizes=dict(secret.sizes),
            immutable=secret.immutable,
            generation=secret.generation,
            updated_at=secret.updated_at,
        )


class SecretList(Model):
    """Secrets, sorted by namespace and name: keys and sizes only."""

    secrets: list[SecretSummary]
    """One entry per Secret."""


class NamespaceSummary(Model):
    """One namespace."""

    name: str
    """Namespace name."""
    declared: bool
    """True for a Namespace object that was applied; False for a name only used by objects."""
    labels: dict[str, str]
    """Its labels."""


class NamespaceList(Model):
    """Every namespace: the Namespace objects and the names objects use."""

    namespaces: list[NamespaceSummary]
    """Sorted by name."""


class ConfigDeleted(Model):
    """A deleted ConfigMap or Secret."""

    summary: str
    """What was done, and what it means for the workloads that used it."""
    confirmed: str
    """How the change was authorised: 'plan' or 'elicitation'."""
    trace_id: str | None = None
    """The trace of this call: get_trace shows it and the work it caused."""


def register_config_tools(server: MCPServer[Any], gate: Gate, *, read_only: bool) -> None:
    """Register the configuration read tools, and unless ``read_only`` the delete tools."""

    @server.tool(annotations=_READ)
    async def list_config_maps(
        ctx: Context,
        namespace: OptionalNamespace = None,
        include_data: Annotated[
            bool,
            Field(description="Also return the text values (each cut at 4096 characters)."),
        ] = False,
    ) -> ConfigMapList:
        """List ConfigMaps: keys and sizes per ConfigMap; the text values with include_data.

        Pods use ConfigMaps as environment variables (env_from, env_refs) and files (volumes);
        a pod whose ConfigMap is missing waits with CreateContainerConfigError.
        """
        async with gate.call(ctx, Role.VIEWER) as call:
            found = await call.service.list_config_maps(namespace)
        return ConfigMapList(config_maps=[ConfigMapSummary.of(c, include_data) for c in found])

    @server.tool(annotations=_READ)
    async def list_secrets(ctx: Context, namespace: OptionalNamespace = None) -> SecretList:
        """List Secrets: type, keys and sizes. Their values are never shown to an agent.

        Pods use Secrets as environment variables and files, and as image pull credentials;
        a pod whose Secret is missing waits with CreateContainerConfigError.
        """
        async with gate.call(ctx, Role.VIEWER) as call:
            found = await call.service.list_secrets(namespace)
        return SecretList(secrets=[SecretSummary.of(s) for s in found])

    @server.tool(annotations=_READ)
    async def list_namespaces(ctx: Context) -> NamespaceList:
        """List namespaces: the Namespace objects applied, and every name objects use."""
        async with gate.call(ctx, Role.VIEWER) as call:
            found = await call.service.list_namespaces()
        return NamespaceList(
            namespaces=[
                NamespaceSummary(name=n.spec.name, declared=bool(n.uid), labels=n.spec.labels)
                for n in found
            ]
        )

    @server.tool(annotations=_READ)
    async def plan_delete_config(
        kind: Annotated[Literal["ConfigMap", "Secret"], Field(description="ConfigMap or Secret.")],
        name: ConfigName,
        ctx: Context,
        namespace: Namespace = "default",
    ) -> ChangePlan:
        """Plan deleting a ConfigMap or a Secret: which workloads use it and what happens to them.

        Returns the plan_id that delete_config_map and delete_secret require.
        """
        ref = ObjectRef(kind=kind, namespace=namespace, name=name)
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            plan = await config_delete_plan(call.service, kind, name, namespace)
            return sealed(plan, gate.seal, call.caller)

    if read_only:
        return

    async def planned_config_map(
        ctx: Context, name: str, namespace: str, plan_id: str | None
    ) -> ChangePlan | None:
        return await plan_to_ask(
            gate, ctx, plan_id, lambda s: config_delete_plan(s, "ConfigMap", name, namespace)
        )

    async def planned_secret(
        ctx: Context, name: str, namespace: str, plan_id: str | None
    ) -> ChangePlan | None:
        return await plan_to_ask(
            gate, ctx, plan_id, lambda s: config_delete_plan(s, "Secret", name, namespace)
        )

    confirm_config_map, confirm_secret = confirmer(planned_config_map), confirmer(planned_secret)

    async def delete(
        ctx: Context,
        kind: Literal["ConfigMap", "Secret"],
        name: str,
        namespace: str,
        plan_id: str | None,
        confirmation: ElicitationResult[Any],
        asked: ChangePlan | None,
    ) -> ConfigDeleted:
        ref = ObjectRef(kind=kind, namespace=namespace, name=name)
        async with gate.call(ctx, Role.OPERATOR, ref) as call:
            plan = await config_delete_plan(call.service, kind, name, namespace)
            how = record_confirmation(call, plan, plan_id, confirmation, asked, gate.seal)
            # The version the plan was checked against: nothing else is deleted.
            await call.service.delete_config(kind, name, namespace, expected=plan.expected)
        return ConfigDeleted(summary=plan.summary, confirmed=how, trace_id=call.trace_id)

    @server.tool(annotations=_DESTRUCTIVE)
    async def delete_config_map(
        name: ConfigName,
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_config_map)],
        asked: Annotated[ChangePlan | None, Resolve(planned_config_map)],
        namespace: Namespace = "default",
        plan_id: PlanId = None,
    ) -> ConfigDeleted:
        """Delete a ConfigMap. Pods using it keep what they have; new ones wait until it is back.

        Needs a plan_id from plan_delete_config(kind='ConfigMap') or the user's confirmation.
        """
        return await delete(ctx, "ConfigMap", name, namespace, plan_id, confirmation, asked)

    @server.tool(annotations=_DESTRUCTIVE)
    async def delete_secret(
        name: ConfigName,
        ctx: Context,
        confirmation: Annotated[ElicitationResult[Any], Resolve(confirm_secret)],
        asked: Annotated[ChangePlan | None, Resolve(planned_secret)],
        namespace: Namespace = "default",
        plan_id: PlanId = None,
    ) -> ConfigDeleted:
        """Delete a Secret. Pods using it keep what they have; new ones wait until it is back.

        Needs a plan_id from plan_delete_config(kind='Secret') or the user's confirmation.
        """
        return await delete(ctx, "Secret", name, namespace, plan_id, confirmation, asked)
