"""Workload, node and event commands.

get, members, describe, scale, delete, events, cordon/uncordon/drain, explain
(apply and diff: ``_cmd_apply``; the Kubernetes kinds of get and delete: ``_cmd_config``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._base import app, fail, out, run, with_client
from ._follow import follow_events
from ._output import Format, render

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import Event

# --- workloads -----------------------------------------------------------

Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]


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


_GET_KINDS = (
    "workloads, instances, nodes, configmaps, secrets, namespaces, deployments, pods, "
    "daemonsets or jobs"
)


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help=f"{_GET_KINDS}.")],
    name: Annotated[
        str | None, typer.Argument(help="Only this one (the Kubernetes kinds).")
    ] = None,
    output: Annotated[
        Format, typer.Option("--output", "-o", help="table, json or yaml.")
    ] = Format.TABLE,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Only this namespace [default: every one for workloads and instances, "
            "'default' for the Kubernetes kinds].",
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")
    ] = False,
    workload: Annotated[str | None, typer.Option(help="Instances of this workload.")] = None,
    node: Annotated[str | None, typer.Option(help="Instances on this node.")] = None,
    show_values: Annotated[
        bool,
        typer.Option(help="Secrets: show the values too (admin keys only; recorded)."),
    ] = False,
) -> None:
    """List workloads, instances, nodes, or Kubernetes kinds.

    configmaps, secrets and namespaces are Shoal's stored configuration objects;
    deployments, pods, daemonsets and jobs are the workloads applied from that Kubernetes
    kind. -o yaml shows each object as applied, with its status. Secrets show keys and sizes
    only, unless --show-values.
    """
    from ._cmd_config import KUBE_KINDS, get_kube_objects

    if kind in KUBE_KINDS:
        get_kube_objects(kind, name, namespace, all_namespaces, output, show_values)
        return
    chosen = _ALIASES.get(kind, kind)
    if chosen not in {k.value for k in Kind}:
        fail(f"cannot get {kind!r}: choose {_GET_KINDS}", 2)
    if name is not None or show_values:
        fail(f"get {chosen} lists them all: see one with `shoal describe {chosen} NAME`", 2)
    if all_namespaces:
        namespace = None

    async def call(shoal: ShoalClient) -> None:
        items: Any
        # Workloads and instances as the server sent them: no model is built (see _output).
        if chosen == "workloads":
            items = await shoal.list_workloads_json(namespace)
        elif chosen == "instances":
            items = await shoal.list_instances_json(namespace, workload, node)
            if not items:  # none: say so if what they were asked of does not exist
                if node is not None:
                    await shoal.get_node(node)
                if workload is not None:
                    await shoal.get_workload(workload, namespace or "default")
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
    kind: Annotated[
        str,
        typer.Argument(
            help="workload, instance, node, configmap, secret, namespace, deployment, pod, "
            "daemonset or job."
        ),
    ],
    name: Annotated[str, typer.Argument(help="Its name.")],
    namespace: Namespace = "default",
) -> None:
    """Show one object in full (YAML), with its latest events (a Secret: keys and sizes)."""
    from ._cmd_config import KUBE_KINDS, describe_kube_object

    if kind in KUBE_KINDS:
        describe_kube_object(kind, name, namespace)
        return
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


_WORKLOAD_KINDS: dict[str, str | None] = {
    **dict.fromkeys(("workload", "workloads", "wl")),
    **dict.fromkeys(("deployment", "deployments", "deploy"), "Deployment"),
    **dict.fromkeys(("daemonset", "daemonsets", "ds"), "DaemonSet"),
    **dict.fromkeys(("job", "jobs"), "Job"),
    **dict.fromkeys(("pod", "pods", "po"), "Pod"),
}
"""The kinds ``delete`` takes for a workload: the Kubernetes kind it must have been applied
as (``spec.origin.kind``), or None for any workload."""


@app.command()
def delete(
    kind_or_name: Annotated[
        str,
        typer.Argument(
            metavar="[KIND] NAME",
            help="A workload's name, or a kind (configmap, secret, namespace; workload, "
            "deployment, pod, daemonset, job; node) and then a name.",
        ),
    ],
    name: Annotated[str | None, typer.Argument(hidden=True)] = None,
    namespace: Namespace = "default",
) -> None:
    """Delete a workload, a ConfigMap, a Secret, a Namespace or a node that failed or left.

    A workload's instances stop, then it is removed. A Namespace is deleted only once
    empty. Pods that use a deleted ConfigMap or Secret keep what they have; new ones wait
    for it. A node is forgotten with the instances lost there, and its name is free again.
    """
    from ._cmd_config import CONFIG_KINDS, KUBE_KINDS, delete_kube_object

    if name is not None:
        kind = kind_or_name
        if KUBE_KINDS.get(kind) in CONFIG_KINDS:
            delete_kube_object(kind, name, namespace)
            return
        if kind in ("node", "nodes"):
            _delete_node(name)
            return
        if kind not in _WORKLOAD_KINDS:
            fail(
                f"cannot delete a {kind!r}: give a workload's name, or a kind (configmap, "
                "secret, namespace, workload, deployment, pod, daemonset, job, node) and a name",
                2,
            )
    else:
        name = kind_or_name
    workload_name = name
    wanted = None if name is kind_or_name else _WORKLOAD_KINDS[kind_or_name]

    async def call(shoal: ShoalClient) -> None:
        if wanted is not None:  # a typo in the kind must not delete another kind's object
            found = await shoal.get_workload(workload_name, namespace)
            actual = found.spec.origin.kind if found.spec.origin is not None else "Workload"
            if actual != wanted:
                fail(
                    f"{namespace}/{workload_name} is a {actual}, not a {wanted}: nothing was "
                    f"deleted; `shoal delete {actual.lower()} {workload_name}` deletes it"
                )
        workload = await shoal.delete_workload(workload_name, namespace)
        out.print(f"workload {workload.key} deleting", highlight=False)

    run(lambda: with_client(call))


@app.command()
def events(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep printing new events.")] = False,
    limit: Annotated[int, typer.Option(help="How many recent events.", min=1, max=5000)] = 50,
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
    trace: Annotated[
        str | None,
        typer.Option(
            "--trace",
            help="Only the events of the work one request caused, on every node (a trace id "
            "from explain, an event or an apply).",
        ),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only what this key (or component) did.")
    ] = None,
) -> None:
    """Show recent events; with --watch, follow new ones until Ctrl-C (through server restarts)."""

    async def call(shoal: ShoalClient) -> None:
        listed = await shoal.list_events(limit=limit, trace_id=trace, actor=actor)
        render(out, listed, output, "events")
        if watch:
            wanted = trace.strip().lower() if trace is not None else None

            def show(event: Event) -> None:
                if (wanted is None or event.trace_id == wanted) and (
                    actor is None or event.actor.id == actor
                ):
                    render(out, [event], output, "events")

            async def missed() -> list[Event]:
                return await shoal.list_events(limit=limit, trace_id=trace, actor=actor)

            await follow_events(
                lambda opened: shoal.watch_events(opened=opened),
                missed,
                show,
                [e.id for e in listed],
            )

    run(lambda: with_client(call))


def _delete_node(name: str) -> None:
    async def call(shoal: ShoalClient) -> None:
        node = await shoal.delete_node(name)
        out.print(
            f"node {node.name} ({node.state.value}) deleted: its lost instances go, "
            "and its name is free",
            highlight=False,
        )

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
