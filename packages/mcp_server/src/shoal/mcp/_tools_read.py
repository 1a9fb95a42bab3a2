"""The read tools: look at nodes, members, workloads, instances, events, logs; explain failures.

All are read-only (viewer role) and idempotent. Outputs are compact views
with secret env values redacted; log lines are scrubbed of the secret values
the instance's env holds, filtered and capped so one call cannot flood an
agent's context.
"""

from __future__ import annotations

import contextlib
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from shoal.interfaces import (
    Conflict,
    InstanceState,
    InvalidInput,
    LogLine,
    NotFound,
    ObjectRef,
    Role,
    Unavailable,
    WorkloadPhase,
)

from ._args import InstanceName, Limit, Namespace, NodeName, OptionalNamespace, WorkloadName
from ._audit import AUDIT_REASON, Gate
from ._hints import as_tool_calls
from ._redact import redact_model, scrub, secret_values
from ._views import (
    ClusterStatus,
    ContainerStatsList,
    Diagnosis,
    EventList,
    InstanceList,
    InstanceSummary,
    LogResult,
    MemberList,
    NodeDetail,
    NodeList,
    RolloutView,
    WorkloadDetail,
    WorkloadList,
    WorkloadSummary,
    count_by,
    node_summaries,
)

__all__ = ["READ", "register_read_tools"]

READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
"""Annotations of every tool that only looks."""

_MAX_LINE = 2000
_SCAN_LIMIT = 50_000  # lines a grep looks through, newest first
_EXPLAIN_LOG_LINES = 20
_MAX_PROBLEMS = 20
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str | None, now: datetime) -> datetime | None:
    """Parse '10s', '5m', '2h', '1d' or an ISO 8601 time.

    Raises:
        InvalidInput: neither form.
    """
    if value is None:
        return None
    text = value.strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return now - timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"since {value!r} is neither a duration (10s, 5m, 2h, 1d) nor an ISO 8601 time",
            field="since",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _matches(line: str, alternatives: list[str]) -> bool:
    lowered = line.lower()
    return any(alternative in lowered for alternative in alternatives)


def _cap(lines: list[LogLine], max_bytes: int) -> list[LogLine]:
    """Keep the newest lines whose text fits in ``max_bytes``."""
    total, start = 0, len(lines)
    while start > 0:
        size = len(lines[start - 1].line.encode()) + 1
        if total + size > max_bytes:
            break
        total += size
        start -= 1
    return lines[start:]


