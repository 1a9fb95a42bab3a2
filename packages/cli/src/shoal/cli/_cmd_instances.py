"""Instance commands that reach the node's runtime: logs, exec, top."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, out, run, with_client
from ._output import human_memory

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import Instance, UsageSeries, UsageStat

Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]
TOP_FETCHES = 8
"""Histories `shoal top --range` fetches at once."""


def _since(value: str | None) -> datetime | None:
    """Parse --since: a duration like 10s, 5m, 2h, or an ISO 8601 time."""
    if value is None:
        return None
    from shoal.interfaces import InvalidInput

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
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.", min=0)] = None,
    since: Annotated[str | None, typer.Option(help="Only lines since 10s/5m/2h or a time.")] = None,
    container: Annotated[str | None, typer.Option("--container", "-c", help="Container.")] = None,
    previous: Annotated[
        bool,
        typer.Option(
            "--previous", "-p", help="The previous run's lines (kept when it started again)."
        ),
    ] = False,
    namespace: Namespace = "default",
) -> None:
    """Print an instance's log lines."""

    async def call(shoal: ShoalClient) -> None:
        lines = shoal.logs(
            instance,
            namespace,
            container=container,
            tail=tail,
            since=_since(since),
            follow=follow,
            previous=previous,
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


SPARK_WIDTH = 30
"""Most points a `shoal top --range` sparkline draws."""

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int], ceiling: int) -> str:
    """Draw ``values`` as unicode bars scaled to ``ceiling`` (a limit, else their maximum)."""
    top = max(ceiling, *values, 1) if values else 1
    return "".join(_BARS[min(len(_BARS) - 1, v * len(_BARS) // (top + 1))] for v in values)


def _usage_cells(
    stat: UsageStat, values: Sequence[int], limit: int, fmt: Callable[[int], str]
) -> tuple[str, str]:
    """Return the sparkline cell and the min/avg/max (of the limit) cell of one measure."""
    of = f" / {fmt(limit)}" if limit else " (no limit)"
    return (
        sparkline(values, limit),
        f"{fmt(stat.min)}/{fmt(stat.avg)}/{fmt(stat.max)}{of}",
    )


@app.command()
def top(
    instance: Annotated[
        str | None,
        typer.Argument(help="One instance; by default all running (with --range: all placed)."),
    ] = None,
    namespace: Namespace = "default",
    range_: Annotated[
        str | None,
        typer.Option(
            "--range",
            help="Show the usage history over 15m, 1h, 6h or 24h (sparklines with "
            "min/avg/max against limits) instead of the use now.",
        ),
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="With --range: the history of this node.")
    ] = None,
) -> None:
    """Show CPU, memory and process counts of running instances, now or over a range."""
    from shoal.interfaces import USAGE_DEFAULT_RANGE, format_cpu

    if node is not None and range_ is None:
        range_ = USAGE_DEFAULT_RANGE

    async def call(shoal: ShoalClient) -> None:
        if node is not None:
            targets = []
        elif instance is not None:
            targets = [await shoal.get_instance(instance, namespace)]
        elif range_ is not None:  # a history: every placed instance, a crash loop too
            targets = [i for i in await shoal.list_instances() if i.node is not None]
        else:
            targets = [i for i in await shoal.list_instances() if i.state.value == "running"]
        from rich.table import Table  # rich loads when a table is printed

        if range_ is not None:
            await _top_history(shoal, targets, node, range_)
            return
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


async def _histories(
    shoal: ShoalClient, targets: Sequence[Instance], span: str
) -> list[UsageSeries]:
    """Fetch the instances' histories, a few at a time (each may cross to another node)."""
    import anyio

    found: list[UsageSeries | None] = [None] * len(targets)
    limiter = anyio.CapacityLimiter(TOP_FETCHES)

    async def fetch(index: int, inst: Instance) -> None:
        async with limiter:
            found[index] = await shoal.usage("instance", inst.name, inst.namespace, range=span)

    async with anyio.create_task_group() as tg:
        for index, inst in enumerate(targets):
            tg.start_soon(fetch, index, inst)
    return [series for series in found if series is not None]


async def _top_history(
    shoal: ShoalClient, targets: Sequence[Instance], node: str | None, span: str
) -> None:
    """Print one row per instance (or the node): CPU and memory sparklines against limits."""
    from rich.table import Table

    from shoal.interfaces import format_cpu, summarize_usage

    if node is not None:
        series = [await shoal.usage("node", node, range=span)]
    else:
        series = await _histories(shoal, targets, span)
    if not series:
        out.print("no placed instances")
        return
    table = Table(
        "NAMESPACE" if node is None else "NODE",
        "INSTANCE" if node is None else "",
        f"CPU ({span})",
        "MIN/AVG/MAX",
        f"MEMORY ({span})",
        "MIN/AVG/MAX",
        "RESTARTS",
        box=None,
    )
    for one in series:
        summary = summarize_usage(one, SPARK_WIDTH)
        if not summary.samples:
            cpu = memory = ("(no samples yet)", "")
        else:
            cpu = _usage_cells(
                summary.cpu_millicores,
                [p.cpu_millicores for p in summary.points],
                summary.cpu_limit_millicores,
                format_cpu,
            )
            memory = _usage_cells(
                summary.memory_bytes,
                [p.memory_bytes for p in summary.points],
                summary.memory_limit_bytes,
                human_memory,
            )
        first = one.node if one.kind == "node" else one.namespace
        table.add_row(
            first, "" if one.kind == "node" else one.name, *cpu, *memory, str(summary.restarts)
        )
    out.print(table)
