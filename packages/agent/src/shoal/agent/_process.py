"""The agent process: a node's loops and its REST API in one task group.

Start-up checks come first and fail with a clear error before anything runs:
the API address must be free, the data dir writable, the authorized_keys
file valid (created on first start, authorizing the local user as admin).

Other front doors join the agent through ``mounts``
(:data:`~shoal.core.AgentMount`, the contract in :mod:`shoal.core._hosting`):
``shoal.mcp`` mounts the MCP endpoint at ``/mcp``. Every server node also
serves the web dashboard (``shoal.ui``) at ``/ui``, its signed requests checked
by the same verifier (and replay cache) as the REST API's.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nacl.signing import VerifyKey
from starlette.types import ASGIApp

from shoal.api import (
    RequestVerifier,
    bind,
    create_app,
    metrics_app,
    parse_addr,
    serve_api,
    target_uri_from_scope,
)
from shoal.client import (
    AUTHORIZED_KEYS_FILE,
    AuthorizedKeys,
    ensure_authorized_keys,
    load_authorized_keys,
    parse_authorized_keys,
    redeem_enrolment_code,
)
from shoal.core import AgentContext, AgentMount
from shoal.interfaces import Caller, InvalidInput, NodeRole, Role, ShoalError, Unavailable
from shoal.ui import Authenticate, Enrol, ui_mount

from ._config import NodeConfig
from ._gc import tune_gc
from ._node import ShoalNode, build_node
from ._statusz import statusz_source

__all__ = ["AuthorizedKeysFile", "run_agent"]

log = logging.getLogger("shoal.agent")


class AuthorizedKeysFile:
    """authorized_keys that follows edits of its file: reloaded when its mtime changes.

    A bad line is skipped and logged with its line number and the fix, while
    the file's valid lines take effect; an edit that cannot be read at all (the
    file removed, or made writable by others) or that leaves no valid key is
    logged and the last keys stay in force, so a typo cannot lock every client
    out of a running agent.
    """

    def __init__(self, path: Path, keys: AuthorizedKeys) -> None:
        self.path = path
        self.keys = keys
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def lookup(self, key_id: str) -> tuple[Role, VerifyKey] | None:
        """Return ``(role, public key)`` for ``key_id`` from the file as it is now."""
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                keys = load_authorized_keys(self.path)
                log_skipped_lines(keys)
                if keys.problems and not keys:
                    log.error(
                        "ignoring the edit of %s, which leaves no valid key: keeping the "
                        "previous keys",
                        self.path,
                    )
                else:
                    self.keys = keys
                    log.info("reloaded %s: %d key(s)", self.path, len(self.keys))
            except ShoalError as exc:
                log.error("ignoring the edit of %s, keeping the previous keys: %s", self.path, exc)
        return self.keys.lookup(key_id)


def log_skipped_lines(keys: AuthorizedKeys) -> None:
    """Log each line of authorized_keys that was skipped, with its number and the fix."""
    for problem in keys.problems:
        log.error("skipped a line of authorized_keys: %s", problem.message)


def ui_authenticate(verifier: RequestVerifier) -> Authenticate:
    """Check the dashboard's signed requests with the REST API's verifier."""

    def authenticate(scope: Mapping[str, Any], body: bytes) -> Caller:
        target = target_uri_from_scope(scope)
        return verifier.verify(str(scope["method"]), target, scope["headers"], body)

    return authenticate


def ui_enrol(data_dir: Path) -> Enrol:
    """Redeem the dashboard's one-time enrolment codes (``shoal keys enrol-code``).

    The request must be signed by the key it enrols, so a code only ever
    authorizes the key of whoever holds it.
    """

    def enrol(scope: Mapping[str, Any], body: bytes) -> Caller:
        try:
            fields = json.loads(body)
            code, key_id, public_key = (str(fields[k]) for k in ("code", "key_id", "public_key"))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput('send {"code", "key_id", "public_key"} as a JSON object') from exc
        key = parse_authorized_keys(f"{Role.VIEWER.value} {key_id} {public_key}", "the key")
        if key.problems:
            raise InvalidInput(key.problems[0].message)
        holder = RequestVerifier(key.lookup)
        holder.verify(str(scope["method"]), target_uri_from_scope(scope), scope["headers"], body)
        return Caller(key_id, redeem_enrolment_code(data_dir, code, key_id, public_key))

    return enrol


@asynccontextmanager
async def _mounted(
    mounts: Sequence[AgentMount], context: AgentContext
) -> AsyncIterator[list[tuple[str, ASGIApp]]]:
    # Nested `async with` rather than an AsyncExitStack, for the reason in
    # shoal.agent.ShoalNode.run.
    if not mounts:
        yield []
        return
    async with mounts[0](context) as first, _mounted(mounts[1:], context) as rest:
        yield [first, *rest]


async def run_agent(
    config: NodeConfig,
    home: Path,
    *,
    mounts: Sequence[AgentMount] = (),
    task_status: TaskStatus[ShoalNode] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node and its API (with ``mounts`` served beside it) until cancelled.

    A worker serves no API: it has no store of its own (it reaches the
    cluster state through a server), so operators use a server's API. With
    ``config.metrics_addr``, any node also serves ``GET /metrics`` alone there
    (how a worker is scraped).

    Raises:
        Unavailable: the API address is taken, or the data dir is not writable.
        InvalidInput: authorized_keys or the local key pair is invalid.
    """
    if config.role == NodeRole.WORKER:
        await _run_worker(config, task_status=task_status)
        return
    sock = bind(config.api_addr)
    metrics_sock: socket.socket | None = None
    try:
        host = config.api_addr.rpartition(":")[0]
        config = config.model_copy(update={"api_addr": f"{host}:{sock.getsockname()[1]}"})
        config, metrics_sock = _bind_metrics(config)
        node = build_node(config)
        tune_gc()  # after the node's parts exist: they are frozen, never scanned again
        data_dir = config.data_dir
        keys, created = ensure_authorized_keys(data_dir, home)
    except BaseException:
        sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        raise
    path = data_dir / AUTHORIZED_KEYS_FILE
    if created:
        (key_id,) = list(keys)
        log.warning(
            "no %s found: created it, authorizing your key %r (from %s) as admin",
            path,
            key_id,
            home,
        )
    log_skipped_lines(keys)
    lookup = AuthorizedKeysFile(path, keys).lookup
    verifier = RequestVerifier(lookup)
    ui = ui_mount(
        ui_authenticate(verifier),
        ui_enrol(data_dir),
        statusz_source(config, node.store, node.clock, node.metrics),
    )
    mounts = [*mounts, ui]

    async def ready() -> str | None:
        if not node.ready.is_set():
            return "starting"
        try:
            await node.store.revision()
        except ShoalError as exc:
            return exc.message
        return None

    api_host, _ = parse_addr(config.api_addr)
    context = AgentContext(node.service, lookup, config.api_addr, api_host, node.metrics)
    async with _mounted(mounts, context) as routes, anyio.create_task_group() as tg:
        app = create_app(
            node.service,
            verifier,
            ready=ready,
            mounts=routes,
            metrics=node.metrics,
            statusz=statusz_source(config, node.store, node.clock, node.metrics),
        )
        await tg.start(node.run)
        await tg.start(serve_api, app, sock)
        if metrics_sock is not None:
            await tg.start(serve_api, metrics_app(node.metrics), metrics_sock)
        log.info(
            "shoal agent %s ready: API on http://%s, data in %s, runtime %s, state %s",
            config.name,
            config.api_addr,
            data_dir,
            node.runtime.name,
            config.state,
        )
        task_status.started(node)


