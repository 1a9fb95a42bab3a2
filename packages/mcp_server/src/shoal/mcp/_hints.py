"""What a message's `shoal ...` command is as a tool call, for an agent that has only tools.

The service's messages are shared by every front door, and name the CLI's
commands (``see `shoal explain web-1f2a3` ``): an agent cannot run those. The
advice an agent reads (tool errors, a rollout's message, explain's summary
and details, cluster_status's problems) has each command it has a tool for
put as that tool's call; one it has none for is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["as_tool_calls"]

_NAME = r"(?P<name>[a-z0-9][a-z0-9.-]*)"

_TOOLS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (
        re.compile(rf"`shoal rollout promote {_NAME}`"),
        lambda m: f"plan_workload(action='promote', name='{m['name']}') then promote_rollout",
    ),
    (re.compile(r"`shoal rollout promote`"), lambda m: "promote_rollout"),
    (re.compile(r"`shoal rollout resume`"), lambda m: "resume_rollout"),
    (re.compile(r"`shoal rollout pause`"), lambda m: "pause_rollout"),
    (re.compile(r"`shoal rollout history`"), lambda m: "get_rollout"),
    (re.compile(rf"`shoal explain {_NAME}`"), lambda m: f"explain_instance(name='{m['name']}')"),
    (
        re.compile(rf"`shoal describe workload {_NAME}`"),
        lambda m: f"get_workload(name='{m['name']}')",
    ),
    (re.compile(rf"`shoal drain {_NAME}`"), lambda m: f"plan_drain(name='{m['name']}')"),
    (re.compile(r"`shoal get workloads`"), lambda m: "list_workloads"),
    (re.compile(r"`shoal get nodes`"), lambda m: "list_nodes"),
    (re.compile(r"`shoal get configmaps`"), lambda m: "list_config_maps"),
    (re.compile(r"`shoal get secrets`"), lambda m: "list_secrets"),
    (re.compile(r"`shoal trace`"), lambda m: "get_trace"),
]


def as_tool_calls(text: str) -> str:
    """Return ``text`` with each `shoal ...` command an agent has a tool for put as that call."""
    if "`shoal " not in text:
        return text
    for pattern, call in _TOOLS:
        text = pattern.sub(call, text)
    return text
