"""docker-compose.yml and the Dockerfile: a 3-node cluster that the real `shoal` CLI accepts.

These checks need no Docker engine (tests/e2e/test_compose_cluster.py runs
the cluster for real). Every service's command is parsed by the real CLI without running it (click
raises on an unknown option or a bad choice), and the wiring between the
services — roles, secrets, published ports, data volumes, bridges, the join
address, the image's EXPOSE — is read from the file itself.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

# The locked typer carries its own copy of click: its commands, contexts and
# errors are these classes, not the click package's.
from typer._click.exceptions import BadParameter, NoSuchOption, UsageError
from typer.core import TyperGroup

from shoal.cli._app import app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENTRYPOINT_SCRIPT = (ROOT / "docker/entrypoint.sh").read_text()

API_PORT, GOSSIP_PORT, GRPC_PORT = 7070, 7946, 7947
"""The agent's default ports: REST API, Serf gossip (tcp and udp), node-to-node gRPC."""
CLUSTER_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
"""The only range bridge networks of tests and demos may use."""


def parse_shoal(args: list[str]) -> dict[str, Any]:
    """Parse ``shoal ARGS`` with the real CLI, running nothing; return the command's params.

    Raises:
        UsageError: an unknown command or option, a bad choice, a missing value.
    """
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    name, *rest = args
    command = root.commands.get(name)
    if command is None:
        raise UsageError(f"no such command {name!r}")
    with command.make_context(f"shoal {name}", rest, resilient_parsing=False) as ctx:
        return dict(ctx.params)


def options(service: str) -> dict[str, list[str]]:
    """Read a service's ``--option value`` / ``--option=value`` pairs without the CLI."""
    command: list[str] = SERVICES[service]["command"]
    found: dict[str, list[str]] = {}
    tokens = iter(command[1:])
    for token in tokens:
        assert token.startswith("--"), f"{service}: stray argument {token!r}"
        name, sep, value = token.partition("=")
        found.setdefault(name, []).append(value if sep else next(tokens))
    return found


def option(service: str, name: str, default: str | None = None) -> str | None:
    """Return the last value a service gives ``name``, or ``default``."""
    return options(service).get(name, [default])[-1]


def port_of(address: str | None, default: int) -> int:
    """Return the port of ``HOST[:PORT]``, or ``default`` without one."""
    if address is None:
        return default
    _host, sep, port = address.rpartition(":")
    return int(port) if sep else default


def role(service: str) -> str | None:
    return option(service, "--role", "both")


def workers() -> list[str]:
    return [name for name in SERVICES if role(name) == "worker"]


def test_three_services_one_server_and_two_workers() -> None:
    assert len(SERVICES) == 3
    assert sorted(role(name) or "" for name in SERVICES) == ["server", "worker", "worker"]
    for name, service in SERVICES.items():
        assert service["command"][0] == "agent", f"{name} does not run `shoal agent`"


def test_compose_v1_and_v2_both_accept_the_file_and_name_the_project_shoal() -> None:
    # docker-compose 1.29 (Debian bookworm's) refuses a top-level `name:`; both
    # read COMPOSE_PROJECT_NAME from the .env beside the file.
    assert set(COMPOSE) <= {"services", "secrets", "volumes", "networks"} | {
        key for key in COMPOSE if key.startswith("x-")
    }
    dotenv = (ROOT / ".env").read_text().splitlines()
    assert "COMPOSE_PROJECT_NAME=shoal" in dotenv


def test_workers_get_what_runc_needs_and_no_more() -> None:
    # Not `privileged`: it asks for every capability, and a host whose bounding
    # set lacks one (CAP_SYS_RESOURCE here) cannot start the container at all.
    for name in workers():
        service = SERVICES[name]
        assert "privileged" not in service, f"{name}: privileged"
        assert set(service["cap_add"]) == {"SYS_ADMIN", "NET_ADMIN"}, name
        assert service["security_opt"] == ["seccomp=unconfined"], name
        # A killed worker's netns files must not survive into its next start.
        assert "/run" in service["tmpfs"], name
    for name in set(SERVICES) - set(workers()):
        assert not {"privileged", "cap_add", "security_opt"} & set(SERVICES[name]), name


