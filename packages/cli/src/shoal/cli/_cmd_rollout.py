"""`shoal rollout`: status (live), history, undo, pause and resume of a workload's rollouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, fail, out, real_console, run, with_client
from ._cmd_workloads import Namespace

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import Workload

rollout_app = typer.Typer(
    help="Follow, list, undo, promote, pause and resume rollouts (template changes).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(rollout_app, name="rollout")

Name = Annotated[str, typer.Argument(help="Workload name.")]

POLL = 0.5
"""Seconds between two looks at the workload while ``status`` follows it."""


def progress_line(workload: Workload) -> str:
    """Return one line on where the workload's rollout stands."""
    status = workload.status
    want = workload.wanted_replicas
    condition = next((c for c in status.conditions if c.type == "Progressing"), None)
    state = condition.reason if condition else "Waiting"
    return (
        f"{workload.key} revision {workload.revision}: {status.updated_replicas}/{want} "
        f"updated, {status.available_replicas}/{want} available, {status.replicas} total "
        f"({state})"
    )


def outcome(workload: Workload) -> str | None:
    """Return where the rollout rests, or None while it is under way.

    'complete', 'failed', 'paused', or 'awaiting' (its canaries wait to be promoted).
    """
    status = workload.status
    if status.observed_generation < workload.generation or status.revision != workload.revision:
        return None  # the control loop has not looked at the latest change yet
    condition = next((c for c in status.conditions if c.type == "Progressing"), None)
    if condition is None:
        return None
    return {
        "RolloutComplete": "complete",
        "ProgressDeadlineExceeded": "failed",
        "RolloutPaused": "paused",
        "AwaitingPromotion": "awaiting",
    }.get(condition.reason)


@rollout_app.command("status")
def status(
    name: Name,
    namespace: Namespace = "default",
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", "-w", help="Follow until the rollout ends.")
    ] = True,
) -> None:
    """Show a rollout's progress; by default follow it until it completes (exit 0) or fails."""
    import anyio

    async def call(shoal: ShoalClient) -> str | None:
        workload = await shoal.get_workload(name, namespace)
        if workload.spec.mode == "job":  # a StrEnum: no import of shoal.interfaces at start-up
            fail(
                f"{namespace}/{name} is a job: its template never changes, so it has no "
                f"rollouts; `shoal describe workload {name}` shows its runs"
            )
        if not watch:
            out.print(progress_line(workload), highlight=False)
            return outcome(workload)
        console = real_console(out)
        if not console.is_terminal:  # piped or logged: a line per change, not a bar at the end
            line = progress_line(workload)
            out.print(line, highlight=False)
            while (ended := outcome(workload)) is None:
                await anyio.sleep(POLL)
                workload = await shoal.get_workload(name, namespace)
                if progress_line(workload) != line:
                    line = progress_line(workload)
                    out.print(line, highlight=False)
            return ended
        from rich.progress import BarColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), console=console) as bar:
            task = bar.add_task(progress_line(workload), total=max(workload.wanted_replicas, 1))
            while (ended := outcome(workload)) is None:
                await anyio.sleep(POLL)
                workload = await shoal.get_workload(name, namespace)
                bar.update(
                    task,
                    description=progress_line(workload),
                    completed=min(workload.status.updated_replicas, workload.wanted_replicas),
                    total=max(workload.wanted_replicas, 1),
                )
        out.print(progress_line(workload), highlight=False)
        return ended

    ended = run(lambda: with_client(call))
    if ended == "failed":
        fail(
            f"the rollout of {namespace}/{name} failed: it made no progress within its "
            f"deadline; `shoal rollout undo {name}` goes back, `shoal explain` says why"
        )
    if ended == "paused" and watch:
        fail(f"the rollout of {namespace}/{name} is paused: `shoal rollout resume {name}`")
    if ended == "awaiting":
        out.print(
            f"its canaries run: `shoal rollout promote {name}` replaces the rest, "
            f"`shoal rollout undo {name}` goes back",
            highlight=False,
        )


@rollout_app.command("history")
def history(name: Name, namespace: Namespace = "default") -> None:
    """List the kept revisions of a workload, the current one marked."""

    async def call(shoal: ShoalClient) -> None:
        workload = await shoal.get_workload(name, namespace)
        from rich.table import Table

        table = Table("REVISION", "CURRENT", "HASH", "IMAGES", "CREATED", "CAUSE", box=None)
        for revision in workload.revisions:
            images = ", ".join(c.image for c in revision.template.containers)
            table.add_row(
                str(revision.number),
                "*" if revision.number == workload.revision else "",
                revision.template_hash,
                images,
                revision.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                revision.cause,
            )
        out.print(table)

    run(lambda: with_client(call))


@rollout_app.command("undo")
def undo(
    name: Name,
    namespace: Namespace = "default",
    to_revision: Annotated[
        int | None,
        typer.Option("--to-revision", min=1, help="A kept revision; the previous one if omitted."),
    ] = None,
) -> None:
    """Roll back to a kept revision's template: a new rollout, and a new revision."""

    async def call(shoal: ShoalClient) -> None:
        before = await shoal.get_workload(name, namespace)
        workload = await shoal.rollout_undo(name, to_revision, namespace)
        if workload.revision == before.revision:
            out.print(f"{workload.key} already runs that template; nothing to do", highlight=False)
            return
        out.print(
            f"{workload.key} rolling back: revision {workload.revision} "
            f"({workload.revisions[-1].cause}); follow with `shoal rollout status {name}`",
            highlight=False,
        )

    run(lambda: with_client(call))


@rollout_app.command("promote")
def promote(name: Name, namespace: Namespace = "default") -> None:
    """Promote the canaries of a rollout: it goes on to replace every old instance."""

    async def call(shoal: ShoalClient) -> None:
        workload = await shoal.promote_rollout(name, namespace)
        out.print(
            f"{workload.key} revision {workload.revision} promoted; follow with "
            f"`shoal rollout status {name}`",
            highlight=False,
        )

    run(lambda: with_client(call))


def _pause(paused: bool) -> None:
    verb = "paused" if paused else "resumed"

    def command(name: Name, namespace: Namespace = "default") -> None:
        async def call(shoal: ShoalClient) -> None:
            workload = await shoal.pause_rollout(name, paused, namespace)
            out.print(f"{workload.key} rollouts {verb}", highlight=False)

        run(lambda: with_client(call))

    command.__doc__ = (
        "Pause a workload's rollouts: a template change waits; scaling still applies."
        if paused
        else "Resume a workload's rollouts."
    )
    rollout_app.command("pause" if paused else "resume")(command)


_pause(True)
_pause(False)
