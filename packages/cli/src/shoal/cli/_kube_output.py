"""Tables and documents for `shoal get` of the Kubernetes-flavoured kinds.

Tables show the columns ``kubectl get`` shows where Shoal has the data (a
NAMESPACE column first when every namespace is listed). ``-o yaml|json``
shows each object as applied: the Kubernetes manifest it came from (Shoal's
own document when it came from none) with Shoal's ``status`` added. A
Secret is shown by its keys and sizes; its ``data`` only when an admin asked
for the values.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._output import age

if TYPE_CHECKING:
    from rich.table import Table

    from shoal.interfaces import ConfigMap, Instance, Namespace, SecretView, Workload

__all__ = [
    "WORKLOAD_KINDS",
    "config_map_document",
    "config_map_table",
    "namespace_document",
    "namespace_table",
    "secret_document",
    "secret_table",
    "workload_document",
    "workload_table",
]

WORKLOAD_KINDS = {
    "deployments": "Deployment",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
    "pods": "Pod",
}
"""`get` kinds that are workloads translated from one Kubernetes kind (``spec.origin.kind``)."""


def _table(columns: Sequence[str], all_namespaces: bool) -> Table:
    from rich.table import Table  # rich loads when a table is printed

    return Table(*(["NAMESPACE"] if all_namespaces else []), *columns, box=None)


def _row(namespace: str, all_namespaces: bool, *cells: str) -> list[str]:
    return [namespace, *cells] if all_namespaces else list(cells)


def config_map_table(items: Sequence[ConfigMap], all_namespaces: bool) -> Table:
    """NAME, DATA (how many keys), AGE."""
    table = _table(("NAME", "DATA", "AGE"), all_namespaces)
    for c in items:
        keys = len(c.spec.data) + len(c.spec.binary_data)
        table.add_row(
            *_row(c.spec.namespace, all_namespaces, c.spec.name, str(keys), age(c.created_at))
        )
    return table


def secret_table(items: Sequence[SecretView], all_namespaces: bool) -> Table:
    """NAME, TYPE, DATA (how many keys), AGE: never a value."""
    table = _table(("NAME", "TYPE", "DATA", "AGE"), all_namespaces)
    for s in items:
        cells = (s.name, s.type, str(len(s.sizes)), age(s.created_at))
        table.add_row(*_row(s.namespace, all_namespaces, *cells))
    return table


def namespace_table(items: Sequence[Namespace]) -> Table:
    """NAME, STATUS, AGE ('-' for a namespace only used, never created as an object)."""
    table = _table(("NAME", "STATUS", "AGE"), False)
    for n in items:
        table.add_row(n.spec.name, "Active", age(n.created_at) if n.uid else "-")
    return table


def _pod_status(instance: Instance | None) -> str:
    if instance is None:
        return "Pending"
    if instance.deleting:
        return "Terminating"
    if instance.reason and instance.state.value in ("pending", "starting", "failed", "stopped"):
        return instance.reason
    return instance.state.value.capitalize()


def workload_table(
    kind: str, items: Sequence[Workload], instances: Sequence[Instance], all_namespaces: bool
) -> Table:
    """The columns kubectl shows for ``kind`` (Deployment, DaemonSet, Job or Pod)."""
    columns = {
        "Deployment": ("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
        "DaemonSet": ("NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
        "Job": ("NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"),
        "Pod": ("NAME", "READY", "STATUS", "RESTARTS", "AGE"),
    }[kind]
    table = _table(columns, all_namespaces)
    for w in items:
        s = w.status
        cells: tuple[str, ...]
        if kind == "Deployment":
            ready = f"{s.ready_replicas}/{w.spec.replicas}"
            cells = (ready, str(s.updated_replicas), str(s.available_replicas))
        elif kind == "DaemonSet":
            cells = (
                str(s.desired_replicas),
                str(s.replicas),
                str(s.ready_replicas),
                str(s.updated_replicas),
                str(s.available_replicas),
            )
        elif kind == "Job":
            status = {"complete": "Complete", "failed": "Failed"}.get(s.phase.value, "Running")
            completions = f"{s.succeeded}/{w.spec.job_spec.completions}"
            cells = (status, completions, age(w.created_at, s.finished_at))
        else:
            mine = [i for i in instances if i.namespace == w.namespace and i.workload == w.name]
            instance = max(mine, key=lambda i: i.created_at, default=None)
            containers = len(w.spec.template.containers)
            ready_containers = containers if instance is not None and instance.ready else 0
            restarts = str(instance.restart_count) if instance is not None else "0"
            cells = (f"{ready_containers}/{containers}", _pod_status(instance), restarts)
        table.add_row(*_row(w.namespace, all_namespaces, w.name, *cells, age(w.created_at)))
    return table


def _bookkeeping(uid: str, generation: int, created: Any, updated: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "generation": generation,
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
    }


def workload_document(w: Workload) -> dict[str, Any]:
    """The workload as applied (its manifest, or Shoal's document) with Shoal's status."""
    origin = w.spec.origin
    if origin is not None and origin.manifest:
        document = copy.deepcopy(origin.manifest)
    else:
        document = w.spec.model_dump(mode="json", exclude={"origin"})
    document["status"] = {
        **w.status.model_dump(mode="json"),
        "revision_number": w.revision,
        "deleting": w.deleting,
        **_bookkeeping(w.uid, w.generation, w.created_at, w.updated_at),
    }
    return document


def config_map_document(c: ConfigMap) -> dict[str, Any]:
    """The ConfigMap as applied, with its identity and generation as status."""
    origin = c.spec.origin
    if origin is not None and origin.manifest:
        document = copy.deepcopy(origin.manifest)
    else:
        document = c.spec.model_dump(mode="json", exclude={"origin"})
    document["status"] = _bookkeeping(c.uid, c.generation, c.created_at, c.updated_at)
    return document


def secret_document(s: SecretView) -> dict[str, Any]:
    """The Secret as a Kubernetes document: ``data`` only when the values were asked for.

    Its keys and their sizes are in ``status.sizes`` either way.
    """
    metadata: dict[str, Any] = {"name": s.name, "namespace": s.namespace}
    if s.labels:
        metadata["labels"] = dict(s.labels)
    if s.annotations:
        metadata["annotations"] = dict(s.annotations)
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata}
    document["type"] = s.type
    if s.immutable:
        document["immutable"] = True
    if s.data is not None:
        document["data"] = dict(s.data)
    document["status"] = {
        "sizes": dict(s.sizes),
        **_bookkeeping(s.uid, s.generation, s.created_at, s.updated_at),
    }
    return document


def namespace_document(n: Namespace) -> dict[str, Any]:
    """The Namespace as applied (or as Shoal's document, for one only used), with status."""
    origin = n.spec.origin
    if origin is not None and origin.manifest:
        document = copy.deepcopy(origin.manifest)
    else:
        document = n.spec.model_dump(mode="json", exclude={"origin"})
    status: dict[str, Any] = {"phase": "Active"}
    if n.uid:
        status |= _bookkeeping(n.uid, n.generation, n.created_at, n.updated_at)
    document["status"] = status
    return document