def _bind_metrics(config: NodeConfig) -> tuple[NodeConfig, socket.socket | None]:
    """Bind ``config.metrics_addr`` if set; return the config with the port bound (for :0).

    Raises:
        Unavailable: the address is taken or not this machine's.
    """
    if config.metrics_addr is None:
        return config, None
    if config.role != NodeRole.WORKER and config.metrics_addr == config.api_addr:
        raise Unavailable(
            f"--metrics-addr {config.metrics_addr} is the API's own address: the API serves "
            "GET /metrics already; leave --metrics-addr out, or give it another port"
        )
    sock = bind(config.metrics_addr, "--metrics-addr")
    host = config.metrics_addr.rpartition(":")[0]
    return config.model_copy(update={"metrics_addr": f"{host}:{sock.getsockname()[1]}"}), sock


async def _run_worker(
    config: NodeConfig, *, task_status: TaskStatus[ShoalNode] = anyio.TASK_STATUS_IGNORED
) -> None:
    config, metrics_sock = _bind_metrics(config)
    try:
        node = build_node(config)
    except BaseException:
        if metrics_sock is not None:
            metrics_sock.close()
        raise
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        if metrics_sock is not None:
            await tg.start(serve_api, metrics_app(node.metrics), metrics_sock)
            log.info("metrics of %s on http://%s/metrics", config.name, config.metrics_addr)
        log.info(
            "shoal worker %s ready: data in %s, runtime %s; no API on workers, use a server's",
            config.name,
            config.data_dir,
            node.runtime.name,
        )
        task_status.started(node)
