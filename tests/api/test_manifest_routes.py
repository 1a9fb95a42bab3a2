"""GET /v1/manifests: the watched directory's files over the signed REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from nacl.signing import SigningKey

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, KeyPair, ShoalClient
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import Role
from shoal.kube import ManifestWatcher
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

VIEWER = KeyPair("viewer@test", SigningKey(bytes([21]) * 32))

WEB = """kind: Workload
name: web
template:
  containers:
    - name: main
      image: busybox:1.36
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    (tmp_path / "web.yaml").write_text(WEB)
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    keys = AuthorizedKeys(
        {VIEWER.key_id: AuthorizedKey(Role.VIEWER, VIEWER.key_id, VIEWER.verify_key)}
    )
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        watcher = ManifestWatcher(service, [tmp_path], "n1", debounce=0.1)
        service.manifests = watcher.statuses
        await tg.start(watcher.run)
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_a_viewer_lists_the_watched_files(url: str, tmp_path: Path) -> None:
    async with ShoalClient(url, VIEWER) as client:
        bad, web = await client.list_manifests()
    assert web.path == str(tmp_path / "web.yaml") and web.node == "n1"
    assert web.objects == ["Workload default/web"] and web.applied_at is not None
    assert len(web.hash) == 64 and web.hash == web.applied_hash and web.error == ""
    assert bad.path == str(tmp_path / "bad.yaml")
    assert "line 2" in bad.error and bad.objects == [] and bad.applied_at is None


async def test_an_unsigned_request_is_refused(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/v1/manifests")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_service_without_a_watcher_lists_none(tmp_path: Path) -> None:
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store:
        assert await ShoalService(store, clock).list_manifests() == []
