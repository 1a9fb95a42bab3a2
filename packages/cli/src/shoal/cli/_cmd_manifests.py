"""`shoal manifests`: the files of the server node's watched manifests directories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, out, run, with_client
from ._output import Format, age, render

if TYPE_CHECKING:
    from rich.table import Table

    from shoal.client import ShoalClient
    from shoal.interfaces import ManifestSource

__all__ = ["manifests", "manifests_table", "problems"]


def _state(source: ManifestSource) -> str:
    if source.skipped:
        return "skipped"
    if source.error:
        return "error"
    if source.conflicts:
        return "conflict"
    if source.warnings:
        return "warnings"
    return "applied" if source.applied_at is not None else "pending"


def manifests_table(items: Sequence[ManifestSource]) -> Table:
    """PATH, HASH (short; the applied one too while an error stands), APPLIED, OBJECTS, STATE."""
    from rich.table import Table  # rich loads when a table is printed

    table = Table("PATH", "HASH", "APPLIED", "OBJECTS", "STATE", box=None)
    for source in items:
        digest = source.hash[:12] or "-"
        if source.applied_hash and source.applied_hash != source.hash:
            digest += f" (applied {source.applied_hash[:12]})"
        applied = "-" if source.applied_at is None else f"{age(source.applied_at)} ago"
        table.add_row(
            source.path,
            digest,
            applied,
            "\n".join(source.objects) or "-",
            _state(source),
        )
    return table


def problems(items: Sequence[ManifestSource]) -> list[str]:
    """One line per error, conflict and warning of every file, then skipped files."""
    lines: list[str] = []
    for source in items:
        if source.error:
            kept = " (its last good objects run on)" if source.objects else ""
            lines.append(f"{source.path}: error: {source.error}{kept}")
        lines.extend(f"{source.path}: conflict: {c}" for c in source.conflicts)
        lines.extend(f"{source.path}: warning: {w}" for w in source.warnings)
        if source.skipped:
            lines.append(f"{source.path}: skipped: remove {source.path}.skip to resume it")
    return lines


@app.command()
def manifests(
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
) -> None:
    """Show the files of the server node's watched manifests directories (`agent --manifests`).

    Per file: its path, content hash, when it was applied, the objects it owns,
    and its error, conflicts and warnings. A file whose last content failed
    keeps its last good objects running. Exits 1 while a file is in error or
    in conflict (a script's health check), 0 otherwise.
    """

    async def call(shoal: ShoalClient) -> bool:
        items = await shoal.list_manifests()
        healthy = not any(source.error or source.conflicts for source in items)
        if output != Format.TABLE:
            render(out, items, output, "manifests")
            return healthy
        if not items:
            out.print(
                "no manifests found (none watched, or the watched directories hold no "
                "manifest: start the agent with --manifests DIR to watch one)"
            )
            return healthy
        out.print(manifests_table(items))
        for line in problems(items):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return healthy

    if not run(lambda: with_client(call)):
        raise typer.Exit(1)