def register_read_tools(server: MCPServer[Any], gate: Gate) -> None:
    """Register the read tools on ``server``."""

    @server.tool(annotations=READ)
    async def cluster_status(ctx: Context) -> ClusterStatus:
        """Start here: the cluster at a glance.

        Nodes and their load, workloads per phase, instances per state, and the problems that
        need attention (with the tool to call next).
        """
        async with gate.call(ctx, Role.VIEWER) as call:
            nodes = await call.service.list_nodes()
            workloads = await call.service.list_workloads()
            instances = await call.service.list_instances()
        problems = [f"node {n.name} is {n.state.value}" for n in nodes if n.state.value != "alive"]
        problems += [
            f"node {n.name} is {'draining' if n.draining else 'cordoned'}: nothing new is "
            f"placed there (uncordon_node(name={n.name!r}) to place there again)"
            for n in nodes
            if n.cordoned
        ]
        problems += [
            f"workload {w.key} is {w.status.phase.value}"
            + (" with its rollout paused" if w.spec.paused else "")
            + f": {w.status.ready_replicas}/{w.wanted_replicas} ready "
            + ("(get_rollout; resume_rollout goes on)" if w.spec.paused else "(get_workload)")
            for w in workloads
            # A job that completed is done, not a problem (a failed one is).
            if w.status.phase
            not in (WorkloadPhase.RUNNING, WorkloadPhase.DELETING, WorkloadPhase.COMPLETE)
        ]
        problems += [
            as_tool_calls(
                f"instance {i.key} is {i.state.value}: {i.reason} {i.message}", i.namespace
            ).rstrip()
            + " (explain_instance)"
            for i in instances
            if i.state in (InstanceState.FAILED, InstanceState.PENDING, InstanceState.LOST)
            or (i.restart_count and i.state != InstanceState.RUNNING)
        ]
        return ClusterStatus(
            healthy=not problems,
            problems=problems[:_MAX_PROBLEMS],
            nodes=node_summaries(nodes, instances),
            workloads_by_phase=count_by(w.status.phase.value for w in workloads),
            instances_by_state=count_by(i.state.value for i in instances),
        )

    @server.tool(annotations=READ)
    async def get_rollout(
        name: WorkloadName, ctx: Context, namespace: Namespace = "default"
    ) -> RolloutView:
        """Show a workload's rollout: its revision, updated and available counts, and state.

        Also lists the kept revisions (rollout history) that undo_rollout can go back to.
        """
        ref = ObjectRef(kind="Workload", namespace=namespace, name=name)
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            return RolloutView.of(await call.service.get_workload(name, namespace))

    @server.tool(annotations=READ)
    async def list_nodes(ctx: Context, limit: Limit = 100) -> NodeList:
        """List nodes with their state, flags and requested/allocatable resources."""
        async with gate.call(ctx, Role.VIEWER) as call:
            nodes = await call.service.list_nodes()
            instances = await call.service.list_instances()
        shown = node_summaries(nodes[:limit], instances)
        return NodeList(nodes=shown, total=len(nodes), truncated=len(nodes) > limit)

    @server.tool(annotations=READ)
    async def get_node(name: NodeName, ctx: Context) -> NodeDetail:
        """Show one node in full: addresses, labels, capacity, state, and its instances."""
        async with gate.call(ctx, Role.VIEWER, ObjectRef(kind="Node", name=name)) as call:
            node = await call.service.get_node(name)
            instances = await call.service.list_instances(node=name)
        (usage,) = node_summaries([node], instances)
        return NodeDetail(
            node=node, usage=usage, instances=[InstanceSummary.of(i) for i in instances]
        )

    @server.tool(annotations=READ)
    async def list_members(ctx: Context, limit: Limit = 100) -> MemberList:
        """List the gossip members the server's node knows: address, state and tags.

        State is alive, suspect, failed or left. Unlike list_nodes, it includes members that
        have no node record, e.g. a node refused at registration.
        """
        async with gate.call(ctx, Role.VIEWER) as call:
            members = await call.service.list_members()
        return MemberList(
            members=members[:limit], total=len(members), truncated=len(members) > limit
        )

    @server.tool(annotations=READ)
    async def list_workloads(
        ctx: Context, namespace: OptionalNamespace = None, limit: Limit = 100
    ) -> WorkloadList:
        """List workloads: phase, desired and ready replicas, generation, images."""
        async with gate.call(ctx, Role.VIEWER) as call:
            workloads = await call.service.list_workloads(namespace)
        return WorkloadList(
            workloads=[WorkloadSummary.of(w) for w in workloads[:limit]],
            total=len(workloads),
            truncated=len(workloads) > limit,
        )

    @server.tool(annotations=READ)
    async def get_workload(
        name: WorkloadName, ctx: Context, namespace: Namespace = "default"
    ) -> WorkloadDetail:
        """Show one workload in full (spec, status, conditions) with its instances.

        Secret env values read '<redacted>'; applying the spec back unchanged keeps their stored
        values.
        """
        ref = ObjectRef(kind="Workload", namespace=namespace, name=name)
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            workload = await call.service.get_workload(name, namespace)
            instances = await call.service.list_instances(namespace, name)
        return WorkloadDetail.of(workload, instances)

    @server.tool(annotations=READ)
    async def list_instances(
        ctx: Context,
        namespace: OptionalNamespace = None,
        workload: Annotated[str | None, Field(description="Only this workload's.")] = None,
        node: Annotated[str | None, Field(description="Only those on this node.")] = None,
        state: Annotated[InstanceState | None, Field(description="Only this state.")] = None,
        limit: Limit = 100,
    ) -> InstanceList:
        """List instances (replicas) with node, state, readiness, restarts and last exit code."""
        async with gate.call(ctx, Role.VIEWER) as call:
            found = await call.service.list_instances(namespace, workload, node)
            if not found:  # none: say so if what they were asked of does not exist
                if node is not None:
                    await call.service.get_node(node)
                if workload is not None and namespace is not None:  # none: every namespace
                    await call.service.get_workload(workload, namespace)
        chosen = [i for i in found if state is None or i.state == state]
        return InstanceList(
            instances=[InstanceSummary.of(i) for i in chosen[:limit]],
            by_state=count_by(i.state.value for i in found),
            total=len(chosen),
            truncated=len(chosen) > limit,
        )

    @server.tool(annotations=READ)
    async def list_events(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=500, description="Most events to return.")] = 50,
        kind: Annotated[
            str | None,
            Field(
                description="Only about this kind: Workload, Instance, Node, ConfigMap, Secret, "
                "Namespace, or Key (a caller's audit entries, with include_audit)."
            ),
        ] = None,
        name: Annotated[
            str | None, Field(description="Only about the object of this name.")
        ] = None,
        namespace: OptionalNamespace = None,
        warnings_only: Annotated[bool, Field(description="Only Warning events.")] = False,
        include_audit: Annotated[
            bool, Field(description=f"Include {AUDIT_REASON} audit events of MCP calls.")
        ] = False,
        trace_id: Annotated[
            str | None,
            Field(
                pattern="^[0-9a-fA-F]{32}$",
                description="Only the events of the work one request caused, on every node: "
                "the trace_id a change tool returned (see also get_trace).",
            ),
        ] = None,
        actor: Annotated[
            str | None, Field(description="Only what this key (or component) did.")
        ] = None,
    ) -> EventList:
        """List the latest events (oldest first): what happened, to what, by whom and why."""
        async with gate.call(ctx, Role.VIEWER) as call:
            found = await call.service.list_events(
                limit=5000,
                kind=kind,
                name=name,
                namespace=namespace,
                actor=actor,
                trace_id=None if trace_id is None else trace_id.lower(),
            )
        events = [
            e
            for e in found
            if (include_audit or e.reason != AUDIT_REASON)
            and (not warnings_only or e.type.value == "Warning")
        ]
        return EventList(events=events[-limit:])

    @server.tool(annotations=READ)
    async def get_logs(
        instance: InstanceName,
        ctx: Context,
        namespace: Namespace = "default",
        container: Annotated[
            str | None, Field(description="Container name; the first one when omitted.")
        ] = None,
        tail: Annotated[
            int, Field(ge=1, le=5000, description="At most this many (matching) lines, newest.")
        ] = 100,
        since: Annotated[
            str | None,
            Field(description="Only lines since a duration ago ('10m', '2h') or an ISO time."),
        ] = None,
        grep: Annotated[
            str | None,
            Field(
                max_length=200,
                description="Only lines containing this text (case-insensitive); separate "
                "alternatives with '|', e.g. 'error|panic'.",
            ),
        ] = None,
        max_bytes: Annotated[
            int, Field(ge=256, le=262_144, description="Cap on the total size of the lines.")
        ] = 16_384,
        previous: Annotated[
            bool,
            Field(
                description="The previous run's lines instead, kept when the instance started "
                "again: why a crash-looping instance ended last time."
            ),
        ] = False,
    ) -> LogResult:
        """Read an instance's recent log lines, filtered by text and capped in size.

        Secret values from the instance's env are redacted.
        """
        ref = ObjectRef(kind="Instance", namespace=namespace, name=instance)
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            inst = await call.service.get_instance(instance, namespace)
            secrets = secret_values([inst])
            start = parse_since(since, datetime.now(UTC))
            alternatives = [a.lower() for a in (grep or "").split("|") if a]
            kept: deque[LogLine] = deque(maxlen=tail)
            matched = 0
            stream = call.service.logs(
                instance,
                namespace,
                container=container,
                tail=_SCAN_LIMIT if alternatives else tail,
                since=start,
                previous=previous,
            )
            async for line in stream:
                # Scrubbed before matching: a grep that matched a secret's value would
                # tell its caller, by the count, what the redacted line hides.
                text = scrub(line.line, secrets)
                if not alternatives or _matches(text, alternatives):
                    matched += 1
                    kept.append(line.model_copy(update={"line": text[:_MAX_LINE]}))
        lines = _cap(list(kept), max_bytes)
        truncated = matched > len(lines) if alternatives else len(kept) > len(lines)
        note = f"{matched} line(s) matched {grep!r}; " if alternatives else ""
        if truncated:
            note += f"showing the newest {len(lines)}: raise tail or max_bytes, or narrow grep"
        return LogResult(
            instance=instance,
            container=container or inst.template.containers[0].name,
            previous=previous,
            lines=lines,
            truncated=truncated,
            note=note.rstrip("; "),
        )

    @server.tool(annotations=READ)
    async def explain_instance(
        name: InstanceName, ctx: Context, namespace: Namespace = "default"
    ) -> Diagnosis:
        """Explain why an instance is pending, failing or running where it is.

        Combines the scheduler's reason per node, the restart history, and the instance's last
        events and log lines.
        """
        ref = ObjectRef(kind="Instance", namespace=namespace, name=name)
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            explanation = await call.service.explain(name, namespace)
            log_tail: list[str] = []
            logs_note = ""
            try:
                lines = call.service.logs(name, namespace, tail=_EXPLAIN_LOG_LINES)
                log_tail.extend([line.line async for line in lines])
            except (Conflict, NotFound, Unavailable) as exc:
                logs_note = f"no logs: {exc.message}"
            previous: list[str] = []
            if explanation.instance.restart_count:
                # Kept by its node when it started again, per container (the one that
                # failed may be any, an init container too); none kept is no news.
                template = explanation.instance.template
                said: dict[str, list[str]] = {}
                for container in [*template.init_containers, *template.containers]:
                    with contextlib.suppress(NotFound, Unavailable, Conflict):
                        lines = call.service.logs(
                            name,
                            namespace,
                            container=container.name,
                            tail=_EXPLAIN_LOG_LINES,
                            previous=True,
                        )
                        if kept := [line.line async for line in lines]:
                            said[container.name] = kept
                for container_name, kept in said.items():
                    prefix = f"{container_name}: " if len(said) > 1 else ""
                    previous.extend(prefix + line for line in kept)
        secrets = secret_values([explanation])
        clean = redact_model(explanation)
        return Diagnosis(
            instance=InstanceSummary.of(clean.instance),
            summary=as_tool_calls(clean.summary, namespace),
            details=[as_tool_calls(detail, namespace) for detail in clean.details],
            schedule_failure=clean.schedule_failure,
            events=clean.events,
            # Scrubbed whole, then cut: a cut through a secret would leave its start.
            log_tail=[scrub(line, secrets)[:_MAX_LINE] for line in log_tail],
            logs_note=logs_note,
            previous_log_tail=[scrub(line, secrets)[:_MAX_LINE] for line in previous],
            start_trace_id=explanation.start_trace_id,
            cause_trace_id=explanation.cause_trace_id,
        )

    @server.tool(annotations=READ)
    async def instance_stats(
        name: InstanceName, ctx: Context, namespace: Namespace = "default"
    ) -> ContainerStatsList:
        """Show the CPU (millicores), memory (bytes) and processes of a running instance."""
        ref = ObjectRef(kind="Instance", namespace=namespace, name=name)
        async with gate.call(ctx, Role.VIEWER, ref) as call:
            stats = await call.service.stats(name, namespace)
        return ContainerStatsList(containers=stats)
