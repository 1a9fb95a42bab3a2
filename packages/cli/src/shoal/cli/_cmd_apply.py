"""`shoal apply` and `shoal diff`: manifests of either dialect, translated here by shoal.kube.

``-f`` takes a file, a directory (its ``*.yaml``, ``*.yml`` and ``*.json``
files, in name order) or ``-``, and may be repeated; every document of every
file is applied in one all-or-nothing call. Kubernetes documents are
translated before anything is sent, and what Shoal does not honour is printed
to stderr, one warning per object and field (refused with ``--strict``).

``diff`` is a dry-run apply shown as the changed fields of each object; like
``kubectl diff`` it exits 0 without differences, 1 with some, 2 on an error.
A Secret's values are never printed, only which keys change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._base import app, err, fail, out, run, with_client

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import ApplyResult, FieldChange, ObjectSpec, PlannedChange

__all__ = ["apply", "diff"]

Files = Annotated[
    list[str],
    typer.Option(
        "--file",
        "-f",
        help="Manifest file (YAML/JSON, Shoal's or Kubernetes' documents), a directory of "
        "them, or - for stdin. Repeatable.",
    ),
]
Strict = Annotated[
    bool,
    typer.Option(help="Refuse documents with kinds or fields Shoal would ignore (else warn)."),
]

_SECRET_VALUES = ("data", "string_data", "stringData")
"""A Secret's fields whose values are never printed."""


def _translate(paths: list[str], strict: bool) -> tuple[list[ObjectSpec], list[str]]:
    """Read and translate every document of ``paths``; return the objects and the warnings."""
    from shoal.kube import parse_documents  # on use only: `shoal --help` stays light

    from ._files import load_sources

    objects: list[ObjectSpec] = []
    warnings: list[str] = []
    for documents, source in load_sources(paths):
        translation = parse_documents(documents, source, strict=strict)
        objects += translation.objects
        warnings += translation.warnings
    return objects, warnings


async def _apply(
    shoal: ShoalClient, paths: list[str], strict: bool, dry_run: bool
) -> tuple[ApplyResult, dict[tuple[str, str, str], str]]:
    """Apply (or plan) the objects of ``paths``; print the warnings; return the result and names.

    The names map ``(kind, namespace, name)`` of each change to what the user wrote:
    ``deployment`` for a workload translated from a Deployment.
    """
    from shoal.kube import merge_warnings

    objects, warnings = _translate(paths, strict)
    result = await shoal.apply(objects, dry_run=dry_run)
    for warning in merge_warnings(warnings, result.warnings):
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    names: dict[tuple[str, str, str], str] = {}
    for spec in objects:
        namespace = getattr(spec, "namespace", "") if spec.kind != "Namespace" else ""
        written = spec.origin.kind if spec.origin is not None else spec.kind
        names[(spec.kind, namespace, spec.name)] = written.lower()
    return result, names


def _title(change: PlannedChange, names: dict[tuple[str, str, str], str]) -> str:
    kind = names.get((change.kind, change.namespace, change.name), change.kind.lower())
    where = f"{change.namespace}/{change.name}" if change.namespace else change.name
    return f"{kind} {where}"


def _hidden(change: PlannedChange, field: FieldChange) -> bool:
    """Return whether ``field`` holds a Secret's values (never printed)."""
    root = field.path.split(".", 1)[0].split("[", 1)[0]
    return change.kind == "Secret" and root in _SECRET_VALUES


def _field_lines(change: PlannedChange, field: FieldChange) -> list[str]:
    """Return the lines that show one changed field, indented under its object."""
    if _hidden(change, field):
        what = "added" if field.old is None else "removed" if field.new is None else "changed"
        return [f"    {field.path}: (value {what}; Secret values are not shown)"]
    old, new = field.old, field.new
    if isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new):
        import difflib

        lines = difflib.unified_diff(
            old.splitlines(), new.splitlines(), "old", "new", lineterm="", n=2
        )
        return [f"    {field.path}:", *(f"      {line}" for line in list(lines)[2:])]
    if old is None:
        return [f"    {field.path}: {new!r}"]
    return [f"    {field.path}: {old!r} → {new!r}"]


def _impact(change: PlannedChange) -> str:
    impact = []
    if change.instances_to_create:
        impact.append(f"+{change.instances_to_create} instance(s)")
    if change.instances_to_delete:
        impact.append(f"-{change.instances_to_delete} instance(s)")
    if change.instances_to_replace:
        impact.append(f"{change.instances_to_replace} replaced")
    return f" ({', '.join(impact)})" if impact else ""


@app.command()
def apply(
    file: Files,
    dry_run: Annotated[bool, typer.Option(help="Only show what would change.")] = False,
    strict: Strict = False,
) -> None:
    """Create or update objects from manifests, all or none.

    Takes Shoal's documents and Kubernetes' (Deployment, DaemonSet, Job, Pod, ConfigMap,
    Secret, Namespace, List); what Shoal ignores is printed as warnings (refused with --strict).
    """

    async def call(shoal: ShoalClient) -> None:
        result, names = await _apply(shoal, file, strict, dry_run)
        prefix = "(dry run) " if dry_run else ""
        if not result.plan.changes:  # a failure: a script must not take it for a deployment
            fail(
                "nothing to apply: no document holds an object Shoal runs (the warnings say "
                "what was ignored); Shoal runs Workload, Deployment, DaemonSet, Job, Pod, "
                "ConfigMap, Secret and Namespace"
            )
        for change in result.plan.changes:
            action = change.action.value
            verb = {"create": "created", "update": "updated"}.get(action, action)
            if dry_run:
                verb = {"create": "would create", "update": "would update"}.get(action, verb)
            out.print(
                f"{prefix}{_title(change, names)} {verb}{_impact(change)}",
                highlight=False,
                markup=False,
            )
            if dry_run and action == "update":
                for field in change.shown_changes():
                    for line in _field_lines(change, field):
                        out.print(line, highlight=False, markup=False)
                for step in change.rollout:
                    out.print(f"    rollout {step}", highlight=False, markup=False)
        if dry_run:
            out.print(f"plan {result.plan.id}", highlight=False)
        elif result.trace_id is not None:  # on stderr: stdout stays one line per object
            trace = result.trace_id
            err.print(
                f"trace {trace}: `shoal trace {trace}` shows the work it caused",
                highlight=False,
                markup=False,
            )

    run(lambda: with_client(call))


@app.command()
def diff(file: Files, strict: Strict = False) -> None:
    """Show what apply would change; exit 1 if anything would.

    The changed fields of each object, as a dry-run apply sees them. Exit codes (as kubectl
    diff): 0 no differences, 1 differences, 2 an error. Secret values are never shown.
    """

    async def call(shoal: ShoalClient) -> bool:
        result, names = await _apply(shoal, file, strict, dry_run=True)
        differs = False
        for change in result.plan.changes:
            if change.action.value == "unchanged":
                continue
            differs = True
            mark = "+" if change.action.value == "create" else "~"
            out.print(
                f"{mark} {_title(change, names)} ({change.action.value}){_impact(change)}",
                highlight=False,
                markup=False,
            )
            if change.action.value == "create":
                continue  # every field is new: the manifest itself says them
            for field in change.shown_changes():
                for line in _field_lines(change, field):
                    out.print(line, highlight=False, markup=False)
        return differs

    if run(lambda: with_client(call), error_code=2):
        raise typer.Exit(1)
