"""ConfigMaps, Secrets, Namespaces and the Kubernetes workload kinds at the command line.

* `shoal create secret generic NAME --from-literal K=V --from-file [KEY=]PATH`
  and `shoal create configmap NAME ...` (as kubectl's);
* :func:`get_kube_objects` — `shoal get configmaps|secrets|namespaces|deployments|pods|
  daemonsets|jobs`, called by `get`;
* :func:`delete_kube_object` — `shoal delete configmap|secret|namespace NAME`, called by `delete`.

A Secret's values are printed only with ``--show-values``, which the server
grants to admin keys alone and records as an event.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ._base import app, fail, out, run, with_client
from ._output import Format

if TYPE_CHECKING:
    from shoal.client import ShoalClient
    from shoal.interfaces import ObjectSpec

__all__ = [
    "CONFIG_KINDS",
    "KUBE_KINDS",
    "delete_kube_object",
    "describe_kube_object",
    "get_kube_objects",
]

KUBE_KINDS = {
    "configmaps": "configmaps",
    "configmap": "configmaps",
    "cm": "configmaps",
    "secrets": "secrets",
    "secret": "secrets",
    "namespaces": "namespaces",
    "namespace": "namespaces",
    "ns": "namespaces",
    "deployments": "deployments",
    "deployment": "deployments",
    "deploy": "deployments",
    "daemonsets": "daemonsets",
    "daemonset": "daemonsets",
    "ds": "daemonsets",
    "jobs": "jobs",
    "job": "jobs",
    "pods": "pods",
    "pod": "pods",
    "po": "pods",
}
"""What `get` also lists, by every name kubectl takes for it."""

CONFIG_KINDS: dict[str, Literal["ConfigMap", "Secret", "Namespace"]] = {
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "namespaces": "Namespace",
}
"""`delete` kinds that are configuration objects."""

create_app = typer.Typer(
    help="Create a ConfigMap or a Secret from literals and files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(create_app, name="create")
secret_app = typer.Typer(help="Create a Secret.", no_args_is_help=True, rich_markup_mode=None)
create_app.add_typer(secret_app, name="secret")

Literals = Annotated[
    list[str] | None,
    typer.Option("--from-literal", help="KEY=VALUE, repeatable."),
]
FromFiles = Annotated[
    list[str] | None,
    typer.Option(
        "--from-file", help="[KEY=]PATH: the file's content under KEY (its name by default)."
    ),
]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]


def _entries(literals: list[str] | None, files: list[str] | None) -> dict[str, bytes]:
    """Return the values of ``--from-literal`` and ``--from-file``, by key; exit on a bad one."""
    values: dict[str, bytes] = {}

    def put(key: str, value: bytes, given: str) -> None:
        if key in values:
            fail(f"key {key!r} is given twice ({given}): give each key once", 2)
        values[key] = value

    for literal in literals or []:
        key, equals, value = literal.partition("=")
        if not equals or not key:
            fail(f"--from-literal {literal!r} is not KEY=VALUE: write e.g. password=s3cret", 2)
        put(key, value.encode(), f"--from-literal {key}=...")
    for spec in files or []:
        key, equals, path = spec.partition("=")
        if not equals:
            key, path = "", spec
        if not path:
            fail(f"--from-file {spec!r} names no file: write [KEY=]PATH, e.g. index.html=./site", 2)
        file = Path(path)
        try:
            content = file.read_bytes()
        except IsADirectoryError:
            fail(f"--from-file {path}: is a directory: name each file", 2)
        except OSError as exc:
            fail(f"--from-file {path}: cannot read it ({exc.strerror}): check the path", 2)
        put(key or file.name, content, f"--from-file {spec}")
    if not values:
        fail("nothing to store: give --from-literal KEY=VALUE or --from-file [KEY=]PATH", 2)
    return values


def _create(document: dict[str, Any], label: str) -> None:
    """Create the object of ``document`` (Shoal's dialect); refuse if it exists."""
    from shoal.interfaces import NotFound
    from shoal.kube import parse_documents

    async def call(shoal: ShoalClient) -> None:
        source = f"shoal create {document['kind'].lower()}"
        objects: list[ObjectSpec] = parse_documents([document], source).objects
        spec = objects[0]
        try:
            if spec.kind == "Secret":
                await shoal.get_secret(spec.name, document["namespace"])
            else:
                await shoal.get_config_map(spec.name, document["namespace"])
        except NotFound:
            pass
        else:
            kind = spec.kind.lower()
            fail(
                f"{kind} {document['namespace']}/{spec.name} already exists: change it with "
                f"`shoal apply -f`, or `shoal delete {kind} {spec.name}` first"
            )
        await shoal.apply(objects)
        out.print(f"{label} created", highlight=False, markup=False)

    run(lambda: with_client(call))


@secret_app.command("generic")
def create_secret_generic(
    name: Annotated[str, typer.Argument(help="The Secret's name.")],
    from_literal: Literals = None,
    from_file: FromFiles = None,
    secret_type: Annotated[
        str, typer.Option("--type", help="Opaque, kubernetes.io/basic-auth, ...")
    ] = "Opaque",
    namespace: Namespace = "default",
) -> None:
    """Create a Secret from literals and files (stored encrypted; values never printed)."""
    import base64

    values = _entries(from_literal, from_file)
    data = {key: base64.b64encode(value).decode() for key, value in values.items()}
    document = {"kind": "Secret", "name": name, "namespace": namespace, "type": secret_type}
    _create({**document, "data": data}, f"secret {namespace}/{name}")


@create_app.command("configmap")
def create_configmap(
    name: Annotated[str, typer.Argument(help="The ConfigMap's name.")],
    from_literal: Literals = None,
    from_file: FromFiles = None,
    namespace: Namespace = "default",
) -> None:
    """Create a ConfigMap from literals and files (bytes that are not UTF-8 kept as binary)."""
    import base64

    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, value in _entries(from_literal, from_file).items():
        try:
            data[key] = value.decode()
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(value).decode()
    document = {"kind": "ConfigMap", "name": name, "namespace": namespace, "data": data}
    _create({**document, "binary_data": binary}, f"configmap {namespace}/{name}")


def _print_documents(documents: list[dict[str, Any]], fmt: Format, single: bool) -> None:
    shown: Any = (
        documents[0] if single else {"apiVersion": "v1", "kind": "List", "items": documents}
    )
    if fmt == Format.JSON:
        import json

        out.print_json(json.dumps(shown))
        return
    import yaml

    out.print(yaml.safe_dump(shown, sort_keys=False), end="", markup=False, highlight=False)


def get_kube_objects(
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: Format,
    show_values: bool,
) -> None:
    """List (or get one of) ``kind``, one of :data:`KUBE_KINDS`; see `shoal get --help`."""
    from . import _kube_output as show

    chosen = KUBE_KINDS[kind]
    if show_values and chosen != "secrets":
        fail("--show-values is for secrets only", 2)
    if show_values and output == Format.TABLE:
        fail("--show-values needs -o yaml or -o json (a table shows keys and sizes)", 2)
    if chosen == "namespaces":
        namespace, all_namespaces = None, False
    elif all_namespaces:
        if name is not None:
            fail(f"-A lists {chosen} of every namespace: drop the name, or use -n NAMESPACE", 2)
        namespace = None
    else:
        namespace = namespace or "default"

    async def call(shoal: ShoalClient) -> None:
        documents: list[dict[str, Any]]
        table: Any
        if chosen == "configmaps":
            maps = (
                [await shoal.get_config_map(name, namespace or "default")]
                if name
                else await shoal.list_config_maps(namespace)
            )
            documents = [show.config_map_document(c) for c in maps]
            table = show.config_map_table(maps, all_namespaces) if maps else None
        elif chosen == "secrets":
            if name:
                secrets = [
                    await shoal.get_secret(name, namespace or "default", show_values=show_values)
                ]
            else:
                secrets = await shoal.list_secrets(namespace)
                if show_values:
                    secrets = [
                        await shoal.get_secret(s.name, s.namespace, show_values=True)
                        for s in secrets
                    ]
            documents = [show.secret_document(s) for s in secrets]
            table = show.secret_table(secrets, all_namespaces) if secrets else None
        elif chosen == "namespaces":
            spaces = [n for n in await shoal.list_namespaces() if name in (None, n.spec.name)]
            if name and not spaces:
                fail(f"namespace {name} not found: list them with `shoal get namespaces`")
            documents = [show.namespace_document(n) for n in spaces]
            table = show.namespace_table(spaces) if spaces else None
        else:
            origin_kind = show.WORKLOAD_KINDS[chosen]
            workloads = [
                w
                for w in await shoal.list_workloads(namespace)
                if w.spec.origin is not None
                and w.spec.origin.kind == origin_kind
                and name in (None, w.name)
            ]
            if name and not workloads:
                fail(
                    f"{origin_kind.lower()} {namespace}/{name} not found: list them with "
                    f"`shoal get {chosen} -n {namespace}` (workloads of Shoal's own dialect: "
                    "`shoal get workloads`)"
                )
            instances = await shoal.list_instances(namespace) if chosen == "pods" else []
            documents = [show.workload_document(w) for w in workloads]
            table = (
                show.workload_table(origin_kind, workloads, instances, all_namespaces)
                if workloads
                else None
            )
        if output != Format.TABLE:
            if documents or name is None:
                _print_documents(documents, output, single=name is not None)
        elif table is None:
            where = "" if namespace is None else f" in namespace {namespace}"
            out.print(f"no {chosen} found{where}", highlight=False)
        else:
            out.print(table)

    run(lambda: with_client(call))


def describe_kube_object(kind: str, name: str, namespace: str) -> None:
    """Print one object of ``kind`` as applied (YAML) and its latest events; never a value."""
    from ._output import render

    chosen = KUBE_KINDS[kind]
    get_kube_objects(kind, name, namespace, False, Format.YAML, False)

    async def call(shoal: ShoalClient) -> None:
        if chosen == "namespaces":
            events = await shoal.list_events(kind="Namespace", name=name, limit=10)
        else:
            about = CONFIG_KINDS.get(chosen, "Workload")
            events = await shoal.list_events(kind=about, name=name, namespace=namespace, limit=10)
        out.print("events:")
        render(out, events, Format.TABLE, "events")

    run(lambda: with_client(call))


def delete_kube_object(kind: str, name: str, namespace: str) -> None:
    """Delete a ConfigMap, a Secret or a Namespace (``kind`` one of :data:`KUBE_KINDS`)."""
    config_kind = CONFIG_KINDS[KUBE_KINDS[kind]]

    async def call(shoal: ShoalClient) -> None:
        await shoal.delete_config(config_kind, name, namespace)
        where = name if config_kind == "Namespace" else f"{namespace}/{name}"
        out.print(f"{config_kind.lower()} {where} deleted", highlight=False, markup=False)

    run(lambda: with_client(call))
