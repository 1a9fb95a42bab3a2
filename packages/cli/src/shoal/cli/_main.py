"""The `shoal` entry point: it imports the one module that registers the command it runs.

Most of a command's wall time is imports, and every ``_cmd_*`` module pulls its
own (the agent its server, ``get`` the client). So ``shoal NAME ...`` imports
only ``COMMANDS[NAME]`` and builds only NAME; ``shoal``, ``shoal
--help`` and an unknown name load every module (the full app, ``_app``), so
help lists them all and a typo gets click's message.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import typer

__all__ = ["COMMANDS", "command_name", "main"]

COMMANDS: dict[str, str] = {
    "agent": "_cmd_agent",
    "keys": "_cmd_agent",
    "apply": "_cmd_apply",
    "diff": "_cmd_apply",
    "audit": "_cmd_audit",
    "cluster": "_cmd_cluster",
    "create": "_cmd_config",
    "images": "_cmd_images",
    "logs": "_cmd_instances",
    "exec": "_cmd_instances",
    "top": "_cmd_instances",
    "manifests": "_cmd_manifests",
    "mcp": "_cmd_mcp",
    "token": "_cmd_mcp",
    "node": "_cmd_node",
    "rollout": "_cmd_rollout",
    "trace": "_cmd_trace",
    "get": "_cmd_workloads",
    "members": "_cmd_workloads",
    "describe": "_cmd_workloads",
    "scale": "_cmd_workloads",
    "delete": "_cmd_workloads",
    "events": "_cmd_workloads",
    "cordon": "_cmd_workloads",
    "uncordon": "_cmd_workloads",
    "drain": "_cmd_workloads",
    "explain": "_cmd_workloads",
}
"""Each top-level command (or group) and the module that registers it on ``app``.

A command missing here still runs (its name loads every module), only slower;
tests/cli/test_entry.py checks this table against the full app.
"""

ROOT_OPTIONS_WITH_VALUE = frozenset({"--server", "--home"})
"""The root callback's options that take a value (``--server URL``), skipped to find the command."""

SERVERS = frozenset({"agent", "mcp"})
"""Commands that serve until stopped: they serve schemas (OpenAPI, MCP tools), whose
descriptions come from field docs, and exit the ordinary way."""


def command_name(args: Sequence[str]) -> str | None:
    """Return the command ``shoal ARGS`` runs: its first word past the root options, if any."""
    words = iter(args)
    for word in words:
        if word in ROOT_OPTIONS_WITH_VALUE:
            next(words, None)  # its value: `--server=URL` is one word and skipped whole
        elif not word.startswith("-"):
            return word
    return None


def _load(app: typer.Typer, name: str | None) -> None:
    """Register on ``app`` the commands ``shoal NAME`` needs: that one, or all of them.

    Typer builds every registered command before it parses a word (a millisecond
    each), so of NAME's module only NAME itself stays registered.
    """
    module = COMMANDS.get(name) if name is not None else None
    if module is None:
        importlib.import_module("._app", __package__)
        return
    importlib.import_module(f".{module}", __package__)
    from typer.main import get_command_name

    app.registered_commands = [
        command
        for command in app.registered_commands
        if (command.name or get_command_name(getattr(command.callback, "__name__", ""))) == name
    ]
    app.registered_groups = [group for group in app.registered_groups if group.name == name]


def main() -> None:
    """Entry point of the `shoal` command."""
    name = command_name(sys.argv[1:])
    # httpx imports its own command line (click, pygments, rich.syntax) whenever
    # click is installed; the shoal command never runs it, so skip that import.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: not importable
    if name not in SERVERS:
        # A client call prints answers and serves no schema: its models need
        # not read their field docstrings (see shoal.interfaces._fielddocs)...
        from shoal.interfaces import describe_fields

        describe_fields(False)
        # ... and pydantic need not look for plugins (a scan of every installed
        # package's entry points at the first model it builds); Shoal uses none.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from ._base import app, err

    _load(app, name)
    try:
        app()  # standalone click: it always ends in SystemExit
    except SystemExit as done:
        if name in SERVERS:
            raise
        _exit_now(done.code)
    except Exception as exc:  # a bug: say so in one line, never a traceback
        if os.environ.get("SHOAL_DEBUG") == "1":
            raise
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(rerun with SHOAL_DEBUG=1 for details)"
        )
        raise SystemExit(70) from None


def _exit_now(code: object) -> NoReturn:
    """End a finished client command with ``code``, skipping the interpreter's teardown.

    Freeing every module and object one by one (pydantic's schemas, httpx,
    rich) is a tenth of a short command's time and does nothing a finished
    command needs: the output is flushed and the exit handlers run
    (``atexit``, which also runs ``weakref.finalize`` callbacks) before
    ``os._exit``. A message code, or output that cannot be flushed (a closed
    pipe), takes the ordinary way out.
    """
    if code is not None and not isinstance(code, int):
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: let Python report it as usual
        raise SystemExit(code) from None
    atexit._run_exitfuncs()
    os._exit(code or 0)
