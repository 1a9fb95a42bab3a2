"""The `shoal` command's shared parts: the typer apps, consoles, settings and error handling.

Every command but `agent`, `cluster`, `keys`, `mcp` and `token` talks to a server over the
signed REST API only. Errors print one line — what was wrong and what to do —
and exit non-zero; a traceback reaches the terminal only with SHOAL_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import typer

from shoal.client import DEFAULT_SERVER

if TYPE_CHECKING:
    from rich.console import Console

    from shoal.client import ShoalClient
    from shoal.interfaces import ShoalError

T = TypeVar("T")

# Help is plain text (rich_markup_mode=None): typer's rich help loads rich's
# markdown, syntax and traceback modules, a third of a second of `shoal --help`.
app = typer.Typer(
    name="shoal",
    help="Shoal: run containers on one machine or many. Talks to a shoal agent over signed HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
keys_app = typer.Typer(
    help="Manage your ed25519 signing key.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(keys_app, name="keys")
images_app = typer.Typer(
    help="Manage the images of the server's node.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(images_app, name="images")
token_app = typer.Typer(
    help="Bearer tokens for the agent's MCP endpoint (/mcp).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(token_app, name="token")
cluster_app = typer.Typer(
    help="Create a cluster's shared secrets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(cluster_app, name="cluster")


class _LazyConsole:
    """A rich Console made on first use: `shoal --help` never loads rich."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def resolve(self) -> Console:
        """Return the Console itself, made now if need be."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)


def real_console(console: Console) -> Console:
    """Return the rich Console behind ``out`` or ``err``, for APIs that take the object itself.

    rich's ``Progress`` enters its console as a context manager and checks its
    type, which a stand-in cannot do.
    """
    return cast("_LazyConsole", console).resolve() if isinstance(console, _LazyConsole) else console


# Piped output gets wide lines rather than rich's 80-column default. Neither
# console turns :name: into an emoji: names and messages print as they are
# (and rich's emoji table, a tenth of its import, stays unloaded).
out = cast("Console", _LazyConsole(width=None if sys.stdout.isatty() else 200, emoji=False))
# An error is one line, however long: never wrapped.
err = cast("Console", _LazyConsole(stderr=True, soft_wrap=True, emoji=False))


class _Settings:
    server: str = DEFAULT_SERVER
    home: Path | None = None


settings = _Settings()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit."""
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def run(call: Callable[[], Awaitable[T]], error_code: int = 1) -> T:
    """Run ``call`` on anyio, turning every ShoalError into one clear line (exit ``error_code``)."""
    import anyio

    from shoal.interfaces import ShoalError

    try:
        return anyio.run(call)
    except ShoalError as exc:
        fail(exc.message, error_code)
    except BaseExceptionGroup as group:  # raised out of a task group
        first = _first_shoal_error(group)
        if first is None:
            raise
        fail(first.message, error_code)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _first_shoal_error(group: BaseExceptionGroup[BaseException]) -> ShoalError | None:
    from shoal.interfaces import ShoalError

    for exc in group.exceptions:
        if isinstance(exc, ShoalError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_shoal_error(exc)
            if found is not None:
                return found
    return None


def client() -> ShoalClient:
    """Return a signed client for the configured server.

    It sends the ``TRACEPARENT`` environment variable (the convention of CI
    systems and otel-cli) as the W3C ``traceparent``: an admin's calls then
    join that trace.
    """
    from shoal.client import ShoalClient, default_home, load_keypair

    server = checked_server(settings.server)
    keypair = load_keypair(settings.home or default_home())
    traceparent = os.environ.get("TRACEPARENT", "").strip() or None
    return ShoalClient(server, keypair, traceparent=traceparent)


def checked_server(server: str) -> str:
    """Return ``server`` (--server, SHOAL_SERVER) if it is http(s)://HOST[:PORT]; else fail."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as exc:
        problem: str | None = str(exc)
    else:
        problem = None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "it needs the scheme and the host"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "it names a path or a query; give the agent's address only"
    if problem is not None:
        fail(
            f"--server/SHOAL_SERVER {server!r} is not a URL like http://127.0.0.1:7070 ({problem})",
            2,
        )
    return server.rstrip("/")


async def with_client(use: Callable[[ShoalClient], Awaitable[T]]) -> T:
    """Run ``use`` with a client that is closed afterwards."""
    async with client() as shoal:
        return await use(shoal)


@app.callback()
def options(
    server: Annotated[
        str, typer.Option(envvar="SHOAL_SERVER", help="Server URL.")
    ] = DEFAULT_SERVER,
    home: Annotated[
        Path | None,
        typer.Option(envvar="SHOAL_HOME", help="Where your key lives [default: ~/.config/shoal]."),
    ] = None,
) -> None:
    """Shoal: run containers on one machine or many."""
    settings.server = server
    settings.home = home
