"""`shoal node reset`: remove from this host everything a stopped node left running."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._base import app, out, run

node_app = typer.Typer(
    help="This host's node: clean up after it.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(node_app, name="node")


@node_app.command("reset")
def node_reset(
    data_dir: Annotated[
        Path, typer.Option(help="The data dir of the node to reset (as given to `shoal agent`).")
    ],
    runtime: Annotated[
        str, typer.Option(help="The OCI runtime the node ran its pods with.")
    ] = "runc",
    grace: Annotated[
        float,
        typer.Option(help="Seconds each pod has to exit after SIGTERM, before SIGKILL.", min=0),
    ] = 10.0,
) -> None:
    """Stop and remove the pods a node left on this host, and free its bridge.

    Containers keep running after their agent stops, by design (the next agent
    adopts them). When a node is stopped for good, reset removes its containers,
    shims, mounts, network namespaces, port rules and, when nothing else uses
    it, its bridge. Refused while an agent runs on the data dir. The desired
    state stays: an agent started on the data dir again runs its workloads again.
    """
    from shoal.agent import ResetReport, reset_data_dir  # the runtime: on use only

    report: ResetReport = run(lambda: reset_data_dir(data_dir, binary=runtime, grace=grace))
    pods = ", ".join(report.pods) if report.pods else "none"
    out.print(f"reset {report.data_dir}: removed pods: {pods}", markup=False, highlight=False)
    for leftover in report.leftovers:
        out.print(f"removed {leftover}", markup=False, highlight=False)
    if report.bridge is not None:
        kept = "deleted" if report.bridge_deleted else "kept (interfaces still attached)"
        out.print(f"released bridge {report.bridge}: {kept}", markup=False, highlight=False)
