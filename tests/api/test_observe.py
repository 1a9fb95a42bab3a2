"""Request metrics: route templates (never paths), mounts by their path, unmatched requests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from shoal.agent._metrics import PrometheusMetrics
from shoal.api import RequestVerifier, create_app
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Catalogue
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio


class Hello:
    """A mounted front door (an ASGI app served at an exact path)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("hello")(scope, receive, send)


@pytest.fixture
async def metrics_and_client() -> AsyncIterator[tuple[PrometheusMetrics, httpx.AsyncClient]]:
    metrics = PrometheusMetrics()
    async with MemoryStore() as store:
        service = ShoalService(store, SystemClock())
        app = create_app(
            service, RequestVerifier(lambda key: None), mounts=[("/mcp", Hello())], metrics=metrics
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shoal") as client:
            yield metrics, client


async def test_requests_are_counted_by_template_mount_path_or_unmatched(
    metrics_and_client: tuple[PrometheusMetrics, httpx.AsyncClient],
) -> None:
    metrics, client = metrics_and_client
    assert (await client.get("/v1/instances/shop/web-12345")).status_code == 401
    assert (await client.post("/mcp")).status_code == 200
    assert (await client.get("/no/such/page")).status_code == 404

    def count(**labels: str) -> float:
        return metrics.count(Catalogue.API_REQUEST_DURATION, **labels)

    assert count(route="/v1/instances/{namespace}/{name}", method="GET", status="401") == 1
    assert count(route="/mcp", method="POST", status="200") == 1
    assert count(route="unmatched", method="GET", status="404") == 1
    scraped = (await client.get("/metrics")).text
    assert "web-12345" not in scraped
    assert "/no/such/page" not in scraped
