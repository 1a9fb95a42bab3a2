"""Placement helpers of the control loop: node usage, and cheap creation of new instances."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from shoal.interfaces import (
    PLACED_STATES,
    Instance,
    InstanceState,
    NodeUsage,
    PodTemplate,
    ScheduleFailure,
    Workload,
    instance_key,
)

from ._restarts import should_restart
from ._tracing import current_traceparent

__all__ = ["InstanceFactory", "UsageIndex", "copy_with"]

_TEMPLATE = {"template"}
"""What :meth:`InstanceFactory.encode` leaves out (a set: pydantic takes a frozenset slowly)."""

_OWN = {"name", "uid", "container_ids", "state", "node", "reason", "message", "schedule_failure"}
"""The fields a new instance may have of its own (``new`` sets the first three, the
status given to it the others): the rest are its prototype's, whose JSON is made once."""

_SHARED = set(Instance.model_fields) - _OWN - _TEMPLATE
"""The fields every instance ``new`` makes of one workload has its prototype's values of."""


class _OwnButState(TypedDict):
    """What :meth:`InstanceFactory.encode` has pydantic write of an instance's own fields.

    The same names and types as the Instance's fields (a test holds it to
    them): pydantic writes this dict in about two thirds of the time it
    takes to pick these fields out of a whole Instance (``include=``). The
    state's JSON is looked up (:data:`_STATE_JSON`), since pydantic reads an
    enum's value through Python (``Enum.value`` is a property), which cost a
    tenth of placing an instance.
    """

    name: str
    uid: str
    node: str | None
    reason: str
    message: str
    schedule_failure: ScheduleFailure | None
    container_ids: dict[str, str]


_OWN_BUT_STATE_JSON = TypeAdapter(_OwnButState).serializer

_STATE_JSON = {state: json.dumps(state.value).encode() for state in InstanceState}

_FINISHED = frozenset({InstanceState.STOPPED, InstanceState.FAILED})


def _holds_a_slot(inst: Instance | None) -> bool:
    """Whether ``inst`` takes room on its node: placed, or finished and to be restarted there.

    A finished instance that its restart policy does not restart (a job's
    succeeded run, a failed one under Never) is kept for its logs, taking no room.
    """
    if inst is None or inst.node is None:
        return False
    if inst.state in _FINISHED:
        return should_restart(inst.restart_policy, inst)
    return inst.state in PLACED_STATES


class UsageIndex(Mapping[str, NodeUsage]):
    """What the placed instances take on each node, kept current change by change.

    :meth:`change` is an instance cache's listener: it takes one instance's
    old and new value, so the usage of every node is known without summing
    the cluster's instances per placement. Finished instances keep their
    slot when the control loop restarts them in place; those it does not
    restart (a job's finished runs) free it.
    Host ports are counted, so one of two instances that (wrongly) share a
    port can go without freeing it. Read it as a mapping of node name to
    :class:`NodeUsage`; the scheduler copies what it changes.
    """

    def __init__(self) -> None:
        self._usage: dict[str, NodeUsage] = {}
        self._ports: dict[str, Counter[tuple[int, str]]] = {}

    def __getitem__(self, node: str) -> NodeUsage:
        return self._usage[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._usage)

    def __len__(self) -> int:
        return len(self._usage)

    def change(self, old: Instance | None, new: Instance | None) -> bool:
        """Account for one instance changing from ``old`` to ``new`` (None: absent).

        Returns whether it freed a slot (room may have appeared on its node).
        """
        if old is not None and new is not None and old.node == new.node:
            if _holds_a_slot(old) == _holds_a_slot(new) and old.template == new.template:
                return False  # a status change: the same slot
        freed = False
        if old is not None and _holds_a_slot(old):
            self._add(old, -1)
            freed = True
        if new is not None and _holds_a_slot(new):
            self._add(new, 1)
        return freed

    def _add(self, inst: Instance, sign: int) -> None:
        node = inst.node
        assert node is not None
        used = self._usage.get(node)
        if used is None:
            used = self._usage[node] = NodeUsage()
            self._ports[node] = Counter()
        need = inst.template.requests()
        used.cpu += sign * need.cpu
        used.memory += sign * need.memory
        used.pods += sign
        ports = self._ports[node]
        for port in inst.template.host_ports():
            ports[port] += sign
            if ports[port] > 0:
                used.host_ports.add(port)
            else:
                del ports[port]
                used.host_ports.discard(port)
        group = f"{inst.namespace}/{inst.workload}"
        count = used.groups.get(group, 0) + sign
        if count > 0:
            used.groups[group] = count
        else:
            used.groups.pop(group, None)
        if used.pods <= 0:
            del self._usage[node]
            del self._ports[node]


_UIDS = random.Random()
"""Where instance uids come from: seeded from the OS's randomness at import, and again
in a forked child (which would otherwise repeat its parent's draws).

A uid must be unique, not secret; a pass may draw thousands, and
``secrets`` makes a system call for each.
"""
os.register_at_fork(after_in_child=_UIDS.seed)


