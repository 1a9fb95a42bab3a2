"""ConfigMaps, Secrets and Namespaces over the REST API: a real server, signed clients."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from nacl.signing import SigningKey

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, KeyPair, ShoalClient, SignedAuth
from shoal.core import ShoalService, SystemClock
from shoal.interfaces import (
    ConfigMapSpec,
    Conflict,
    Forbidden,
    InvalidSpec,
    NamespaceSpec,
    NotFound,
    Role,
    SecretSpec,
    Service,
)
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

SECRET_VALUE = "hunter2-very-secret"
ENCODED = base64.b64encode(SECRET_VALUE.encode()).decode()

ADMIN, OPERATOR, VIEWER = (
    KeyPair("admin@test", SigningKey(bytes([11]) * 32)),
    KeyPair("operator@test", SigningKey(bytes([12]) * 32)),
    KeyPair("viewer@test", SigningKey(bytes([13]) * 32)),
)

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "httpd", "image": "busybox"}]},
        },
    },
}
KUBE_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "db", "namespace": "shop"},
    "stringData": {"password": SECRET_VALUE},
}
KUBE_CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "page", "namespace": "shop"},
    "data": {"index.html": "<h1>hello</h1>\n"},
}


@dataclass
class Server:
    url: str
    service: ShoalService

    def http(self, key: KeyPair) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, auth=SignedAuth(key))

    def client(self, key: KeyPair) -> ShoalClient:
        return ShoalClient(self.url, key)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    keys = AuthorizedKeys(
        {
            k.key_id: AuthorizedKey(role, k.key_id, k.verify_key)
            for k, role in ((ADMIN, Role.ADMIN), (OPERATOR, Role.OPERATOR), (VIEWER, Role.VIEWER))
        }
    )
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock)
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        yield Server(f"http://127.0.0.1:{port}", service)
        tg.cancel_scope.cancel()


async def seed(server: Server) -> None:
    async with server.client(OPERATOR) as client:
        await client.apply(
            [
                NamespaceSpec(name="shop"),
                ConfigMapSpec(name="page", namespace="shop", data={"index.html": "<h1>hi</h1>"}),
                SecretSpec(name="db", namespace="shop", string_data={"password": SECRET_VALUE}),
            ]
        )


async def test_apply_takes_kubernetes_documents_of_every_kind_with_warnings(
    server: Server,
) -> None:
    documents = [KUBE_CONFIG_MAP, KUBE_SECRET, DEPLOYMENT, {**DEPLOYMENT, "kind": "Service"}]
    async with server.http(OPERATOR) as http:
        response = await http.post(
            "/v1/workloads/apply", json={"documents": documents[:3], "source": "app.yaml"}
        )
        assert response.status_code == 200, response.text
        result = response.json()
        kinds = [
            (c["kind"], c["namespace"], c["name"], c["action"]) for c in result["plan"]["changes"]
        ]
        assert kinds == [
            ("ConfigMap", "shop", "page", "create"),
            ("Secret", "shop", "db", "create"),
            ("Workload", "shop", "web", "create"),
        ]
        assert [c["spec"]["name"] for c in result["config_maps"]] == ["page"]
        assert result["secrets"][0]["sizes"] == {"password": len(SECRET_VALUE)}
        assert result["workloads"][0]["spec"]["origin"]["kind"] == "Deployment"
        assert SECRET_VALUE not in response.text and ENCODED not in response.text

        tolerating = {
            **DEPLOYMENT,
            "metadata": {"name": "tolerant", "namespace": "shop"},
            "spec": {
                **DEPLOYMENT["spec"],
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{"name": "httpd", "image": "busybox"}],
                        "tolerations": [{"operator": "Exists"}],
                    },
                },
            },
        }
        warned = await http.post("/v1/workloads/apply", json={"documents": [tolerating]})
        assert warned.status_code == 200, warned.text
        (warning,) = warned.json()["warnings"]  # the translation's and the apply's, once
        assert warning.startswith("Deployment shop/tolerant: spec.template.spec.tolerations")

        strict = await http.post(
            "/v1/workloads/apply", json={"documents": documents, "strict": True, "dry_run": True}
        )
        assert strict.status_code == 400, strict.text
        assert "Service" in strict.json()["error"]["message"]


async def test_nothing_to_apply_changes_nothing_as_in_process(server: Server) -> None:
    async with server.client(OPERATOR) as client:
        remote = await client.apply([])
    local = await server.service.apply([])
    assert remote.plan.changes == local.plan.changes == []
    assert remote.applied and local.applied


async def test_apply_refuses_a_bad_document_whole(server: Server) -> None:
    bad = {**KUBE_SECRET, "data": {"password": "not base64!"}, "stringData": {}}
    async with server.client(OPERATOR) as client:
        with pytest.raises(InvalidSpec, match="password"):
            await client.apply_documents([KUBE_CONFIG_MAP, bad], source="bad.yaml")
        assert await client.list_config_maps() == []


async def test_configmaps_are_listed_got_and_deleted(server: Server) -> None:
    await seed(server)
    async with server.client(VIEWER) as viewer:
        (everywhere,) = await viewer.list_config_maps()
        assert everywhere.spec.data == {"index.html": "<h1>hi</h1>"}
        assert [c.spec.name for c in await viewer.list_config_maps("shop")] == ["page"]
        assert await viewer.list_config_maps("default") == []
        assert (await viewer.get_config_map("page", "shop")).uid == everywhere.uid
        with pytest.raises(NotFound, match="shoal get configmaps"):
            await viewer.get_config_map("page")
        with pytest.raises(Forbidden, match="needs operator"):
            await viewer.delete_config("ConfigMap", "page", "shop")
    async with server.client(OPERATOR) as operator:
        await operator.delete_config("ConfigMap", "page", "shop")
        assert await operator.list_config_maps() == []
        with pytest.raises(NotFound):
            await operator.delete_config("ConfigMap", "page", "shop")


async def test_secret_values_reach_no_one_but_an_admin_who_asks(server: Server) -> None:
    await seed(server)
    paths = [
        "/v1/secrets",
        "/v1/namespaces/shop/secrets",
        "/v1/namespaces/shop/secrets/db",
        "/v1/namespaces/shop/secrets/db?show_values=false",
    ]
    for key in (VIEWER, OPERATOR, ADMIN):
        async with server.http(key) as http:
            for path in paths:
                response = await http.get(path)
                assert response.status_code == 200, response.text
                assert SECRET_VALUE not in response.text and ENCODED not in response.text
    async with server.http(OPERATOR) as http:
        refused = await http.get("/v1/namespaces/shop/secrets/db", params={"show_values": "true"})
        assert refused.status_code == 403
        assert "needs admin" in refused.json()["error"]["message"]
        assert ENCODED not in refused.text
    async with server.client(VIEWER) as viewer:
        with pytest.raises(Forbidden, match="showing the values of Secret shop/db needs admin"):
            await viewer.get_secret("db", "shop", show_values=True)
        hidden = await viewer.get_secret("db", "shop")
        assert hidden.data is None and hidden.sizes == {"password": len(SECRET_VALUE)}
    async with server.client(ADMIN) as admin:
        shown = await admin.get_secret("db", "shop", show_values=True)
        assert shown.data == {"password": ENCODED}
    events = await server.service.list_events(limit=1000)
    shown_events = [e for e in events if e.reason == "ValuesShown"]
    assert [(e.actor.id, e.actor.via) for e in shown_events] == [("admin@test", "cli")]
    for event in events:
        text = event.model_dump_json()
        assert SECRET_VALUE not in text and ENCODED not in text, event


async def test_namespaces_are_listed_and_deleted_only_when_empty(server: Server) -> None:
    await seed(server)
    async with server.client(OPERATOR) as client:
        names = [n.spec.name for n in await client.list_namespaces()]
        assert names == ["default", "shop"]
        with pytest.raises(Conflict, match="still holds"):
            await client.delete_config("Namespace", "shop")
        await client.delete_config("ConfigMap", "page", "shop")
        await client.delete_config("Secret", "db", "shop")
        with pytest.raises(NotFound):
            await client.get_secret("db", "shop")
        await client.delete_config("Namespace", "shop")
        assert [n.spec.name for n in await client.list_namespaces()] == ["default"]


async def test_the_client_is_a_service(server: Server) -> None:
    async with server.client(VIEWER) as client:
        service: Service = client  # mypy holds ShoalClient to the protocol
        assert isinstance(service, Service)
