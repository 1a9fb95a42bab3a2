"""Kubernetes manifests through apply_workload, and the ConfigMap, Secret and Namespace tools."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from mcp import Client
from mcp_types import ElicitRequestParams, ElicitResult

from shoal.interfaces import NotFound
from shoal.mcp import AUDIT_REASON, CHANGE_TOOLS, REDACTED
from shoal.mcp._redact import redact_json
from tests.mcp.support import VIEWER, Live, call, refused

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-horse-staple"
ENCODED = base64.b64encode(PASSWORD.encode()).decode()
NEW_PASSWORD = "another-s3cret-value"

MANIFEST = f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: page, namespace: shop}}
data:
  index.html: "<h1>hello</h1>"
---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: shop}}
stringData:
  password: {PASSWORD}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: httpd
          image: busybox:1.36
          envFrom:
            - secretRef: {{name: db}}
          volumeMounts:
            - {{name: page, mountPath: /var/www}}
      volumes:
        - name: page
          configMap: {{name: page}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{ports: [{{port: 80}}]}}
"""


def leaks(value: Any) -> bool:
    text = json.dumps(value, default=str)
    return any(secret in text for secret in (PASSWORD, ENCODED, NEW_PASSWORD))


async def test_apply_takes_kubernetes_manifests_with_warnings(live: Live) -> None:
    async with Client(live.server()) as client:
        plan = await call(client, "plan_workload", manifest=MANIFEST)
        assert plan["summary"] == (
            "apply: create ConfigMap shop/page, create Secret shop/db, create shop/web"
        )
        assert any("Service" in warning for warning in plan["warnings"])
        applied = await call(client, "apply_workload", manifest=MANIFEST, plan_id=plan["plan_id"])
        assert applied["confirmed"] == "plan"
        assert applied["config"] == ["ConfigMap shop/page", "Secret shop/db"]
        assert [w["name"] for w in applied["workloads"]] == ["web"]
        assert applied["warnings"] == plan["warnings"]
        assert not leaks(plan) and not leaks(applied)

        changed = MANIFEST.replace(PASSWORD, NEW_PASSWORD)
        update = await call(client, "plan_workload", manifest=changed)
        (secret_change,) = [c for c in update["changes"] if c["kind"] == "Secret"]
        assert secret_change["action"] == "update"
        assert not leaks(update)
        service_only = MANIFEST.rpartition("---")[2]
        nothing = await call(client, "apply_workload", manifest=service_only)
        assert nothing["summary"] == "apply: nothing (no document holds an object Shoal runs)"
        assert nothing["changes"] == [] and "Service" in nothing["warnings"][0]
    stored = await live.service.get_secret("db", "shop", show_values=True)
    assert stored.data == {"password": ENCODED}


async def test_lists_config_maps_secrets_and_namespaces_without_secret_values(
    live: Live,
) -> None:
    async with Client(live.server()) as operator:
        await call(operator, "apply_workload", manifest=MANIFEST)
    async with Client(live.server(VIEWER)) as client:
        maps = (await call(client, "list_config_maps", namespace="shop"))["config_maps"]
        assert [(m["name"], m["sizes"], m["data"]) for m in maps] == [
            ("page", {"index.html": 14}, None)
        ]
        assert maps[0]["origin"] == "ConfigMap"
        full = await call(client, "list_config_maps", include_data=True)
        assert full["config_maps"][0]["data"] == {"index.html": "<h1>hello</h1>"}
        assert (await call(client, "list_config_maps", namespace="default"))["config_maps"] == []

        secrets = await call(client, "list_secrets")
        assert [(s["name"], s["type"], s["sizes"]) for s in secrets["secrets"]] == [
            ("db", "Opaque", {"password": len(PASSWORD)})
        ]
        assert not leaks(secrets)

        spaces = (await call(client, "list_namespaces"))["namespaces"]
        assert [(n["name"], n["declared"]) for n in spaces] == [
            ("default", False),
            ("shop", False),
        ]


