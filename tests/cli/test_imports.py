"""What the `shoal` command imports: no server side, no unused models, no httpx CLI.

A command's start-up time is mostly imports, so this checks the imports
themselves rather than timing anything: a fresh interpreter runs the real
entry point (``shoal.cli.main``) for ``--help`` and for ``get workloads``
against a server that is not there, then reports ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shoal.client import init_keypair

SERVER_SIDE = (
    "fastapi",
    "starlette",
    "uvicorn",
    "mcp",
    "shoal.api",
    "shoal.agent",
    "shoal.core",
    "shoal.state",
    "shoal.runtime",
    "shoal.cluster",
    "shoal.mcp",
    "grpc",
)
"""Never on a client command's path."""

_REPORT = """
import atexit, json, sys


@atexit.register  # the entry point ends a client command with os._exit, after exit handlers
def report():
    sys.stdout.flush()
    modules = sorted(name for name, module in sys.modules.items() if module is not None)
    if "shoal.interfaces._fielddocs" in sys.modules:
        from shoal.interfaces import fields_described
        modules.append(f"fields_described={fields_described()}")
    print("\\nMODULES " + json.dumps(modules), file=sys.stderr, flush=True)


from shoal.cli import main
main()
"""


def imported(
    tmp_path: Path,
    *args: str,
    home: Path | None = None,
    server: str = "http://127.0.0.1:9",
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``shoal ARGS`` in a fresh interpreter; return the modules it imported, and the run.

    Against ``server`` (by default a port nothing answers on) with the key under
    ``home`` (by default a new one).
    """
    if home is None:
        home = tmp_path / "home"
        init_keypair(home, "test@imports")
    env = {"SHOAL_HOME": str(home), "SHOAL_SERVER": server, "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _REPORT, *args], env=env, capture_output=True, text=True, timeout=60
    )
    line = done.stderr.rpartition("MODULES ")[2]
    assert line, f"shoal {' '.join(args)} reported no modules:\n{done.stderr}"
    return set(json.loads(line)), done


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Return which of ``names`` (or their submodules) are in ``modules``."""
    return sorted(m for m in modules for n in names if m == n or m.startswith(f"{n}."))


def test_help_loads_no_server_side_no_client_and_no_models(tmp_path: Path) -> None:
    modules, done = imported(tmp_path, "--help")
    assert "List workloads, instances, nodes, or Kubernetes kinds." in done.stdout
    assert loaded(modules, SERVER_SIDE) == []
    client = ("httpx", "httpcore", "shoal.client._client", "shoal.client._signer")
    assert loaded(modules, client) == []
    assert loaded(modules, ("shoal.interfaces._workload", "shoal.interfaces._service")) == []
    # Plain help: typer's rich help loads rich's markdown and syntax modules.
    assert loaded(modules, ("pydantic", "rich", "anyio", "nacl")) == []


def test_get_workloads_loads_the_client_and_nothing_of_the_server(tmp_path: Path) -> None:
    modules, done = imported(tmp_path, "get", "workloads")
    assert "cannot reach the shoal server at http://127.0.0.1:9" in done.stderr
    assert loaded(modules, SERVER_SIDE) == []
    # httpx imports its own CLI (click, pygments) when click is installed.
    assert loaded(modules, ("httpx._main", "click", "pygments")) == []
    # Models of other objects are neither imported nor built.
    others = ("_store", "_runtime", "_scheduler", "_cluster", "_service", "_documents")
    assert loaded(modules, tuple(f"shoal.interfaces.{m}" for m in others)) == []
    assert "yaml" not in modules  # for -o yaml and apply only
    # It prints the server's JSON: no model is built, and pydantic is not even imported
    # (tests/cli/test_get.py checks the same of a listing that succeeds).
    assert loaded(modules, ("pydantic", "pydantic_core")) == []
    # Only the module that registers `get` (and the Kubernetes kinds' lister it
    # calls) is imported: no other command is imported or built.
    commands = sorted(m for m in modules if m.startswith("shoal.cli._cmd_"))
    assert commands == ["shoal.cli._cmd_config", "shoal.cli._cmd_workloads"]
    assert "shoal.cli._app" not in modules
    # A client serves no schema: its models skip reading their field docstrings.
    assert "fields_described=False" in modules


def test_the_commands_that_serve_schemas_keep_the_field_descriptions(tmp_path: Path) -> None:
    for args in (("agent", "--help"), ("--server", "http://127.0.0.1:9", "mcp", "--help")):
        modules, _ = imported(tmp_path / args[0], *args)
        assert "fields_described=False" not in modules, args
