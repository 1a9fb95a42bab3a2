"""Running one CNI plugin the way the CNI specification says a runtime does.

A CNI plugin is an executable named after its ``type`` (``bridge``,
``portmap``, ...), found in the plugin directories. The runtime execs it with
the operation in environment variables (``CNI_COMMAND`` ADD, DEL or CHECK,
``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH`` for the
plugins it delegates to, such as ``host-local`` for IPAM) and the plugin's
network configuration as JSON on stdin. On success ADD prints a result
document; DEL and CHECK print nothing. On failure a plugin exits non-zero and
prints an error document ``{"code", "msg", "details"}``, which becomes a
:class:`~shoal.interfaces.RuntimeFailure` naming the plugin, the operation and
the plugin's own message.

There is no maintained CNI library for Python (PyPI has none; the reference
implementation is Go's ``libcni``), and none is needed: the protocol is an
exec with an environment and two JSON documents, which is exactly what
containerd and CRI-O do through ``libcni``. Speaking it directly keeps the
plugins' exact error messages and adds no dependency.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from shoal.interfaces import RuntimeFailure

__all__ = ["CNI_VERSION", "CniCommand", "PluginCall", "find_plugin", "invoke_plugin"]

CNI_VERSION = "1.0.0"
"""The spec version Shoal speaks; Debian's plugins (1.1) support it."""

CniCommand = Literal["ADD", "DEL", "CHECK"]
"""The operations Shoal invokes."""

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""Plugins exec iptables and friends; make sure an agent's PATH reaches them."""


@dataclass(frozen=True, slots=True)
class PluginCall:
    """What one plugin invocation is about (the ``CNI_*`` environment)."""

    command: CniCommand
    """ADD, DEL or CHECK."""
    container_id: str
    """``CNI_CONTAINERID``: the pod uid."""
    netns: str
    """``CNI_NETNS``: path of the pod's network namespace."""
    ifname: str
    """``CNI_IFNAME``: the interface to create inside the namespace."""


def find_plugin(plugin_type: str, plugin_dirs: Sequence[Path]) -> Path:
    """Return the executable for ``plugin_type`` from the first directory that has it.

    Raises:
        RuntimeFailure: no directory has it.

    """
    if "/" in plugin_type or plugin_type in ("", ".", ".."):
        raise RuntimeFailure(f"invalid CNI plugin type {plugin_type!r}", plugin=plugin_type)
    for directory in plugin_dirs:
        candidate = directory / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    searched = ":".join(str(d) for d in plugin_dirs)
    raise RuntimeFailure(
        f"CNI plugin {plugin_type!r} not found in {searched}: install Debian's "
        "containernetworking-plugins (or point plugin_dirs at the plugins)",
        plugin=plugin_type,
        plugin_dirs=[str(d) for d in plugin_dirs],
    )


async def invoke_plugin(
    config: dict[str, Any],
    call: PluginCall,
    plugin_dirs: Sequence[Path],
    *,
    time_limit: float,
) -> dict[str, Any] | None:
    """Exec the plugin named by ``config['type']`` with ``config`` on stdin.

    Args:
        config: The plugin's complete network configuration (with ``name``,
            ``cniVersion`` and, where the spec asks for them, ``prevResult`` and
            ``runtimeConfig``).
        call: The operation and its ``CNI_*`` parameters.
        plugin_dirs: Where to look for plugins, in order; also ``CNI_PATH``.
        time_limit: Seconds the plugin may take; it is killed after that.

    Returns:
        The parsed result document for ADD; None for DEL and CHECK.

    Raises:
        RuntimeFailure: the plugin is missing, failed, timed out or printed a
            result that is not JSON.

    """
    plugin_type = str(config.get("type", ""))
    executable = find_plugin(plugin_type, plugin_dirs)
    env = {
        "PATH": _search_path(),
        "CNI_COMMAND": call.command,
        "CNI_CONTAINERID": call.container_id,
        "CNI_NETNS": call.netns,
        "CNI_IFNAME": call.ifname,
        "CNI_PATH": os.pathsep.join(str(d) for d in plugin_dirs),
    }
    details: dict[str, Any] = {"plugin": plugin_type, "command": call.command}
    try:
        with anyio.fail_after(time_limit):
            done = await anyio.run_process(
                [str(executable)], input=json.dumps(config).encode(), env=env, check=False
            )
    except TimeoutError as exc:
        raise RuntimeFailure(
            f"CNI plugin {plugin_type} {call.command} did not finish within {time_limit:g}s",
            **details,
        ) from exc
    except OSError as exc:
        raise RuntimeFailure(
            f"CNI plugin {plugin_type} could not be run: {exc}", **details
        ) from exc
    if done.returncode != 0:
        raise _plugin_error(plugin_type, call.command, done.stdout, done.stderr, details)
    if call.command != "ADD":
        return None
    try:
        result = json.loads(done.stdout)
    except ValueError as exc:
        raise RuntimeFailure(
            f"CNI plugin {plugin_type} ADD printed a result that is not JSON: "
            f"{done.stdout[:200].decode(errors='replace')!r}",
            **details,
        ) from exc
    if not isinstance(result, dict):
        raise RuntimeFailure(f"CNI plugin {plugin_type} ADD printed {result!r}", **details)
    return result


def _plugin_error(
    plugin_type: str, command: str, stdout: bytes, stderr: bytes, details: dict[str, Any]
) -> RuntimeFailure:
    """Build the error for a failed plugin from its error document (or its stderr)."""
    message = ""
    try:
        document = json.loads(stdout)
    except ValueError:
        document = None
    if isinstance(document, dict):
        message = str(document.get("msg", ""))
        if document.get("details"):
            message = f"{message}: {document['details']}"
        details = {**details, "cni_code": document.get("code")}
    if not message:
        text = (stderr or stdout).decode(errors="replace").strip()
        message = text[-500:] or "no message"
    return RuntimeFailure(f"CNI plugin {plugin_type} {command} failed: {message}", **details)


def _search_path() -> str:
    parts = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p]
    parts.extend(d for d in _SBIN if d not in parts)
    return os.pathsep.join(parts)