def test_the_command_check_rejects_unknown_options_and_bad_choices() -> None:
    assert parse_shoal(["agent", "--runtime", "mock"])["runtime"] == "mock"
    with pytest.raises(NoSuchOption):
        parse_shoal(["agent", "--no-such-option", "x"])
    with pytest.raises(BadParameter):
        parse_shoal(["agent", "--role", "leader"])
    with pytest.raises(UsageError):
        parse_shoal(["no-such-command"])


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_command_is_a_valid_shoal_invocation(service: str) -> None:
    """Needs the clustering flags (--bind, --join, --join-token-file, ...) in the CLI."""
    command: list[str] = SERVICES[service]["command"]
    assert isinstance(command, list), f"{service}: give command in list form"
    params = parse_shoal(command)
    assert str(params["role"]) == role(service)


def test_every_node_has_its_own_stable_name() -> None:
    # The node name defaults to the host name, which compose would otherwise
    # make the container id: new on every re-creation of the container.
    names = [option(name, "--name") or SERVICES[name].get("hostname") for name in SERVICES]
    assert None not in names
    assert len(set(names)) == len(names)


def test_every_node_clusters_with_secrets_compose_provides() -> None:
    declared: dict[str, Any] = COMPOSE.get("secrets", {})
    # The files `shoal cluster init --out cluster-secrets` writes.
    files = {spec["file"].removeprefix("./") for spec in declared.values()}
    assert files == {"cluster-secrets/join-token", "cluster-secrets/gossip-key"}
    for name, service in SERVICES.items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert mounted <= set(declared), f"{name} uses undeclared secrets"
        # Without both files the agent runs alone, silently not clustered.
        for flag in ("--join-token-file", "--gossip-key-file"):
            path = option(name, flag)
            assert path is not None, f"{name} lacks {flag}"
            secret = path.removeprefix("/run/secrets/")
            assert secret in mounted, f"{name}: {flag} {path} is not a secret it mounts"


def test_workers_join_the_servers_gossip_address() -> None:
    for name in workers():
        joins = [a for value in options(name).get("--join", []) for a in value.split(",")]
        assert joins, f"{name} joins nobody"
        for address in joins:
            host, _, port = address.rpartition(":")
            assert host in SERVICES, f"{name} joins {address}, not a compose service"
            assert role(host) in ("server", "both")
            assert int(port) == port_of(option(host, "--bind"), GOSSIP_PORT)


def published(service: str) -> list[tuple[str, int, int, str]]:
    """Return (host ip, host port, container port, protocol) of a service's published ports."""
    ports: list[tuple[str, int, int, str]] = []
    for entry in SERVICES[service].get("ports", []):
        if isinstance(entry, dict):
            host_ip, host, target = entry.get("host_ip", ""), entry["published"], entry["target"]
            protocol = entry.get("protocol", "tcp")
        else:
            match = re.fullmatch(r"(?:(.+):)?(\d+):(\d+)(?:/(tcp|udp))?", str(entry))
            assert match, f"{service}: port {entry!r} publishes no fixed host port"
            host_ip, host, target, protocol = match.group(1, 2, 3, 4)
        ports.append((host_ip or "0.0.0.0", int(host), int(target), protocol or "tcp"))
    return ports


def test_published_host_ports_do_not_collide() -> None:
    everything = [(name, *port) for name in SERVICES for port in published(name)]
    for a, b in itertools.combinations(everything, 2):
        same_ip = a[1] == b[1] or "0.0.0.0" in (a[1], b[1])
        assert not (same_ip and a[2] == b[2] and a[4] == b[4]), f"{a[0]} and {b[0]} collide"


def test_the_server_api_is_published_on_host_port_7070() -> None:
    (server,) = (name for name in SERVICES if role(name) == "server")
    api_addr = option(server, "--api-addr")
    assert api_addr is not None and api_addr.startswith("0.0.0.0:"), "unreachable from the host"
    assert (API_PORT, port_of(api_addr, API_PORT), "tcp") in {
        (host, target, protocol) for _ip, host, target, protocol in published(server)
    }


