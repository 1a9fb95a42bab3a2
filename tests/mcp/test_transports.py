"""The real transports against a real agent: `shoal mcp` over stdio, /mcp over HTTP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from nacl.signing import SigningKey

from shoal.client import KeyPair, init_keypair, load_keypair
from shoal.interfaces import Role
from shoal.mcp import CHANGE_TOOLS, create_token
from tests.e2e.conftest import Agent, agent_in
from tests.mcp.support import HELLO, call, eventually, refused

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "examples" / "hello.yaml"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One real `shoal agent` process (memory state, mock runtime) for this module."""
    with agent_in(tmp_path_factory.mktemp("mcp-agent")) as handle:
        handle.start("--state", "memory")
        yield handle


@pytest.fixture(scope="module")
def viewer_key(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second user, authorized as viewer on the agent; returns their SHOAL_HOME."""
    home = tmp_path_factory.mktemp("viewer-home")
    pair = init_keypair(home, "viewer@test")
    with (agent.data_dir / "authorized_keys").open("a") as keys:
        keys.write(f"viewer {pair.public_line}\n")
    return home


def stdio(agent: Agent, *extra: str) -> Client:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "shoal.cli", "mcp", *extra],
        env={"SHOAL_HOME": str(agent.home), "SHOAL_SERVER": agent.url},
    )
    return Client(params)


def token(home: Path, role: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "token", "create", "--role", role, "--ttl", "10m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"role {role}" in done.stderr
    return done.stdout.strip()


def http_client(agent: Agent, bearer: str | None) -> tuple[httpx2.AsyncClient, Client]:
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    http = httpx2.AsyncClient(headers=headers)
    return http, Client(streamable_http_client(f"{agent.url}/mcp", http_client=http))


async def raw_post(agent: Agent, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{agent.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers}
        )


async def events_of(agent: Agent) -> list[Any]:
    """The agent's latest events, as `shoal events -o json` lists them (read through the API)."""
    async with agent.client() as client:
        return [e.model_dump(mode="json") for e in await client.list_events(limit=200)]


async def wait_running(client: Client, workload: str, count: int) -> None:
    async def check() -> bool | None:
        found = await call(client, "list_instances", workload=workload, state="running")
        return True if len(found["instances"]) == count else None

    await eventually(check, within=30)


async def test_stdio_server_drives_a_real_agent(agent: Agent) -> None:
    async with stdio(agent) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert CHANGE_TOOLS <= tools
        # The agent's own cluster manager, through its REST API: a node alone is its one member.
        (member,) = (await call(client, "list_members"))["members"]
        assert (member["name"], member["state"], member["tags"]["role"]) == (
            "e2e-node",
            "alive",
            "both",
        )
        applied = await call(client, "apply_workload", manifest=EXAMPLE.read_text())
        assert applied["summary"] == "apply: create default/hello"
        await wait_running(client, "hello", 3)
        refusal = await refused(client, "delete_workload", name="hello")
        assert "plan_required" in refusal
        plan = await call(client, "plan_workload", action="delete", name="hello")
        deleted = await call(client, "delete_workload", name="hello", plan_id=plan["plan_id"])
        assert deleted["workload"]["deleting"]
    events = await events_of(agent)
    audit = [e for e in events if e["reason"] == "McpToolCall"]
    key_id = load_keypair(agent.home).key_id
    assert {(e["actor"]["id"], e["actor"]["via"]) for e in audit} == {(key_id, "mcp")}
    assert "delete_workload" in {e["details"]["tool"] for e in audit}


async def test_stdio_read_only_exposes_only_reads(agent: Agent) -> None:
    async with stdio(agent, "--read-only") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools.isdisjoint(CHANGE_TOOLS) and "get_logs" in tools
        assert "Unknown tool" in await refused(client, "apply_workload", workload=HELLO)


def test_stdio_without_a_key_says_how_to_make_one(agent: Agent, tmp_path: Path) -> None:
    env = {**agent.env, "SHOAL_HOME": str(tmp_path / "nobody")}
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "mcp"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "run `shoal keys init`" in done.stderr


async def test_http_with_an_operator_token(agent: Agent) -> None:
    http, client = http_client(agent, token(agent.home, "operator"))
    async with http, client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert CHANGE_TOOLS <= tools
        await call(client, "apply_workload", workload=dict(HELLO, name="web", replicas=1))
        await wait_running(client, "web", 1)
        detail = await call(client, "get_workload", name="web")
    env = detail["workload"]["spec"]["template"]["containers"][0]["env"]
    assert env["DB_PASSWORD"] == "<redacted>"
    events = await events_of(agent)
    applied = [e for e in events if e["details"].get("tool") == "apply_workload"]
    assert applied and applied[-1]["actor"]["via"] == "mcp"


async def test_a_viewer_token_reads_but_cannot_change(agent: Agent, viewer_key: Path) -> None:
    http, client = http_client(agent, token(viewer_key, "viewer"))
    async with http, client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools.isdisjoint(CHANGE_TOOLS) and "plan_workload" in tools
        await call(client, "list_workloads")
        text = await refused(client, "delete_workload", name="web", plan_id="anything")
    assert "forbidden: delete_workload changes the cluster and needs role operator" in text
    assert "'viewer@test' is a viewer" in text
    # A token cannot claim more than its key is authorized for.
    response = await raw_post(agent, {"authorization": f"Bearer {token(viewer_key, 'operator')}"})
    assert response.status_code == 401
    assert response.json()["error"]["details"]["reason"] == "role_not_allowed"


async def test_requests_without_a_valid_token_are_refused(agent: Agent) -> None:
    missing = await raw_post(agent, {})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="shoal-mcp"'
    assert missing.json()["error"]["details"] == {"reason": "missing_token"}

    owner = load_keypair(agent.home)
    expired = create_token(owner, Role.OPERATOR, 600, issued_at=time.time() - 7200)
    stranger = KeyPair("stranger@test", SigningKey(bytes(range(50, 82))))
    impostor = KeyPair(owner.key_id, SigningKey(bytes(range(50, 82))))
    cases = {
        "expired": expired,
        "unknown_key": create_token(stranger, Role.VIEWER, 600),
        "bad_signature": create_token(impostor, Role.VIEWER, 600),
        "malformed_token": "definitely.not.a-jwt",
    }
    for reason, bearer in cases.items():
        response = await raw_post(agent, {"authorization": f"Bearer {bearer}"})
        assert response.status_code == 401, reason
        assert response.json()["error"]["details"]["reason"] == reason
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    http, client = http_client(agent, None)
    with pytest.raises(ExceptionGroup) as refused_group:
        async with http, client:
            pass
    assert refused_group.group_contains(MCPError)
    http, client = http_client(agent, expired)
    with pytest.raises(ExceptionGroup) as expired_group:
        async with http, client:
            pass
    assert expired_group.group_contains(MCPError)


async def test_origins_other_than_the_agent_are_refused(agent: Agent) -> None:
    bearer = {"authorization": f"Bearer {token(agent.home, 'viewer')}"}
    evil = await raw_post(agent, {**bearer, "origin": "http://evil.example"})
    assert evil.status_code == 403
    rebound = await raw_post(agent, {**bearer, "host": "evil.example"})
    assert rebound.status_code == 421
    same = await raw_post(agent, {**bearer, "origin": agent.url})
    assert same.status_code == 200


async def test_stdio_applies_kubernetes_manifests_and_keeps_secrets_over_rest(
    agent: Agent,
) -> None:
    """Through `shoal mcp` the configuration tools reach the agent by the signed client."""
    examples = Path(__file__).parents[2] / "examples" / "k8s"
    manifest = "\n---\n".join(f.read_text() for f in sorted(examples.glob("*.yaml")))
    token = "change-me-0123456789"
    async with stdio(agent) as client:
        applied = await call(client, "apply_workload", manifest=manifest)
        assert applied["config"] == ["ConfigMap default/httpd-page", "Secret default/httpd-auth"]
        assert applied["warnings"] == []
        (secret,) = (await call(client, "list_secrets"))["secrets"]
        assert secret["sizes"] == {"API_TOKEN": len(token)}
        maps = (await call(client, "list_config_maps", include_data=True))["config_maps"]
        assert "Hello from a Kubernetes Deployment" in maps[0]["data"]["index.html"]
        plan = await call(client, "plan_delete_config", kind="Secret", name="httpd-auth")
        assert "(httpd)" in plan["summary"]
        await call(client, "delete_secret", name="httpd-auth", plan_id=plan["plan_id"])
        assert (await call(client, "list_secrets"))["secrets"] == []
        plan = await call(client, "plan_workload", action="delete", name="httpd")
        await call(client, "delete_workload", name="httpd", plan_id=plan["plan_id"])
    for event in await events_of(agent):
        text = json.dumps(event)
        assert token not in text and base64.b64encode(token.encode()).decode() not in text
