"""The `shoal` entry point: which module a command loads, and how a finished command exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer.core
import typer.main

from shoal.cli import app
from shoal.cli._main import COMMANDS, ROOT_OPTIONS_WITH_VALUE, command_name
from shoal.client import init_keypair


def _module_of(command: object) -> set[str]:
    """Return the modules whose functions a click command or group runs."""
    callback = getattr(command, "callback", None)
    if callback is not None and not hasattr(command, "commands"):
        return {callback.__module__.rpartition(".")[2]}
    found: set[str] = set()
    for sub in getattr(command, "commands", {}).values():
        found |= _module_of(sub)
    return found


def test_every_command_is_loaded_from_the_module_that_registers_it() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    registered = {name: _module_of(command) for name, command in root.commands.items()}
    # A new command missing from COMMANDS still runs, but loads every module: add it.
    assert {name: {module} for name, module in COMMANDS.items()} == registered


def test_the_command_is_the_first_word_past_the_root_options() -> None:
    root = typer.main.get_command(app)
    valued = {o for p in root.params if not getattr(p, "is_flag", True) for o in p.opts}
    assert valued == ROOT_OPTIONS_WITH_VALUE  # a new root option with a value: add it there
    assert command_name(["get", "workloads"]) == "get"
    assert command_name(["--server", "http://h:1", "--home", "/k", "mcp", "--help"]) == "mcp"
    assert command_name(["--server=http://h:1", "get", "-n", "agent"]) == "get"
    assert command_name(["--help"]) is None
    assert command_name([]) is None


def _shoal(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    if not home.exists():
        init_keypair(home, "test@entry")
    env = {"SHOAL_HOME": str(home), "SHOAL_SERVER": "http://127.0.0.1:9", "PATH": "/usr/bin"}
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_finished_command_keeps_its_exit_code_and_its_whole_output(tmp_path: Path) -> None:
    help_ = _shoal(tmp_path, "--help")
    assert help_.returncode == 0
    commands = help_.stdout.partition("Commands:")[2].splitlines()
    assert {line.split()[0] for line in commands if line} == set(COMMANDS)  # help loads them all
    unreachable = _shoal(tmp_path, "get", "workloads")
    assert unreachable.returncode == 1
    assert "cannot reach the shoal server at http://127.0.0.1:9" in unreachable.stderr
    bad_kind = _shoal(tmp_path, "get", "widgets")
    assert bad_kind.returncode == 2
    assert "cannot get 'widgets'" in bad_kind.stderr
    unknown = _shoal(tmp_path, "widgets")
    assert unknown.returncode == 2
    assert "No such command 'widgets'" in unknown.stderr
    for server, why in [
        ("127.0.0.1:7070", "it needs the scheme and the host"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:7070/v1", "it names a path or a query"),
    ]:
        wrong = _shoal(tmp_path, "--server", server, "get", "workloads")
        assert wrong.returncode == 2, wrong.stderr
        assert f"--server/SHOAL_SERVER {server!r} is not a URL like http://127.0.0.1:7070" in (
            wrong.stderr
        )
        assert why in wrong.stderr and "internal error" not in wrong.stderr


def test_each_command_loaded_alone_answers_its_help(tmp_path: Path) -> None:
    for name in COMMANDS:  # the entry point keeps only NAME registered: NAME must be it
        done = _shoal(tmp_path, name, "--help")
        assert done.returncode == 0, (name, done.stderr)
        assert f"shoal.cli {name} [OPTIONS]" in done.stdout, (name, done.stdout)