def test_every_node_keeps_its_data_on_a_volume_of_its_own() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    sources = []
    for name, service in SERVICES.items():
        data_dir = option(name, "--data-dir")
        mounts: dict[str, str] = {}  # container path -> volume
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                mounts[volume["target"]] = volume.get("source", "")
            else:
                source, target, *_mode = str(volume).split(":")
                mounts[target] = source
        assert data_dir in mounts, f"{name}: its --data-dir is not on a volume"
        assert mounts[data_dir] in declared, f"{name}: {mounts[data_dir]} is not a named volume"
        sources.append(mounts[data_dir])
    assert len(set(sources)) == len(sources), "nodes share a data dir (and so a node key)"


def test_workers_have_their_own_bridge_and_subnet() -> None:
    names = workers()
    bridges = [option(name, "--bridge") for name in names]
    assert None not in bridges and len(set(bridges)) == len(bridges)
    subnets = []
    for name in names:
        value = option(name, "--bridge-subnet")
        assert value is not None, f"{name} lacks --bridge-subnet"
        subnet = ipaddress.IPv4Network(value)
        assert subnet.subnet_of(CLUSTER_RANGE), f"{name}: {subnet} is outside {CLUSTER_RANGE}"
        subnets.append(subnet)
    for a, b in itertools.combinations(subnets, 2):
        assert not a.overlaps(b), f"bridge subnets {a} and {b} overlap"


def dockerfile_exposes() -> set[tuple[int, str]]:
    exposed: set[tuple[int, str]] = set()
    for line in DOCKERFILE.splitlines():
        words = line.split()
        if words and words[0].upper() == "EXPOSE":
            for word in words[1:]:
                port, _, protocol = word.partition("/")
                exposed.add((int(port), protocol or "tcp"))
    return exposed


def test_the_dockerfile_exposes_the_ports_the_services_use() -> None:
    exposed = dockerfile_exposes()
    for name in SERVICES:
        gossip = port_of(option(name, "--bind"), GOSSIP_PORT)
        grpc = port_of(option(name, "--grpc-addr"), GRPC_PORT)
        used = {(gossip, "tcp"), (gossip, "udp"), (grpc, "tcp")}
        if role(name) != "worker":  # workers serve no API
            used.add((port_of(option(name, "--api-addr"), API_PORT), "tcp"))
        used |= {(target, protocol) for _ip, _host, target, protocol in published(name)}
        assert used <= exposed, f"{name} uses {sorted(used - exposed)}, not exposed"


def test_the_image_runs_the_shoal_cli() -> None:
    # The services' commands start at the subcommand: the entrypoint ends in `shoal`.
    (line,) = (ln for ln in DOCKERFILE.splitlines() if ln.startswith("ENTRYPOINT"))
    entrypoint = yaml.safe_load(line.removeprefix("ENTRYPOINT"))
    assert isinstance(entrypoint, list) and len(entrypoint) == 1
    assert f"COPY docker/entrypoint.sh {entrypoint[0]}" in DOCKERFILE
    assert ENTRYPOINT_SCRIPT.rstrip().endswith('exec shoal "$@"')
    # `docker compose exec server shoal ...` finds the CLI.
    assert re.search(r"^ENV PATH=/opt/shoal/\.venv/bin:\$PATH$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^FROM debian:bookworm-slim\b", DOCKERFILE, re.MULTILINE)


def test_the_image_installs_offline_from_the_wheelhouse() -> None:
    # No index in the build: every Python package comes from build/wheelhouse.
    installs = re.findall(r"pip install[^&]*", DOCKERFILE)
    assert installs and all("--no-index" in command for command in installs)
    assert "uv sync" not in DOCKERFILE and "pip install uv" not in DOCKERFILE
    assert "COPY build/wheelhouse" in DOCKERFILE


def test_the_build_context_holds_only_what_the_build_copies() -> None:
    ignore = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert ignore[0] == "*", ".venv, .git and cluster-secrets/ must stay out of the context"
    copied = {
        source.removesuffix("/")
        for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE)
    }
    allowed = {line.removeprefix("!").removesuffix("/") for line in ignore[1:]}
    assert all(any(c == a or c.startswith(a + "/") for a in allowed) for c in copied), copied
