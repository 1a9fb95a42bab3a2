"""Jinja2 templates and the filters the pages use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from shoal.interfaces import USAGE_DEFAULT_RANGE, USAGE_FINE_STEP, USAGE_RANGES, format_cpu

from ._assets import static_url

__all__ = ["fragment", "templates"]


def _age(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = int((datetime.now(UTC) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _clock(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bytes(size: int) -> str:
    """Memory for people: the largest binary unit, one decimal (``23.5Gi``)."""
    for suffix, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + suffix
    return str(size)


def _percent(part: float, whole: float) -> int:
    return 0 if whole <= 0 else min(100, round(100 * part / whole))


_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(age=_age, bytes=_bytes, clock=_clock, cpu=format_cpu, percent=_percent)
_environment.globals["static_url"] = static_url
_environment.globals.update(
    usage_ranges=USAGE_RANGES, usage_default=USAGE_DEFAULT_RANGE, usage_refresh=USAGE_FINE_STEP
)
templates = Jinja2Templates(env=_environment)


def fragment(
    request: Request, name: str, status_code: int = 200, **context: object
) -> HTMLResponse:
    """Render the fragment template ``name`` (under ``templates/f/``) with ``context``."""
    response = templates.TemplateResponse(request, f"f/{name}", context, status_code)
    assert isinstance(response, HTMLResponse)
    return response