async def test_deleting_config_needs_a_plan_for_exactly_that_object(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", manifest=MANIFEST)
        text = await refused(client, "delete_secret", name="db", namespace="shop")
        assert "plan_required" in text and "plan_delete_config" in text
        plan = await call(client, "plan_delete_config", kind="Secret", name="db", namespace="shop")
        assert plan["destructive"] and plan["action"] == "delete_config"
        assert "1 workload(s) use it (web)" in plan["summary"]
        assert plan["next_step"] == "delete_secret(name='db', namespace='shop', plan_id=<plan_id>)"
        other = await call(
            client, "plan_delete_config", kind="ConfigMap", name="page", namespace="shop"
        )
        stale = await refused(
            client, "delete_secret", name="db", namespace="shop", plan_id=other["plan_id"]
        )
        assert "stale_plan" in stale
        await live.service.get_secret("db", "shop")  # still there

        deleted = await call(
            client, "delete_secret", name="db", namespace="shop", plan_id=plan["plan_id"]
        )
        assert deleted["confirmed"] == "plan"
        with pytest.raises(NotFound):
            await live.service.get_secret("db", "shop")
        missing = await refused(
            client, "plan_delete_config", kind="Secret", name="db", namespace="shop"
        )
        assert "not_found: secret shop/db not found" in missing
        assert missing.endswith("secret shop/db not found: list them with list_secrets")
        deleted = await call(
            client, "delete_config_map", name="page", namespace="shop", plan_id=other["plan_id"]
        )
        assert deleted["summary"].startswith("delete ConfigMap shop/page")


async def test_a_config_plan_goes_stale_once_another_workload_uses_it(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", manifest=MANIFEST)
        plan = await call(client, "plan_delete_config", kind="Secret", name="db", namespace="shop")
        assert "1 workload(s) use it (web)" in plan["summary"]
        user = MANIFEST.split("---")[2].replace("name: web", "name: api")
        await call(client, "apply_workload", manifest=user)
        stale = await refused(
            client, "delete_secret", name="db", namespace="shop", plan_id=plan["plan_id"]
        )
        assert "stale_plan" in stale
        await live.service.get_secret("db", "shop")  # still there
        again = await call(client, "plan_delete_config", kind="Secret", name="db", namespace="shop")
        assert "2 workload(s) use it (api, web)" in again["summary"]


async def test_the_user_can_confirm_a_deletion_by_elicitation(live: Live) -> None:
    questions: list[str] = []

    async def answer(context: Any, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params.message)
        return ElicitResult(action="accept", content={"confirm": True})

    async with Client(live.server(), elicitation_callback=answer) as client:
        await call(client, "apply_workload", manifest=MANIFEST)
        deleted = await call(client, "delete_config_map", name="page", namespace="shop")
    assert deleted["confirmed"] == "elicitation"
    (asked,) = questions
    assert re.fullmatch(
        r"Shoal will delete ConfigMap shop/page: 1 workload\(s\) use it \(web\): their running "
        r"pods keep what they have, but pods started from now on wait "
        r"\(CreateContainerConfigError\) until it exists again \(plan [0-9a-f]{16}\)\. This "
        r"cannot be undone\. Go ahead\?",
        asked,
    )
    assert await live.service.list_config_maps() == []


async def test_viewers_cannot_delete_and_nothing_audited_holds_a_secret_value(
    live: Live,
) -> None:
    assert {"delete_config_map", "delete_secret"} <= CHANGE_TOOLS
    async with Client(live.server()) as operator:
        await call(operator, "apply_workload", manifest=MANIFEST)
        await call(operator, "apply_workload", manifest=MANIFEST.replace(PASSWORD, NEW_PASSWORD))
    async with Client(live.server(VIEWER)) as viewer:
        names = {tool.name for tool in (await viewer.list_tools()).tools}
        assert "list_secrets" in names and "delete_secret" not in names
        text = await refused(viewer, "delete_secret", name="db", namespace="shop", plan_id="x")
        assert "forbidden" in text
    await live.service.get_secret("db", "shop")
    events = await live.service.list_events(limit=1000)
    audited = [e for e in events if e.reason == AUDIT_REASON]
    assert {e.details["tool"] for e in audited} >= {"apply_workload", "delete_secret"}
    for event in events:
        assert not leaks(event.model_dump(mode="json")), event


def test_secret_documents_are_redacted_in_either_dialect() -> None:
    last_applied = json.dumps({"kind": "Secret", "stringData": {"password": PASSWORD}})
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "db",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            },
            "data": {"password": ENCODED},
            "stringData": {"token": PASSWORD},
        },
        {"kind": "Secret", "name": "db", "string_data": {"password": PASSWORD}},
        {"kind": "ConfigMap", "name": "page", "data": {"index.html": "<h1>hi</h1>"}},
    ]
    kube, shoal, config_map = redact_json(documents)
    assert not leaks(kube) and not leaks(shoal)
    assert kube["data"] == {"password": REDACTED} and kube["stringData"] == {"token": REDACTED}
    assert kube["metadata"]["name"] == "db"
    assert shoal["string_data"] == {"password": REDACTED}
    assert config_map == documents[2]
