"""The `shoal` command: thin wrappers over the signed REST client.

Every command but `agent` and `keys` talks to a server over the signed REST
API only. Errors print one line — what was wrong and what to do — and exit
non-zero; a traceback reaches the terminal only with SHOAL_DEBUG=1.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from shoal.api import (
    DEFAULT_SERVER,
    Role,
    ShoalClient,
    default_home,
    init_keypair,
    load_keypair,
    run_agent,
)
from shoal.core.node import NodeConfig
from shoal.interfaces import ImageProgress, InvalidInput, NodeRole, ShoalError, format_cpu
from shoal.mcp import create_token, mcp_mount, parse_ttl, serve_stdio

from ._files import load_documents
from ._output import Format, human_memory, render

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="shoal",
    help="Shoal: run containers on one machine or many. Talks to a shoal agent over signed HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Manage your ed25519 signing key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
images_app = typer.Typer(help="Manage the images of the server's node.", no_args_is_help=True)
app.add_typer(images_app, name="images")
token_app = typer.Typer(
    help="Bearer tokens for the agent's MCP endpoint (/mcp).", no_args_is_help=True
)
app.add_typer(token_app, name="token")

# Piped output gets wide lines rather than rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 200)
# An error is one line, however long: never wrapped.
err = Console(stderr=True, soft_wrap=True)


class _Settings:
    server: str = DEFAULT_SERVER
    home: Path | None = None


settings = _Settings()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit."""
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def run(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` on anyio, turning every ShoalError into one clear line."""
    try:
        return anyio.run(call)
    except ShoalError as exc:
        fail(exc.message)
    except BaseExceptionGroup as group:  # raised out of a task group
        first = _first_shoal_error(group)
        if first is None:
            raise
        fail(first.message)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _first_shoal_error(group: BaseExceptionGroup[BaseException]) -> ShoalError | None:
    for exc in group.exceptions:
        if isinstance(exc, ShoalError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_shoal_error(exc)
            if found is not None:
                return found
    return None


def client() -> ShoalClient:
    """Return a signed client for the configured server."""
    return ShoalClient(settings.server, load_keypair(settings.home or default_home()))


async def with_client(use: Callable[[ShoalClient], Awaitable[T]]) -> T:
    """Run ``use`` with a client that is closed afterwards."""
    async with client() as shoal:
        return await use(shoal)


@app.callback()
def options(
    server: Annotated[
        str, typer.Option(envvar="SHOAL_SERVER", help="Server URL.")
    ] = DEFAULT_SERVER,
    home: Annotated[
        Path | None,
        typer.Option(envvar="SHOAL_HOME", help="Where your key lives [default: ~/.config/shoal]."),
    ] = None,
) -> None:
    """Shoal: run containers on one machine or many."""
    settings.server = server
    settings.home = home


# --- keys ----------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    key_id: Annotated[str | None, typer.Option(help="Key id [default: user@host].")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create your ed25519 key pair (mode 0600) under $SHOAL_HOME."""
    home = settings.home or default_home()
    try:
        pair = init_keypair(home, key_id, force=force)
    except ShoalError as exc:
        fail(exc.message)
    out.print(f"created key {pair.key_id} in {home}")
    line = f"operator {pair.public_line}"
    out.print(
        f"authorize it on a server: echo '{line}' >> <data-dir>/authorized_keys", markup=False
    )


@keys_app.command("show")
def keys_show() -> None:
    """Print your key id and public key (an authorized_keys line without its role)."""
    try:
        pair = load_keypair(settings.home or default_home())
    except ShoalError as exc:
        fail(exc.message)
    out.print(pair.public_line, markup=False, highlight=False)


# --- agent ---------------------------------------------------------------


DEFAULT_DATA_DIR = Path.home() / ".local/share/shoal"


class StateChoice(StrEnum):
    """State backends."""

    SQLITE = "sqlite"
    MEMORY = "memory"


class RuntimeChoice(StrEnum):
    """Container runtimes."""

    RUNC = "runc"
    CRUN = "crun"
    YOUKI = "youki"
    MOCK = "mock"


class NetworkChoice(StrEnum):
    """Pod networking of OCI runtimes."""

    BRIDGE = "bridge"
    HOST = "host"


def _labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label {value!r} is not KEY=VALUE")
        labels[key] = val
    return labels


@app.command()
def agent(
    data_dir: Annotated[
        Path, typer.Option(help="Where state, node key and authorized_keys live.")
    ] = DEFAULT_DATA_DIR,
    api_addr: Annotated[str, typer.Option(help="REST API listen address.")] = "127.0.0.1:7070",
    runtime: Annotated[
        RuntimeChoice, typer.Option(help="Container runtime (mock runs nothing).")
    ] = RuntimeChoice.RUNC,
    network: Annotated[
        NetworkChoice, typer.Option(help="Pod networking: CNI bridge or the host's.")
    ] = NetworkChoice.BRIDGE,
    registry: Annotated[
        str | None, typer.Option(help="Default registry host[:port] for unqualified images.")
    ] = None,
    bridge: Annotated[
        str, typer.Option(help="CNI bridge name (one per node on a host).")
    ] = "shoal0",
    bridge_subnet: Annotated[
        str, typer.Option(help="CNI bridge subnet (one per node on a host).")
    ] = "198.18.0.0/24",
    state: Annotated[StateChoice, typer.Option(help="State store.")] = StateChoice.SQLITE,
    name: Annotated[str | None, typer.Option(help="Node name [default: host name].")] = None,
    role: Annotated[NodeRole, typer.Option(help="server, worker or both.")] = NodeRole.BOTH,
    label: Annotated[
        list[str] | None, typer.Option(help="Node label KEY=VALUE (repeatable).")
    ] = None,
    allow_host_paths: Annotated[
        bool,
        typer.Option(
            "--allow-host-paths", help="Let workloads mount paths of this machine (host_path)."
        ),
    ] = False,
) -> None:
    """Run a Shoal node: its control loop, node loop and REST API, until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        fields: dict[str, Any] = {
            "data_dir": data_dir,
            "api_addr": api_addr,
            "runtime": runtime.value,
            "network": network.value,
            "default_registry": registry,
            "bridge": bridge,
            "bridge_subnet": bridge_subnet,
            "state": state.value,
            "role": role,
            "labels": _labels(label or []),
            "allow_host_paths": allow_host_paths,
        }
        if name:
            fields["name"] = name
        config = NodeConfig(**fields)
    except ShoalError as exc:
        fail(exc.message)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            serve = functools.partial(run_agent, mounts=[mcp_mount()])
            await tg.start(serve, config, settings.home or default_home())
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logging.getLogger("shoal.agent").info(
                        "%s: shutting down", signal.Signals(signum).name
                    )
                    tg.cancel_scope.cancel()
                    return

    run(main)


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


def _since(value: str | None) -> datetime | None:
    """Parse --since: a duration like 10s, 5m, 2h, or an ISO 8601 time."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1] in units:
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"--since {value!r} is neither a duration (10s, 5m, 2h, 1d) nor an ISO 8601 time"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def logs(
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
    since: Annotated[str | None, typer.Option(help="Only lines since 10s/5m/2h or a time.")] = None,
    container: Annotated[str | None, typer.Option("--container", "-c", help="Container.")] = None,
    namespace: Namespace = "default",
) -> None:
    """Print an instance's log lines."""

    async def call(shoal: ShoalClient) -> None:
        lines = shoal.logs(
            instance, namespace, container=container, tail=tail, since=_since(since), follow=follow
        )
        async for line in lines:
            stream = sys.stderr if line.stream == "stderr" else sys.stdout
            print(line.line, file=stream, flush=follow)

    run(lambda: with_client(call))


@app.command("exec")
def exec_command(
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    container: Annotated[str | None, typer.Option("--container", "-c", help="Container.")] = None,
    namespace: Namespace = "default",
    time_limit: Annotated[
        float, typer.Option(help="Kill the command after this many seconds.")
    ] = 30,
) -> None:
    """Run a command in a running instance (`shoal exec web-1 -- ls /`); exits with its code."""

    async def call(shoal: ShoalClient) -> int:
        result = await shoal.exec(
            instance, command, namespace, container=container, time_limit=time_limit
        )
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.exit_code

    code = run(lambda: with_client(call))
    raise typer.Exit(code)


@app.command()
def top(
    instance: Annotated[
        str | None, typer.Argument(help="One instance; all running by default.")
    ] = None,
    namespace: Namespace = "default",
) -> None:
    """Show CPU, memory and process counts of running instances."""

    async def call(shoal: ShoalClient) -> None:
        if instance is not None:
            targets = [await shoal.get_instance(instance, namespace)]
        else:
            targets = [i for i in await shoal.list_instances() if i.state.value == "running"]
        table = Table("NAMESPACE", "INSTANCE", "CONTAINER", "CPU", "MEMORY", "PIDS", box=None)
        for inst in targets:
            for stat in await shoal.stats(inst.name, inst.namespace):
                table.add_row(
                    inst.namespace,
                    inst.name,
                    stat.name,
                    format_cpu(stat.cpu_millicores),
                    human_memory(stat.memory_bytes),
                    str(stat.pids),
                )
        out.print(table if targets else "no running instances")

    run(lambda: with_client(call))


# --- MCP -----------------------------------------------------------------


@app.command("mcp")
def mcp_stdio(
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Expose only the read and planning tools.")
    ] = False,
) -> None:
    """Serve Shoal's MCP tools on stdin/stdout for an MCP client, acting with your key."""
    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,  # stdout carries the protocol
    )
    home = settings.home or default_home()
    run(lambda: serve_stdio(settings.server, home, read_only=read_only))


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="What the token may do.")] = Role.VIEWER,
    ttl: Annotated[str, typer.Option(help="Lifetime: 15m, 1h, 7d (1m to 30d).")] = "1h",
) -> None:
    """Print a bearer token (an EdDSA JWT signed with your key) for the agent's /mcp endpoint."""
    try:
        keypair = load_keypair(settings.home or default_home())
        token = create_token(keypair, role, parse_ttl(ttl))
    except ShoalError as exc:
        fail(exc.message)
    print(token)
    err.print(
        f"token for key {keypair.key_id}, role {role.value}, valid for {ttl}: the agent accepts "
        f"it while authorized_keys gives that key role {role.value} or higher",
        highlight=False,
    )


# --- images --------------------------------------------------------------


@images_app.command("list")
def images_list(
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
) -> None:
    """List the images on the node."""

    async def call(shoal: ShoalClient) -> None:
        images = await shoal.list_images()
        if output != Format.TABLE:
            render(out, images, output, "images")
            return
        table = Table("REFERENCE", "DIGEST", "SIZE", box=None)
        for image in images:
            table.add_row(image.reference, image.digest[:19], human_memory(image.size))
        out.print(table if images else "no images")

    run(lambda: with_client(call))


@images_app.command("pull")
def images_pull(reference: Annotated[str, typer.Argument(help="Image reference.")]) -> None:
    """Pull an image onto the node, with a progress bar."""

    async def call(shoal: ShoalClient) -> None:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def step(progress: ImageProgress) -> None:
                if progress.digest not in tasks:
                    label = f"{progress.kind} {progress.digest.removeprefix('sha256:')[:12]}"
                    tasks[progress.digest] = bar.add_task(label, total=progress.total or None)
                bar.update(
                    tasks[progress.digest],
                    completed=progress.completed,
                    description=f"{progress.kind} {progress.digest[7:19]} {progress.status}",
                )

            info = await shoal.pull_image(reference, progress=step)
        out.print(f"pulled {info.reference} ({info.digest})", highlight=False)

    run(lambda: with_client(call))


@images_app.command("import")
def images_import(
    path: Annotated[str, typer.Argument(help="OCI layout dir or docker-save tarball on the node.")],
    reference: Annotated[str | None, typer.Option(help="Name to give the image.")] = None,
) -> None:
    """Import an image from a path on the node (an OCI layout or a `docker save` tarball)."""
    # The server reads the path: make a relative one mean what the user meant here.
    local = Path(path)
    where = str(local.resolve()) if local.exists() else path

    async def call(shoal: ShoalClient) -> None:
        for info in await shoal.import_image(where, reference):
            out.print(f"imported {info.reference} ({info.digest})", highlight=False)

    run(lambda: with_client(call))


@images_app.command("rm")
def images_rm(reference: Annotated[str, typer.Argument(help="Image reference.")]) -> None:
    """Forget an image reference (free its space with `shoal images gc`)."""

    async def call(shoal: ShoalClient) -> None:
        for info in await shoal.remove_image(reference):
            out.print(f"removed {info.reference}", highlight=False)

    run(lambda: with_client(call))


@images_app.command("gc")
def images_gc() -> None:
    """Free the space of blobs and layers no image needs."""

    async def call(shoal: ShoalClient) -> None:
        freed = await shoal.gc_images()
        out.print(f"freed {human_memory(freed)}", highlight=False)

    run(lambda: with_client(call))


def main() -> None:
    """Entry point of the `shoal` command."""
    if os.environ.get("SHOAL_DEBUG") == "1":
        app()
        return
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # a bug: say so in one line, never a traceback
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(rerun with SHOAL_DEBUG=1 for details)"
        )
        raise SystemExit(70) from None
