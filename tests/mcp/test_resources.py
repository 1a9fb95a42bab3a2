"""Resources, resource templates, prompts and change notifications, in memory."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import ResourceUpdatedNotification, TextResourceContents

from shoal.interfaces import WorkloadSpec
from shoal.mcp import ONTOLOGY_ENV, McpSettings, Ontology, build_server, in_process
from shoal.mcp import _ontology as ontology_module
from tests.mcp.support import HELLO, Live, eventually

pytestmark = pytest.mark.anyio

ONTOLOGY = Path(__file__).parents[2] / "ontology"


async def read(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    return content.text


async def test_lists_resources_and_templates(live: Live) -> None:
    async with Client(live.server()) as client:
        resources = {str(r.uri): r for r in (await client.list_resources()).resources}
        templates = {
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        }
    assert set(resources) == {
        "shoal://events",
        "shoal://manifests",
        "shoal://ontology/configmap",
        "shoal://ontology/instance",
        "shoal://ontology/namespace",
        "shoal://ontology/node",
        "shoal://ontology/secret",
        "shoal://ontology/workload",
    }
    assert resources["shoal://ontology/workload"].mime_type == "application/yaml"
    assert templates == {
        "shoal://ontology/{entity}",
        "shoal://workloads/{namespace}/{name}",
        "shoal://nodes/{name}",
    }


async def test_reads_the_ontology(live: Live) -> None:
    async with Client(live.server()) as client:
        workload = yaml.safe_load(await read(client, "shoal://ontology/workload"))
        node = await read(client, "shoal://ontology/node")
        choices = "configmap, instance, namespace, node"
        with pytest.raises(MCPError, match=f"no ontology entity 'pod': choose one of {choices}"):
            await client.read_resource("shoal://ontology/pod")
    assert workload["entity"] == "Workload"
    assert node == (ONTOLOGY / "node.yaml").read_text()


async def test_the_ontology_is_found_or_its_absence_explained(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Ontology(ONTOLOGY).entities == [
        "configmap",
        "instance",
        "namespace",
        "node",
        "secret",
        "workload",
    ]
    # A directory without the files: the search goes on and finds the source tree's.
    assert Ontology(tmp_path).directory == ONTOLOGY
    monkeypatch.setenv(ONTOLOGY_ENV, str(ONTOLOGY))
    assert Ontology().directory == ONTOLOGY

    monkeypatch.setattr(ontology_module, "find_ontology_dir", lambda explicit=None: None)
    server = build_server(in_process(live.service), McpSettings())
    async with Client(server) as client:
        assert (await client.list_resources()).resources[0].uri == "shoal://events"
        with pytest.raises(MCPError, match="set SHOAL_ONTOLOGY_DIR to the ontology/ directory"):
            await client.read_resource("shoal://ontology/workload")


async def test_reads_workloads_nodes_and_events(live: Live) -> None:
    await live.service.apply([WorkloadSpec.model_validate(HELLO)])
    async with Client(live.server()) as client:

        async def placed() -> dict[str, Any] | None:
            document = json.loads(await read(client, "shoal://workloads/default/hello"))
            return document if len(document["instances"]) == 2 else None

        workload = await eventually(placed)
        node = json.loads(await read(client, "shoal://nodes/n1"))
        events = json.loads(await read(client, "shoal://events"))
        with pytest.raises(MCPError, match="not_found: workload default/ghost not found"):
            await client.read_resource("shoal://workloads/default/ghost")
        with pytest.raises(MCPError, match="not_found: node 'ghost' not found"):
            await client.read_resource("shoal://nodes/ghost")
    env = workload["workload"]["spec"]["template"]["containers"][0]["env"]
    assert env["DB_PASSWORD"] == "<redacted>"
    assert "hunter2-secret" not in json.dumps([workload, node, events])
    assert workload["events"][0]["reason"] == "Created"
    assert node["node"]["name"] == "n1" and node["usage"]["instances"] == 2
    assert "Created" in [e["reason"] for e in events["events"]]


async def test_prompts_give_procedures_with_live_state(live: Live) -> None:
    await live.service.apply([WorkloadSpec.model_validate(HELLO)])
    async with Client(live.server()) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {"diagnose-workload", "capacity-plan", "safe-rollout"}
        arguments = {a.name: a.required for a in prompts["diagnose-workload"].arguments or []}
        assert arguments == {"name": True, "namespace": False}
        diagnose = await client.get_prompt("diagnose-workload", {"name": "hello"})
        capacity = await client.get_prompt("capacity-plan", {"replicas": "4", "cpu": "1"})
        rollout = await client.get_prompt(
            "safe-rollout", {"name": "hello", "change": "image to busybox:1.37"}
        )
        missing = await client.get_prompt("diagnose-workload", {"name": "ghost"})
    texts = [m.content.text for p in (diagnose, capacity, rollout) for m in p.messages]  # type: ignore[union-attr]
    assert "explain_instance" in texts[0] and '"replicas": 2' in texts[0]
    assert "4 more replica(s)" in texts[1] and '"name": "n1"' in texts[1]
    assert "(image to busybox:1.37)" in texts[2] and "plan_id" in texts[2]
    assert "(not available: workload default/ghost not found" in missing.messages[0].content.text  # type: ignore[union-attr]


async def test_listeners_hear_about_changed_resources(live: Live) -> None:
    await live.service.apply([WorkloadSpec.model_validate(HELLO)])
    uri = "shoal://workloads/default/hello"
    async with Client(live.server()) as client, client.listen(resource_subscriptions=[uri]) as sub:
        heard = anyio.Event()

        async def listen() -> None:
            async for event in sub:
                assert getattr(event, "uri", None) == uri
                heard.set()
                return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            # The notifier starts following events once subscribed; change until heard.
            with anyio.fail_after(10):
                replicas = 2
                while not heard.is_set():
                    replicas = 3 - replicas + 2  # 2 → 3 → 2 ...
                    await live.service.scale("hello", replicas)
                    with anyio.move_on_after(0.1):
                        await heard.wait()


async def test_handshake_era_subscribers_get_updated_notifications(live: Live) -> None:
    await live.service.apply([WorkloadSpec.model_validate(HELLO)])
    uri = "shoal://nodes/n1"
    updated = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, ResourceUpdatedNotification) and message.params.uri == uri:
            updated.set()

    async with Client(live.server(), mode="legacy", message_handler=on_message) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # the 2025-era API
            await client.subscribe_resource(uri)
        with anyio.fail_after(10):
            flag = True
            while not updated.is_set():
                await (live.service.cordon if flag else live.service.uncordon)("n1")
                flag = not flag
                with anyio.move_on_after(0.1):
                    await updated.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.unsubscribe_resource(uri)
