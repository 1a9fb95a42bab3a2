"""`shoal audit list` and `shoal audit verify`: the server's hash-chained audit trail (admin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, out, run, with_client
from ._output import Format, render

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import AuditReport

audit_app = typer.Typer(
    help="The audit trail: every mutating call, hash-chained (admin keys).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(help="How many of the last entries.", min=1, max=5000)] = 50,
    output: Annotated[
        Format, typer.Option("--output", "-o", help="table, json or yaml (whole entries).")
    ] = Format.TABLE,
) -> None:
    """Show the last entries: sequence, time, actor, door, verb, object, outcome."""

    async def call(shoal: ShoalClient) -> None:
        entries = await shoal.audit_entries(limit)
        if output != Format.TABLE:
            render(out, entries, output, "audit entries")
            return
        for entry in entries:
            line = (
                f"{entry.sequence:>6}  {entry.time:%Y-%m-%d %H:%M:%S}  {entry.actor}  "
                f"{entry.door.value}  {entry.verb}  {entry.object}  {entry.outcome}"
            )
            out.print(line, markup=False, highlight=False)

    run(lambda: with_client(call))


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain: exits 1 naming every edited or deleted entry.

    Prints the head's hash: keep it somewhere else, and a later verify that
    shows another hash for the same sequence number means the tail was rewritten.
    """

    async def call(shoal: ShoalClient) -> AuditReport:
        return await shoal.verify_audit()

    report = run(lambda: with_client(call))
    for problem in report.problems:
        out.print(f"TAMPERED: {problem}", markup=False, highlight=False)
    state = "intact" if report.intact else "BROKEN"
    out.print(
        f"audit trail {state}: {report.entries} entries, head {report.head_sequence} "
        f"{report.head_hash}",
        markup=False,
        highlight=False,
    )
    if not report.intact:
        raise typer.Exit(1)
