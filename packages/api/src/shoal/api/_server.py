"""Serve an ASGI app with uvicorn inside an anyio task group.

The listening socket is bound here, before uvicorn starts, so that a busy
port is a clear :class:`Unavailable` error instead of uvicorn's own exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Generator

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

from shoal.interfaces import InvalidInput, Unavailable

__all__ = ["bind", "parse_addr", "serve_api"]


def parse_addr(addr: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        InvalidInput: the address is not HOST:PORT with a port 0-65535.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"address {addr!r} is not HOST:PORT, e.g. 127.0.0.1:7070", address=addr)
    return host.strip("[]") or "127.0.0.1", int(port)


def bind(addr: str, flag: str = "--api-addr") -> socket.socket:
    """Bind and listen on ``addr``, which the option ``flag`` gave (errors name it).

    Raises:
        Unavailable: the port is taken or the address is not ours.
    """
    host, port = parse_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = (
            "another process (another shoal agent?) listens there: stop it or pick "
            f"another address with {flag}"
            if exc.errno == errno.EADDRINUSE
            else f"check the address with {flag}"
        )
        raise Unavailable(
            f"cannot listen on {addr}: {exc.strerror or exc}; {hint}", address=addr
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal handling (the agent owns signals), reporting startup."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_api(
    app: ASGIApp,
    sock: socket.socket,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound ``sock`` until cancelled; report the port once listening.

    Takes ownership of ``sock``: it is closed when serving ends.
    """
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    with sock:
        await _serve(server, sock, task_status)


async def _serve(server: _Server, sock: socket.socket, task_status: TaskStatus[int]) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(30):
            await server.listening.wait()
        task_status.started(sock.getsockname()[1])
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                await _close(server)


async def _close(server: _Server) -> None:
    """Close what uvicorn leaves open when cancelled (it skips its graceful shutdown).

    Its listener, keep-alive connections and event streams would otherwise
    leak their sockets, and ``with sock`` would close the descriptor under
    the listener. Closed connections end their requests as a client
    disconnect would (streams stop quietly); a request still running a
    second later is cancelled.
    """
    for listener in list(server.servers):
        listener.close()
    for connection in list(server.server_state.connections):
        connection.transport.close()
    running = set(server.server_state.tasks)
    if running:
        _, running = await asyncio.wait(running, timeout=1)
    for task in running:
        task.cancel()
