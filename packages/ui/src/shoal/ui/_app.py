"""The dashboard's ASGI app: page shells, signed fragments and actions, static files.

Routes, all under ``/ui``:

* page shells (no data, no signature): ``/ui``, ``/ui/workloads``,
  ``/ui/workloads/{namespace}/{name}``, ``/ui/instances``, ``/ui/nodes``,
  ``/ui/events``, ``/ui/apply``, ``/ui/search``, ... — each names the
  fragment the browser then fetches, signed, from ``/ui/f/<same path>``;
* fragments and actions under ``/ui/f/`` (signed; see :mod:`._fragments`
  and :mod:`._actions`), the live stream ``/ui/f/stream`` and log streams
  (:mod:`._streams`);
* ``/ui/static/`` the stylesheet, the page script and the vendored
  JavaScript with its licences, gzipped and versioned (:mod:`._assets`).

A page shell is ``shell.html``, or a template under ``templates/pages/``
extending it for a page that loads scripts of its own (``{% block
page_assets %}``: the instance page's usage charts).

Every response carries a Content-Security-Policy that allows scripts from
``/ui/static`` only (no inline script, no eval) and connections to this
origin only.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.interfaces import NotFound, ShoalError, StatuszSource

from ._actions import action_routes
from ._assets import StaticAssets
from ._auth import ActsAs, Authenticate, Enrol, error_response
from ._fragments import fragment_routes
from ._render import templates
from ._streams import stream_routes
from ._usage import usage_routes

__all__ = ["CONTENT_SECURITY_POLICY", "create_ui_app"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

_PAGES = {
    "": "Overview",
    "workloads": "Workloads",
    "instances": "Instances",
    "nodes": "Nodes",
    "events": "Events and audit",
    "manifests": "Manifests",
    "apply": "Apply",
    "search": "Search",
}


class SecurityHeaders:
    """ASGI middleware: the CSP and friends on every response of the dashboard."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    if name == "cache-control" and scope["path"].startswith("/ui/static/"):
                        continue
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


_PAGE_DEPTHS: dict[str, tuple[int, ...]] = {
    "workloads": (1, 3),
    "instances": (1, 3),
    "nodes": (1, 2),
}
"""How many path segments the pages of a section have (``workloads/NS/NAME``: 3); others 1."""


def _is_page(rest: str, raw_path: bytes) -> bool:
    """Whether ``/ui/<rest>`` is a page: a known section, as many names as its pages have.

    The page's script fetches the fragment of the same path and swaps it in as
    HTML, so nothing else may become one: not a sub-resource (an instance's logs
    are text its container wrote), not ``..``, not an encoded slash (``%2F``).
    """
    parts = rest.split("/") if rest else [""]
    section = parts[0]
    if section not in _PAGES or b"%" in raw_path or b"\\" in raw_path:
        return False
    names = parts[1:]
    return len(parts) in _PAGE_DEPTHS.get(section, (1,)) and all(
        name and name not in (".", "..") for name in names
    )


async def page(request: Request) -> Response:
    """Serve a page shell: the layout and the signed fragment its script loads."""
    rest = request.path_params.get("page", "")
    if not _is_page(rest, request.scope.get("raw_path") or b""):
        return templates.TemplateResponse(
            request, "shell.html", {"title": "Not found", "fragment": "", "section": ""}, 404
        )
    section = rest.split("/", 1)[0]
    fragment = "/ui/f/" + (rest or "overview")
    if request.url.query:
        fragment += "?" + request.url.query
    context = {"title": _PAGES[section], "fragment": fragment, "section": section}
    return templates.TemplateResponse(request, _shell_for(rest), context)


def _shell_for(rest: str) -> str:
    """The template of the page ``/ui/<rest>``: one with scripts of its own extends shell.html."""
    parts = rest.split("/")
    if len(parts) == 3 and parts[0] == "instances":
        return "pages/instance.html"
    return "shell.html"


async def to_overview(request: Request) -> Response:
    """``/ui/`` and ``/ui/overview`` are the overview at ``/ui``."""
    return RedirectResponse("/ui", status_code=307)


def enrolment(enrol: Enrol | None) -> Route:
    """``POST /ui/enrol``: redeem a one-time enrolment code for the browser's key."""

    async def redeem(request: Request) -> Response:
        try:
            if enrol is None:
                raise NotFound(
                    "this node takes no enrolment codes: ask an admin to authorize the key"
                )
            caller = enrol(request.scope, await request.body())
        except ShoalError as exc:
            return error_response(exc)
        return JSONResponse({"key_id": caller.key_id, "role": caller.role.value})

    return Route("/ui/enrol", redeem, methods=["POST"])


def create_ui_app(
    service: ActsAs,
    authenticate: Authenticate,
    enrol: Enrol | None = None,
    statusz: StatuszSource | None = None,
) -> ASGIApp:
    """Build the dashboard app for ``service``.

    Args:
        service: The node's service layer.
        authenticate: Checks signed requests.
        enrol: Redeems one-time enrolment codes (``None``: codes are refused).
        statusz: The node's status (leader, uptime, store) for the overview.
    """
    routes: list[BaseRoute] = [
        Route("/ui/static/{name:path}", StaticAssets(), methods=["GET", "HEAD"]),
        enrolment(enrol),
        *stream_routes(service, authenticate),
        *usage_routes(service, authenticate),
        *action_routes(service, authenticate),
        *fragment_routes(service, authenticate, statusz),
        Route("/ui/", to_overview),
        Route("/ui/overview", to_overview),
        Route("/ui", page),
        Route("/ui/{page:path}", page),
    ]
    return SecurityHeaders(Starlette(routes=routes))
