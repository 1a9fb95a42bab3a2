"""`shoal images`: list, pull (with a progress bar), import, rm and gc on the server's node."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._base import err, images_app, out, real_console, run, with_client
from ._output import Format, human_memory, render

if TYPE_CHECKING:
    from rich.progress import TaskID

    from shoal.client import ShoalClient
    from shoal.interfaces import ImageProgress

# --- images --------------------------------------------------------------


@images_app.command("ls", hidden=True)
@images_app.command("list")
def images_list(
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
    node: Annotated[
        str | None, typer.Option(help="The node whose images to list [default: the server's].")
    ] = None,
) -> None:
    """List the images on the server's node, or on any node of the cluster (--node)."""

    async def call(shoal: ShoalClient) -> None:
        images = await shoal.list_images(node)
        if output != Format.TABLE:
            render(out, images, output, "images")
            return
        from rich.table import Table  # rich loads when a table is printed

        table = Table("REFERENCE", "DIGEST", "SIZE", box=None)
        for image in images:
            table.add_row(image.reference, image.digest[:19], human_memory(image.size))
        out.print(table if images else "no images")

    run(lambda: with_client(call))


@images_app.command("pull")
def images_pull(reference: Annotated[str, typer.Argument(help="Image reference.")]) -> None:
    """Pull an image onto the node, with a progress bar."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    async def call(shoal: ShoalClient) -> None:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=real_console(err),
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
