"""The instance page's usage charts: an instance's history as JSON, for ``static/charts.js``.

``/ui/f/instances/{namespace}/{name}/usage?range=1h`` answers the
:class:`~shoal.interfaces.UsageSeries` of the service (CPU, memory and
restarts against the instance's limits); ``range`` is one of
``USAGE_RANGES``, ``USAGE_DEFAULT_RANGE`` when absent. The page keeps the range in its URL
(``/ui/instances/NS/NAME?range=6h``), so a reload draws the same one.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shoal.interfaces import USAGE_DEFAULT_RANGE

from ._auth import ActsAs, Authenticate, Call, signed

__all__ = ["usage_routes"]


def usage_routes(service: ActsAs, authenticate: Authenticate) -> list[Route]:
    """The usage history of one instance, for viewers and up."""
    viewer = signed(service, authenticate)

    @viewer
    async def usage(call: Call) -> Response:
        namespace, name = call.request.path_params["namespace"], call.request.path_params["name"]
        span = call.request.query_params.get("range", USAGE_DEFAULT_RANGE)
        series = await call.service.usage("instance", name, namespace, range=span)
        return JSONResponse(series.model_dump(mode="json"), headers={"cache-control": "no-store"})

    return [Route("/ui/f/instances/{namespace}/{name}/usage", usage)]
