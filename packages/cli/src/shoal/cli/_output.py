"""Render Shoal objects as tables (plain text), JSON or YAML (rich).

Workloads and instances, which `get` lists, arrive as the server's JSON
objects and print from them: listing them builds no model and imports no
pydantic (a third of `shoal get workloads`). The others print from models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from shoal.interfaces import Event, Member, Node

JSONObject = Mapping[str, Any]
"""An object as the REST API sends it: a model's JSON form (``model_dump(mode="json")``)."""

__all__ = ["Format", "age", "render"]


class Format(StrEnum):
    """Output formats of `get`."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def age(when: datetime | str | None, now: datetime | None = None) -> str:
    """Return a compact age like 5s, 3m, 2h, 4d (of a datetime, or its ISO 8601 JSON form)."""
    if when is None:
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def human_memory(size: int) -> str:
    """Return ``size`` bytes rounded to one decimal in the largest fitting binary unit."""
    value = float(size)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{value:.0f}{unit}" if unit == "" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    return str(size)  # pragma: no cover - the loop always returns


def _plain(items: Sequence[BaseModel | JSONObject] | BaseModel) -> Any:
    """Return models as JSON data; JSON objects are that already."""
    if isinstance(items, Sequence):
        return [
            item if isinstance(item, Mapping) else item.model_dump(mode="json") for item in items
        ]
    return items.model_dump(mode="json")


Rows = list[tuple[str, ...]]
"""A table's header, then its rows: the cells as printed."""


def print_table(rows: Rows) -> None:
    """Print ``rows`` as ``kubectl get`` does: columns padded to fit, the header in bold.

    The layout of rich's ``Table(box=None)``, in plain text: a listing, the
    commonest command, loads no rich. The bold is dropped when stdout is not
    a terminal.
    """
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    lines = ("".join(f" {c.ljust(w)} " for c, w in zip(row, widths, strict=True)) for row in rows)
    header, *body = lines
    typer.echo(typer.style(header, bold=True))
    for line in body:
        typer.echo(line)


def _wanted(spec: JSONObject, status: JSONObject) -> object:
    """How many instances a workload wants (``Workload.wanted_replicas``, from its JSON).

    ``replicas``; a daemon's eligible nodes or a job's runs at once are what
    its status counted: its ``replicas`` says nothing for them.
    """
    return (
        spec["replicas"]
        if spec.get("mode", "replicas") == "replicas"
        else status.get("desired_replicas", 0)
    )


def _workloads(items: Sequence[JSONObject]) -> Rows:
    rows: Rows = [("NAMESPACE", "NAME", "READY", "PHASE", "GENERATION", "AGE")]
    for w in items:
        spec, status = w["spec"], w["status"]
        rows.append(
            (
                spec["namespace"],
                spec["name"],
                f"{status['ready_replicas']}/{_wanted(spec, status)}",
                status["phase"],
                str(w["generation"]),
                age(w["created_at"]),
            )
        )
    return rows


def _instances(items: Sequence[JSONObject]) -> Rows:
    rows: Rows = [
        ("NAMESPACE", "NAME", "WORKLOAD", "NODE", "STATE", "READY", "RESTARTS", "REASON", "AGE")
    ]
    for i in items:
        state = i["state"] + (" (deleting)" if i["deleting"] else "")
        rows.append(
            (
                i["namespace"],
                i["name"],
                i["workload"],
                i["node"] or "-",
                state,
                "yes" if i["ready"] else "no",
                str(i["restart_count"]),
                i["reason"],
                age(i["created_at"]),
            )
        )
    return rows


def _nodes(items: Sequence[Node]) -> Rows:
    from shoal.interfaces import Tag, format_cpu

    rows: Rows = [("NAME", "ROLE", "STATE", "SCHEDULING", "CPU", "MEMORY", "RUNTIME", "API")]
    for n in items:
        scheduling = "draining" if n.draining else "cordoned" if n.cordoned else "enabled"
        rows.append(
            (
                n.name,
                n.role.value,
                n.state.value,
                scheduling,
                format_cpu(n.allocatable.cpu),
                human_memory(n.allocatable.memory),
                n.runtime,
                n.addresses.get(Tag.API, "-"),
            )
        )
    return rows


def _members(items: Sequence[Member]) -> Rows:
    from shoal.interfaces import Tag

    rows: Rows = [("NAME", "ADDRESS", "STATE", "ROLE", "ID", "GRPC")]
    for m in items:
        rows.append(
            (
                m.name,
                m.address,
                m.state.value,
                m.tags.get(Tag.ROLE, "-"),
                m.tags.get(Tag.ID, "-")[:12],
                m.tags.get(Tag.GRPC, "-"),
            )
        )
    return rows


def _events(items: Sequence[Event]) -> Rows:
    rows: Rows = [("TIME", "TYPE", "OBJECT", "REASON", "ACTOR", "MESSAGE")]
    for e in items:
        rows.append(
            (
                f"{e.time:%H:%M:%S}",
                e.type.value,
                str(e.object),
                e.reason,
                f"{e.actor.id} ({e.actor.via})",
                e.message,
            )
        )
    return rows


def render(
    console: Console, items: Sequence[BaseModel | JSONObject] | BaseModel, fmt: Format, kind: str
) -> None:
    """Print ``items`` of ``kind`` (workloads, instances, nodes, members, events) in ``fmt``.

    Workloads and instances print from JSON objects; nodes, members and events from
    models. JSON and YAML go through ``console``; a table is plain text on stdout.
    """
    if fmt == Format.JSON:
        console.print_json(json.dumps(_plain(items)))
        return
    if fmt == Format.YAML:
        import yaml

        console.print(yaml.safe_dump(_plain(items), sort_keys=False), end="", markup=False)
        return
    if not items:
        typer.echo(f"no {kind} found")
        return
    builders: dict[str, Any] = {
        "workloads": _workloads,
        "instances": _instances,
        "nodes": _nodes,
        "members": _members,
        "events": _events,
    }
    if kind not in builders:
        console.print_json(json.dumps(_plain(items)))
        return
    print_table(builders[kind](items))
