"""What a message's `shoal ...` command is as a tool call, for an agent that has only tools.

The service's messages are shared by every front door, and name the CLI's
commands (``see `shoal explain web-1f2a3` ``): an agent cannot run those. The
advice an agent reads (tool errors, a rollout's message, explain's summary
and details, cluster_status's problems, a plan's rollout steps) has each
command it has a tool for put as that tool's call. A command naming an object
becomes a call only where the object's namespace is known (a CLI command
names it with ``-n``, or means ``default``): a call without it would act on
``default``. One it has no tool for is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["as_tool_calls"]

_NAME = r"(?P<name>[a-z0-9][a-z0-9.-]*)"

_PLAIN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"`shoal rollout promote`"), "promote_rollout"),
    (re.compile(r"`shoal rollout resume`"), "resume_rollout"),
    (re.compile(r"`shoal rollout pause`"), "pause_rollout"),
    (re.compile(r"`shoal rollout history`"), "get_rollout"),
    (re.compile(r"`shoal get workloads`"), "list_workloads"),
    (re.compile(r"`shoal get nodes`"), "list_nodes"),
    (re.compile(r"`shoal get configmaps`"), "list_config_maps"),
    (re.compile(r"`shoal get secrets`"), "list_secrets"),
]
"""Commands that name no object."""

_NAMED: list[tuple[re.Pattern[str], Callable[[str, str], str]]] = [
    (
        re.compile(rf"`shoal rollout promote {_NAME}`"),
        lambda name, where: (
            f"plan_workload(action='promote', name='{name}'{where}) then promote_rollout"
        ),
    ),
    (re.compile(rf"`shoal explain {_NAME}`"), lambda n, w: f"explain_instance(name='{n}'{w})"),
    (
        re.compile(rf"`shoal describe workload {_NAME}`"),
        lambda name, where: f"get_workload(name='{name}'{where})",
    ),
]
"""Commands that name an object of a namespace."""

_NODES: list[tuple[re.Pattern[str], Callable[[str, str], str]]] = [
    (re.compile(rf"`shoal drain {_NAME}`"), lambda name, _: f"plan_drain(name='{name}')"),
    (re.compile(rf"`shoal uncordon {_NAME}`"), lambda name, _: f"uncordon_node(name='{name}')"),
]
"""Commands that name a node (no namespace)."""


def as_tool_calls(text: str, namespace: str | None = None) -> str:
    """Return ``text`` with the `shoal ...` commands an agent has tools for put as calls.

    ``namespace`` is that of the object the text is about (None: unknown, and
    commands naming an object of a namespace stay as they are).
    """
    if "`shoal " not in text:
        return text
    if namespace is not None:
        where = "" if namespace == "default" else f", namespace='{namespace}'"
        for pattern, call in _NAMED:
            text = pattern.sub(_with(call, where), text)
    for node_pattern, node_call in _NODES:
        text = node_pattern.sub(_with(node_call, ""), text)
    for plain, tool in _PLAIN:
        text = plain.sub(tool, text)
    return text


def _with(call: Callable[[str, str], str], where: str) -> Callable[[re.Match[str]], str]:
    """Return the replacement of a matched command: ``call(its name, where)``."""

    def replace(match: re.Match[str]) -> str:
        return call(match["name"], where)

    return replace
