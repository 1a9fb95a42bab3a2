"""`shoal keys` and `shoal agent`: the local key pair, and running a node."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

# Light on purpose: every `shoal` command imports this module to register
# `agent` and `keys`; the node, the key files and anyio load when those run.
from shoal.interfaces import InvalidInput, NodeRole, ShoalError

from ._base import app, err, fail, keys_app, out, run, settings

# --- keys ----------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    key_id: Annotated[str | None, typer.Option(help="Key id [default: user@host].")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create your ed25519 key pair (mode 0600) under $SHOAL_HOME."""
    from shoal.client import default_home, init_keypair

    home = settings.home or default_home()
    try:
        pair = init_keypair(home, key_id, force=force)
    except ShoalError as exc:
        fail(exc.message)
    out.print(f"created key {pair.key_id} in {home}")
    line = f"operator {pair.public_line}"
    out.print(
        f"authorize it on a server: echo '{line}' >> <data-dir>/authorized_keys", markup=False
    )


@keys_app.command("show")
def keys_show() -> None:
    """Print your key id and public key (an authorized_keys line without its role)."""
    from shoal.client import default_home, load_keypair

    try:
        pair = load_keypair(settings.home or default_home())
    except ShoalError as exc:
        fail(exc.message)
    out.print(pair.public_line, markup=False, highlight=False)


@keys_app.command("authorize")
def keys_authorize(
    key_id: Annotated[str, typer.Argument(help="The key id, e.g. browser-1f2e3d4c5b6a7980.")],
    public_key: Annotated[str, typer.Argument(help="Its ed25519 public key, base64.")],
    role: Annotated[
        str, typer.Option(help="What it may do: viewer, operator or admin.")
    ] = "viewer",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The agent's data dir [default: ~/.local/share/shoal]."),
    ] = None,
) -> None:
    """Authorize a key (a browser's, a colleague's) on this server node.

    Appends ``ROLE KEY-ID PUBLIC-KEY`` to <data-dir>/authorized_keys; a running
    agent picks the change up at its next request.
    """
    from shoal.client import AUTHORIZED_KEYS_FILE, authorize_key

    path = (data_dir or DEFAULT_DATA_DIR) / AUTHORIZED_KEYS_FILE
    try:
        added = authorize_key(path.parent, role, key_id, public_key)
    except ShoalError as exc:
        fail(exc.message)
    if added:
        out.print(f"authorized {key_id} as {role} in {path}", markup=False)
    else:
        out.print(f"{key_id} is already authorized as {role} in {path}", markup=False)


@keys_app.command("enrol-code")
def keys_enrol_code(
    role: Annotated[
        str, typer.Option(help="The role the enrolled key gets: viewer, operator or admin.")
    ] = "viewer",
    minutes: Annotated[int, typer.Option(help="How long the code is valid.", min=1)] = 15,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The agent's data dir [default: ~/.local/share/shoal]."),
    ] = None,
) -> None:
    """Make a one-time code that enrols one browser on this server node's dashboard."""
    from shoal.client import create_enrolment_code
    from shoal.interfaces import Role

    try:
        code = create_enrolment_code(data_dir or DEFAULT_DATA_DIR, Role(role), minutes * 60)
    except ValueError:
        fail(f"unknown role {role!r}; use viewer, operator or admin")
    except ShoalError as exc:
        fail(exc.message)
    out.print(code, markup=False, highlight=False)
    err.print(
        f"one-time enrolment code for role {role}, valid {minutes} min: enter it on the "
        "dashboard's enrolment panel (/ui)",
        markup=False,
    )


# --- agent ---------------------------------------------------------------


DEFAULT_DATA_DIR = Path.home() / ".local/share/shoal"


class StateChoice(StrEnum):
    """State backends."""

    SQLITE = "sqlite"
    MEMORY = "memory"
    ETCD = "etcd"


class GossipProfile(StrEnum):
    """Serf timing profiles: how fast failures are detected, for which network."""

    LOCAL = "local"
    LAN = "lan"
    WAN = "wan"