class InstanceFactory:
    """Makes new instances of workloads with names unique within one pass, and their JSON.

    A pass may create thousands of instances of a few templates, so the work
    that is the same for all instances of a workload is done once:

    * each workload's template is validated once into a prototype that is
      copied per instance;
    * the JSON of what the instances share, the template and the
      prototype's other fields but their own (``_OWN``), is made once
      (:meth:`encode`), and each instance's JSON is its own fields with those
      parts added.
    """

    def __init__(self, now: datetime, existing: Container[str] = frozenset()) -> None:
        self.now = now
        self.existing = existing
        """The store keys (:func:`instance_key`) of the instances that exist already."""
        self.taken: set[str] = set()
        """The store keys of the instances this factory handed out."""
        self._prototypes: dict[str, tuple[Instance, bytes]] = {}
        """Each workload's prototype, and the end of its instances' JSON: a comma, its _SHARED
        fields and its template (the object's members), and the closing brace."""
        self._templates: dict[int, tuple[PodTemplate, bytes]] = {}
        """Each prototype's template and its JSON, by the template's id."""
        self._made: dict[int, tuple[Instance, bytes]] = {}
        """The instances :meth:`new` made of a status with no field outside ``_OWN``, by id,
        with the end of their JSON (their prototype's). The instance is kept, since ids are
        reused once an object is gone."""

    def fresh_uid(self, workload: Workload) -> str:
        """Return a uid whose 5-character name suffix no instance uses yet."""
        start, taken, existing = (
            instance_key(workload.namespace, f"{workload.name}-"),
            self.taken,
            self.existing,
        )
        while True:
            uid = f"{_UIDS.getrandbits(64):016x}"
            key = start + uid[:5]
            if key not in taken and key not in existing:
                taken.add(key)
                return uid

    def new(self, workload: Workload, uid: str, **status: Any) -> Instance:
        """Return a new instance of ``workload`` with ``uid`` and the given status fields.

        Its name (from ``uid``), uid and empty container ids are set here, over
        any the status fields name.
        """
        return self.maker(workload)(uid, status)

    def maker(self, workload: Workload) -> Callable[[str, dict[str, Any]], Instance]:
        """Return ``new(uid, status)``, :meth:`new` for ``workload``: its prototype found once.

        ``status`` is a dict of the new instance's fields, which ``new`` takes
        over (it adds name, uid and container ids to it): a pass makes
        thousands of instances, each from a dict made for it.
        """
        made = self._prototypes.get(workload.key)
        if made is None:
            proto = Instance(
                name=workload.name,
                namespace=workload.namespace,
                uid="",
                workload=workload.name,
                workload_uid=workload.uid,
                generation=workload.generation,
                revision=workload.revision,
                template=workload.spec.template,
                restart_policy=workload.spec.restart_policy,
                created_at=self.now,
                # The request that caused it, or (none recorded) the reconcile making it.
                trace_context=workload.trace_context or current_traceparent(),
            )
            shared = Instance.__pydantic_serializer__.to_json(proto, include=_SHARED)[1:-1]
            template = proto.template.model_dump_json().encode()
            end = b"".join((b",", shared, b',"template":', template, b"}"))
            made = self._prototypes[workload.key] = (proto, end)
            self._templates[id(proto.template)] = (proto.template, template)
        (prototype, end), name, kept = made, workload.name, self._made

        def new(uid: str, status: dict[str, Any]) -> Instance:
            own = status.keys() <= _OWN
            status["name"] = f"{name}-{uid[:5]}"
            status["uid"] = uid
            status["container_ids"] = {}  # a fresh dict
            inst = copy_with(prototype, status)
            if own:
                kept[id(inst)] = (inst, end)
            return inst

        return new

    def encode(self, inst: Instance) -> bytes:
        """Return ``inst`` as stored JSON (what ``model_dump_json`` holds, in another order).

        An instance made by :meth:`new` shares its prototype's template, whose
        JSON is made once per workload: the template is most of an
        instance's JSON, and most of the time it takes to make. One made of a
        status with no field outside ``_OWN`` has its prototype's other fields
        too, whose JSON is made once as well: only its own fields are made here.
        Instances are not changed in place (a change is a copy), so what
        :meth:`new` made is what is encoded.
        """
        made, end = self._made.pop(id(inst), (None, b""))
        if made is inst:  # all but its own fields are its prototype's
            fields = inst.__dict__
            own = _OWN_BUT_STATE_JSON.to_json(
                {
                    "name": fields["name"],
                    "uid": fields["uid"],
                    "node": fields["node"],
                    "reason": fields["reason"],
                    "message": fields["message"],
                    "schedule_failure": fields["schedule_failure"],
                    "container_ids": fields["container_ids"],
                }
            )
            return b"".join((own[:-1], b',"state":', _STATE_JSON[inst.state], end))
        cached = self._templates.get(id(inst.template))
        if cached is None or cached[0] is not inst.template:
            return inst.model_dump_json().encode()
        own = Instance.__pydantic_serializer__.to_json(inst, exclude=_TEMPLATE)
        return b"".join((own[:-1], b',"template":', cached[1], b"}"))


def copy_with(inst: Instance, update: dict[str, Any]) -> Instance:
    """Return ``inst.model_copy(update=update)``, without pydantic's generic copies.

    It sets what ``model_copy`` sets on a model with neither extra fields nor
    private attributes (an Instance has neither; a test holds it to that and
    to ``model_copy``'s result), in about two thirds of the time: a pass may
    make ten thousand instances. Like ``model_copy``, it validates nothing.
    """
    made = _new_instance(Instance)
    values = inst.__dict__.copy()
    values.update(update)
    _set(made, "__dict__", values)
    _set(made, "__pydantic_fields_set__", inst.__pydantic_fields_set__ | update.keys())
    _set(made, "__pydantic_extra__", None)
    _set(made, "__pydantic_private__", None)
    return made


_new_instance, _set = Instance.__new__, object.__setattr__
"""Looked up once for :func:`copy_with`, not twice and four times for every instance it makes."""
