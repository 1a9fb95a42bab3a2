"""Placement helpers of the control loop: node usage, and cheap creation of new instances."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from shoal.interfaces import PLACED_STATES, Instance, InstanceState, NodeUsage, Workload

__all__ = ["InstanceFactory", "node_usage"]

_HOLDS_ITS_SLOT = PLACED_STATES | {InstanceState.STOPPED, InstanceState.FAILED}


def node_usage(instances: Iterable[Instance]) -> dict[str, NodeUsage]:
    """Sum what the placed instances take on each node.

    Finished instances keep their slot: the control loop restarts them in place.
    """
    usage: dict[str, NodeUsage] = defaultdict(NodeUsage)
    for inst in instances:
        if inst.node is None or inst.state not in _HOLDS_ITS_SLOT:
            continue
        used = usage[inst.node]
        need = inst.template.requests()
        used.cpu += need.cpu
        used.memory += need.memory
        used.pods += 1
        used.host_ports |= inst.template.host_ports()
        group = f"{inst.namespace}/{inst.workload}"
        used.groups[group] = used.groups.get(group, 0) + 1
    return usage


class InstanceFactory:
    """Makes new instances of workloads with names unique within one pass.

    Each workload's template is validated once into a prototype that is
    copied per instance: a pass may create thousands of instances, and
    validating the same template again for each would dominate it.
    """

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.taken: set[str] = set()
        """Instance keys (namespace/name) that exist or were handed out."""
        self._prototypes: dict[str, Instance] = {}

    def fresh_uid(self, workload: Workload) -> str:
        """Return a uid whose 5-character name suffix no instance uses yet."""
        while True:
            uid = secrets.token_hex(8)
            key = f"{workload.namespace}/{workload.name}-{uid[:5]}"
            if key not in self.taken:
                self.taken.add(key)
                return uid

    def new(self, workload: Workload, uid: str, **status: Any) -> Instance:
        """Return a new instance of ``workload`` with ``uid`` and the given status fields."""
        proto = self._prototypes.get(workload.key)
        if proto is None:
            proto = Instance(
                name=workload.name,
                namespace=workload.namespace,
                uid="",
                workload=workload.name,
                workload_uid=workload.uid,
                generation=workload.generation,
                template=workload.spec.template,
                restart_policy=workload.spec.restart_policy,
                created_at=self.now,
            )
            self._prototypes[workload.key] = proto
        return proto.model_copy(
            update={"name": f"{workload.name}-{uid[:5]}", "uid": uid, "container_ids": {}, **status}
        )