class RuntimeChoice(StrEnum):
    """Container runtimes."""

    RUNC = "runc"
    CRUN = "crun"
    YOUKI = "youki"
    CRI = "cri"
    MOCK = "mock"


class LogFormat(StrEnum):
    """How the agent writes its log lines to stderr."""

    TEXT = "text"
    JSON = "json"


class NetworkChoice(StrEnum):
    """Pod networking of OCI runtimes."""

    BRIDGE = "bridge"
    HOST = "host"


def _addresses(values: list[str]) -> list[str]:
    """Split repeated and comma-separated address options into one list."""
    return [a.strip() for value in values for a in value.split(",") if a.strip()]


def _labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label {value!r} is not KEY=VALUE")
        labels[key] = val
    return labels


@app.command()
def agent(
    data_dir: Annotated[
        Path, typer.Option(help="Where state, node key and authorized_keys live.")
    ] = DEFAULT_DATA_DIR,
    api_addr: Annotated[
        str | None,
        typer.Option(
            help="REST API listen address [default: 127.0.0.1:7070] (servers only: a worker "
            "serves no API)."
        ),
    ] = None,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            help="Also serve GET /metrics alone at HOST:PORT (a worker serves no API: its "
            "metrics are scraped here)."
        ),
    ] = None,
    runtime: Annotated[
        RuntimeChoice,
        typer.Option(
            help="Container runtime: runc, crun, youki, cri (--cri-endpoint); mock runs nothing."
        ),
    ] = RuntimeChoice.RUNC,
    cri_endpoint: Annotated[
        str, typer.Option(help="The CRI v1 socket of --runtime cri (containerd's by default).")
    ] = "unix:///run/containerd/containerd.sock",
    network: Annotated[
        NetworkChoice, typer.Option(help="Pod networking: CNI bridge or the host's.")
    ] = NetworkChoice.BRIDGE,
    registry: Annotated[
        str | None, typer.Option(help="Default registry host[:port] for unqualified images.")
    ] = None,
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option(
            help="Registry HOST[:PORT] spoken to over plain HTTP, on a trusted network only "
            "(repeatable; loopback registries always are)."
        ),
    ] = None,
    registry_ca: Annotated[
        Path | None,
        typer.Option(help="PEM file of a private CA that registries' certificates chain to."),
    ] = None,
    bridge: Annotated[
        str | None,
        typer.Option(
            help="CNI bridge name [default: the data dir's own, else the first free shoalN]."
        ),
    ] = None,
    bridge_subnet: Annotated[
        str | None,
        typer.Option(
            help="CNI bridge subnet [default: the data dir's own, else the first free "
            "198.18.N.0/24]."
        ),
    ] = None,
    state: Annotated[StateChoice, typer.Option(help="State store.")] = StateChoice.SQLITE,
    name: Annotated[str | None, typer.Option(help="Node name [default: host name].")] = None,
    role: Annotated[NodeRole, typer.Option(help="server, worker or both.")] = NodeRole.BOTH,
    label: Annotated[
        list[str] | None, typer.Option(help="Node label KEY=VALUE (repeatable).")
    ] = None,
    allow_host_paths: Annotated[
        bool,
        typer.Option(
            "--allow-host-paths", help="Let workloads mount paths of this machine (host_path)."
        ),
    ] = False,
    etcd: Annotated[
        list[str] | None,
        typer.Option(help="etcd endpoint HOST:PORT for --state etcd (repeatable or a,b,c)."),
    ] = None,
    etcd_prefix: Annotated[
        str, typer.Option(help="Key prefix in etcd: one per cluster sharing an etcd.")
    ] = "/shoal",
    rotate_secrets_key: Annotated[
        bool,
        typer.Option(
            "--rotate-secrets-key",
            help="At start, seal every Secret with a new key of the keyring (old keys kept).",
        ),
    ] = False,
    secrets_keyring: Annotated[
        Path | None,
        typer.Option(
            help="Keyring sealing Secrets at rest (default DATA_DIR/secrets.keyring); "
            "servers sharing etcd need the same one."
        ),
    ] = None,
    join_token_file: Annotated[
        Path | None,
        typer.Option(
            help="The cluster's join token (from `shoal cluster init`); clusters the node."
        ),
    ] = None,
    gossip_key_file: Annotated[
        Path | None, typer.Option(help="The cluster's Serf gossip key (from `shoal cluster init`).")
    ] = None,
    bind: Annotated[
        str | None, typer.Option(help="Gossip address HOST[:PORT] [default: 127.0.0.1:7946].")
    ] = None,
    grpc_addr: Annotated[
        str | None,
        typer.Option(help="Node-to-node gRPC address [default: the bind host, port 7947]."),
    ] = None,
    join: Annotated[
        list[str] | None,
        typer.Option(help="Serf address of a node in the cluster (repeatable or a,b,c)."),
    ] = None,
    gossip_profile: Annotated[
        GossipProfile | None,
        typer.Option(help="Serf timing [default: local on loopback, else lan]."),
    ] = None,
    manifests: Annotated[
        list[Path] | None,
        typer.Option(
            help="Directory of manifests (Kubernetes' or Shoal's) to apply and keep applied: "
            "changed files are applied, removed objects pruned (repeatable; `shoal manifests`)."
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="Log lines as text, or as JSON lines (with trace and span ids inside a span)."
        ),
    ] = LogFormat.TEXT,
) -> None:
    """Run a Shoal node until SIGTERM or Ctrl-C: control loop and API, node loop, or both.

    Alone it runs one machine. With --join-token-file and --gossip-key-file it
    joins a cluster (Serf gossip, node-to-node gRPC); see docs/cluster.md.
    """
    # The node and its front doors load here, not when any `shoal` command starts.
    import functools
    import logging
    import signal

    import anyio

    from shoal.agent import NodeConfig, ShoalNode, configure_logging, run_agent
    from shoal.client import default_home
    from shoal.mcp import mcp_mount

    configure_logging(os.environ.get("SHOAL_LOG_LEVEL", "INFO"), log_format.value)
    if api_addr is not None and role == NodeRole.WORKER:  # not dropped in silence
        fail(
            "--api-addr: a worker serves no REST API (commands go to a server's): leave it "
            "out; --metrics-addr serves the worker's GET /metrics"
        )
    try:
        fields: dict[str, Any] = {
            "data_dir": data_dir,
            "metrics_addr": metrics_addr,
            "runtime": runtime.value,
            "cri_endpoint": cri_endpoint,
            "network": network.value,
            "default_registry": registry,
            "insecure_registries": insecure_registry or [],
            "registry_ca": registry_ca,
            "bridge": bridge,
            "bridge_subnet": bridge_subnet,
            "state": state.value,
            "role": role,
            "labels": _labels(label or []),
            "allow_host_paths": allow_host_paths,
            "etcd": _addresses(etcd or []),
            "etcd_prefix": etcd_prefix,
            "secrets_keyring": secrets_keyring,
            "rotate_secrets_key": rotate_secrets_key,
            "join_token_file": join_token_file,
            "gossip_key_file": gossip_key_file,
            "bind": bind,
            "grpc_addr": grpc_addr,
            "join": _addresses(join or []),
            "gossip_profile": None if gossip_profile is None else gossip_profile.value,
            "manifests": manifests or [],
        }
        if name:
            fields["name"] = name
        if api_addr is not None:
            fields["api_addr"] = api_addr
        config = NodeConfig(**fields)
    except ShoalError as exc:
        fail(exc.message)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            serve = functools.partial(run_agent, mounts=[mcp_mount()])
            node: ShoalNode = await tg.start(serve, config, settings.home or default_home())
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logging.getLogger("shoal.agent").info(
                        "%s: shutting down", signal.Signals(signum).name
                    )
                    # Leave, or finish deleting, while the node runs: once
                    # cancelled it can neither announce a leave nor stop a pod.
                    await node.shutdown()
                    tg.cancel_scope.cancel()
                    return

    run(main)
