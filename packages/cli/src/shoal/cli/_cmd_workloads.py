"""Workload, node and event commands.

apply, get, members, describe, scale, delete, events, cordon/uncordon/drain, explain.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._base import app, fail, out, run, with_client
from ._output import Format, render

if TYPE_CHECKING:
    from shoal.client import ShoalClient

# --- workloads -----------------------------------------------------------

Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]


@app.command()
def apply(
    file: Annotated[
        str, typer.Option("--file", "-f", help="Workload file (YAML/JSON), - for stdin.")
    ],
    dry_run: Annotated[bool, typer.Option(help="Only show what would change.")] = False,
) -> None:
    """Create or update workloads from a file, all documents or none."""
    from ._files import load_documents  # YAML: on use only

    async def call(shoal: ShoalClient) -> None:
        documents, source = load_documents(file)
        result = await shoal.apply_documents(documents, dry_run=dry_run, source=source)
        prefix = "(dry run) " if dry_run else ""
        for change in result.plan.changes:
            verb = {"create": "created", "update": "updated", "unchanged": "unchanged"}[
                change.action.value
            ]
            if dry_run:
                verb = {"create": "would create", "update": "would update"}.get(
                    change.action.value, verb
                )
            impact = []
            if change.instances_to_create:
                impact.append(f"+{change.instances_to_create} instance(s)")
            if change.instances_to_delete:
                impact.append(f"-{change.instances_to_delete} instance(s)")
            if change.instances_to_replace:
                impact.append(f"{change.instances_to_replace} replaced")
            suffix = f" ({', '.join(impact)})" if impact else ""
            out.print(
                f"{prefix}workload {change.namespace}/{change.name} {verb}{suffix}", highlight=False
            )
            if dry_run and change.action.value == "update":
                for field in change.changes:
                    out.print(
                        f"    {field.path}: {field.old!r} → {field.new!r}",
                        highlight=False,
                        markup=False,
                    )
                for step in change.rollout:
                    out.print(f"    rollout {step}", highlight=False, markup=False)
        if dry_run:
            out.print(f"plan {result.plan.id}", highlight=False)

    run(lambda: with_client(call))


class Kind(StrEnum):
    """What `get` lists."""

    WORKLOADS = "workloads"
    INSTANCES = "instances"
    NODES = "nodes"


_ALIASES = {
    "workload": "workloads",
    "wl": "workloads",
    "instance": "instances",
    "inst": "instances",
    "node": "nodes",
}


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help="workloads, instances or nodes.")],
    output: Annotated[
        Format, typer.Option("--output", "-o", help="table, json or yaml.")
    ] = Format.TABLE,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace.")
    ] = None,
    workload: Annotated[str | None, typer.Option(help="Instances of this workload.")] = None,
    node: Annotated[str | None, typer.Option(help="Instances on this node.")] = None,
) -> None:
    """List workloads, instances or nodes."""
    chosen = _ALIASES.get(kind, kind)
    if chosen not in {k.value for k in Kind}:
        fail(f"cannot get {kind!r}: choose workloads, instances or nodes", 2)

    async def call(shoal: ShoalClient) -> None:
        items: Any
        if chosen == "workloads":
            items = await shoal.list_workloads(namespace)
        elif chosen == "instances":
            items = await shoal.list_instances(namespace, workload, node)
        else:
            items = await shoal.list_nodes()
        render(out, items, output, chosen)

    run(lambda: with_client(call))


@app.command()
def members(
    output: Annotated[
        Format, typer.Option("--output", "-o", help="table, json or yaml.")
    ] = Format.TABLE,
) -> None:
    """List the server's gossip members, registered as nodes or not."""

    async def call(shoal: ShoalClient) -> None:
        render(out, await shoal.list_members(), output, "members")

    run(lambda: with_client(call))


@app.command()
def describe(
    kind: Annotated[str, typer.Argument(help="workload, instance or node.")],
    name: Annotated[str, typer.Argument(help="Its name.")],
    namespace: Namespace = "default",
) -> None:
    """Show one object in full (YAML), with its latest events."""
    chosen = _ALIASES.get(kind, kind)

    async def call(shoal: ShoalClient) -> None:
        obj: Any
        if chosen == "workloads":
            obj = await shoal.get_workload(name, namespace)
            events = await shoal.list_events(
                kind="Workload", name=name, namespace=namespace, limit=10
            )
        elif chosen == "instances":
            obj = await shoal.get_instance(name, namespace)
            events = await shoal.list_events(
                kind="Instance", name=name, namespace=namespace, limit=10
            )
        elif chosen == "nodes":
            obj = await shoal.get_node(name)
            events = await shoal.list_events(kind="Node", name=name, limit=10)
        else:
            fail(f"cannot describe {kind!r}: choose workload, instance or node", 2)
        render(out, obj, Format.YAML, chosen)
        out.print("events:")
        render(out, events, Format.TABLE, "events")

    run(lambda: with_client(call))


@app.command()
def scale(
    name: Annotated[str, typer.Argument(help="Workload name.")],
    replicas: Annotated[int, typer.Argument(help="New replica count.")],
    namespace: Namespace = "default",
) -> None:
    """Set a workload's replica count."""

    async def call(shoal: ShoalClient) -> None:
        workload = await shoal.scale(name, replicas, namespace)
        out.print(f"workload {workload.key} scaled to {workload.spec.replicas}", highlight=False)

    run(lambda: with_client(call))


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Workload name.")], namespace: Namespace = "default"
) -> None:
    """Delete a workload: its instances are stopped, then it is removed."""

    async def call(shoal: ShoalClient) -> None:
        workload = await shoal.delete_workload(name, namespace)
        out.print(f"workload {workload.key} deleting", highlight=False)

    run(lambda: with_client(call))


@app.command()
def events(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep printing new events.")] = False,
    limit: Annotated[int, typer.Option(help="How many recent events.")] = 50,
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
) -> None:
    """Show recent events; with --watch, follow new ones until Ctrl-C."""

    async def call(shoal: ShoalClient) -> None:
        render(out, await shoal.list_events(limit=limit), output, "events")
        if watch:
            async for event in shoal.watch_events():
                render(out, [event], output, "events")

    run(lambda: with_client(call))


def _node_command(action: str) -> Callable[[str], None]:
    def command(node: Annotated[str, typer.Argument(help="Node name.")]) -> None:
        async def call(shoal: ShoalClient) -> None:
            result = await getattr(shoal, action)(node)
            out.print(
                f"node {result.name} {action}ed"
                if action != "drain"
                else f"node {result.name} draining",
                highlight=False,
            )

        run(lambda: with_client(call))

    command.__doc__ = {
        "cordon": "Stop placing new instances on a node.",
        "uncordon": "Allow placements on a node again (ends a drain).",
        "drain": "Cordon a node and move its instances elsewhere, replacement first.",
    }[action]
    return command


for _action in ("cordon", "uncordon", "drain"):
    app.command(_action)(_node_command(_action))


@app.command()
def explain(
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    namespace: Namespace = "default",
) -> None:
    """Explain why an instance is pending, failing or running where it is."""

    async def call(shoal: ShoalClient) -> None:
        result = await shoal.explain(instance, namespace)
        out.print(f"{result.instance.key}: {result.summary}", highlight=False, markup=False)
        for detail in result.details:
            out.print(f"  - {detail}", highlight=False, markup=False)
        if result.events:
            out.print("recent events:")
            render(out, result.events, Format.TABLE, "events")

    run(lambda: with_client(call))
