"""Prompts: ready-made procedures an agent follows with Shoal's tools.

* ``diagnose-workload`` — find why a workload is not healthy, without changing it;
* ``capacity-plan`` — decide whether the cluster fits more replicas, and where;
* ``safe-rollout`` — change a workload one reviewed step at a time.

Each prompt states the procedure and embeds a live snapshot (the workload or
the nodes' load as they are now), so the agent starts from facts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from pydantic import Field

from shoal.interfaces import ShoalError

from ._audit import Gate
from ._views import InstanceSummary, WorkloadSummary, node_summaries

__all__ = ["register_prompts"]

Name = Annotated[str, Field(description="Workload name.")]
Namespace = Annotated[str, Field(description="Namespace (default: 'default').")]

_DIAGNOSE = """\
Diagnose workload {namespace}/{name} on Shoal. Do not change anything.

1. get_workload(name="{name}", namespace="{namespace}"): compare replicas with ready_replicas, \
generation with observed_generation, and read its conditions.
2. list_instances(workload="{name}", namespace="{namespace}"): find instances that are not \
running and ready, or that restart.
3. For each such instance: explain_instance(name=...). It gives the scheduler's reason per node \
for a pending instance, and the restart history, last events and log lines of a failing one \
(previous_log_tail: what the run before its last restart said).
4. get_logs(instance=..., grep="error|panic|fatal|exception") for the lines around the failure; \
for an instance that restarted, get_logs(instance=..., previous=true) reads the run that ended.
5. list_events(kind="Instance", name=<instance>, namespace="{namespace}", warnings_only=true) \
for what went wrong with an instance and when (its exits, failed pulls, probes), and \
list_events(kind="Workload", name="{name}", namespace="{namespace}", warnings_only=true) for \
the workload's own (scheduling, rollouts).

Report: the state in one sentence; the root cause with the evidence (quote log lines and \
events); the fix, as the exact tool calls to make (plan_workload first for any change). \
Secret values read '<redacted>'; never ask for them.

Current state:
{snapshot}"""

_CAPACITY = """\
Plan capacity on Shoal for {replicas} more replica(s) of a pod that requests cpu={cpu} and \
memory={memory} each.

1. cluster_status: which nodes are alive, schedulable (not cordoned), and how loaded.
2. For each schedulable node, free = allocatable - requested (cpu in millicores, memory in \
bytes); count how many such pods fit (also at most 110 instances per node).
3. Placement constraints and host ports of the workload narrow the nodes further \
(get_workload shows them).

Report: how many fit per node and in total; whether {replicas} fit with room for one node \
failing (N+1); what to do if not (free capacity, add a node, lower requests). Change nothing.

Nodes now:
{snapshot}"""

_ROLLOUT = """\
Roll out a change to workload {namespace}/{name} on Shoal safely{change}.

1. get_workload(name="{name}", namespace="{namespace}") and keep its current spec: it is the \
rollback.
2. Write the new spec (change only what is needed). plan_workload(action="apply", \
workload=<new spec>) and show the user the diff: instances_to_replace, instances_to_delete, \
every changed field. Stop if the plan scales the workload to zero or is not what was asked.
3. apply_workload(workload=<new spec>, plan_id=<the plan's id>).
4. Watch: list_instances(workload="{name}", namespace="{namespace}") until every instance \
runs the new generation and is ready; explain_instance on any that fails or restarts.
5. If instances fail, roll back: plan_workload with the spec from step 1, then apply it with \
its plan_id. Never delete the workload to fix a rollout.

Report each step's outcome. Secret values read '<redacted>': leave them as they are, and \
applying keeps the stored values.

Current state:
{snapshot}"""


def register_prompts(server: MCPServer[Any], gate: Gate) -> None:
    """Register the prompts on ``server``."""

    async def workload_snapshot(ctx: Context, name: str, namespace: str) -> str:
        service = gate.services(gate.caller(ctx))
        try:
            workload = await service.get_workload(name, namespace)
            instances = await service.list_instances(namespace, name)
        except ShoalError as exc:
            return f"(not available: {exc.message})"
        document = {
            "workload": WorkloadSummary.of(workload).model_dump(mode="json"),
            "instances": [InstanceSummary.of(i).model_dump(mode="json") for i in instances],
        }
        return json.dumps(document, indent=2)

    @server.prompt(name="diagnose-workload", title="Diagnose a workload")
    async def diagnose_workload(
        name: Name, ctx: Context, namespace: Namespace = "default"
    ) -> list[Message]:
        """Find out why a workload is not healthy, with evidence, without changing anything."""
        snapshot = await workload_snapshot(ctx, name, namespace)
        text = _DIAGNOSE.format(name=name, namespace=namespace, snapshot=snapshot)
        return [UserMessage(text)]

    @server.prompt(name="capacity-plan", title="Plan capacity")
    async def capacity_plan(
        ctx: Context,
        replicas: Annotated[str, Field(description="How many more replicas (default 1).")] = "1",
        cpu: Annotated[str, Field(description="CPU request per replica, e.g. '500m'.")] = "100m",
        memory: Annotated[
            str, Field(description="Memory request per replica, e.g. '256Mi'.")
        ] = "128Mi",
    ) -> list[Message]:
        """Work out whether the cluster fits more replicas of a pod, and where they would go."""
        service = gate.services(gate.caller(ctx))
        try:
            nodes = node_summaries(await service.list_nodes(), await service.list_instances())
            snapshot = json.dumps([n.model_dump(mode="json") for n in nodes], indent=2)
        except ShoalError as exc:
            snapshot = f"(not available: {exc.message})"
        text = _CAPACITY.format(replicas=replicas, cpu=cpu, memory=memory, snapshot=snapshot)
        return [UserMessage(text)]

    @server.prompt(name="safe-rollout", title="Roll out a change safely")
    async def safe_rollout(
        name: Name,
        ctx: Context,
        namespace: Namespace = "default",
        change: Annotated[
            str, Field(description="What to change, e.g. 'image to busybox:1.37'.")
        ] = "",
    ) -> list[Message]:
        """Change a workload one reviewed step at a time.

        Plan, apply with the plan id, watch the instances, and roll back on failure.
        """
        snapshot = await workload_snapshot(ctx, name, namespace)
        text = _ROLLOUT.format(
            name=name,
            namespace=namespace,
            change=f" ({change})" if change else "",
            snapshot=snapshot,
        )
        return [UserMessage(text)]
