"""The REST API over a real uvicorn server on loopback, driven by signed clients."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from nacl.signing import SigningKey

from shoal.api import RequestVerifier, bind, create_app, serve_api
from shoal.client import AuthorizedKey, AuthorizedKeys, KeyPair, ShoalClient, SignedAuth
from shoal.cluster import StaticCluster
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    LocalNode,
    LocalNodeState,
    NodeLoop,
    ShoalService,
    SystemClock,
)
from shoal.interfaces import (
    VIA_HEADER,
    Capacity,
    Conflict,
    Expected,
    Forbidden,
    GossipState,
    InstanceState,
    InvalidInput,
    InvalidSpec,
    Member,
    NamespaceSpec,
    Node,
    NotFound,
    ObjectRef,
    RequestTooLarge,
    Role,
    Unavailable,
    Via,
    WorkloadSpec,
)
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

HELLO = {
    "name": "hello",
    "replicas": 2,
    "template": {"containers": [{"name": "web", "image": "busybox"}]},
}


GOSSIP_TAGS = {"id": "f" * 64, "role": "both", "api": "127.0.0.1:7070"}
"""The tags the test server's one-node cluster manager publishes."""


def keypair(name: str, seed: int) -> KeyPair:
    return KeyPair(name, SigningKey(bytes([seed]) * 32))


ADMIN, OPERATOR, VIEWER, STRANGER = (
    keypair("admin@test", 1),
    keypair("operator@test", 2),
    keypair("viewer@test", 3),
    keypair("stranger@test", 4),
)


@dataclass
class Server:
    url: str
    service: ShoalService

    def client(self, key: KeyPair, **auth: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, auth=SignedAuth(key, **auth))  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    keys = AuthorizedKeys(
        {
            k.key_id: AuthorizedKey(role, k.key_id, k.verify_key)
            for k, role in ((ADMIN, Role.ADMIN), (OPERATOR, Role.OPERATOR), (VIEWER, Role.VIEWER))
        }
    )
    clock = SystemClock()
    gossip = StaticCluster("n1", "127.0.0.1:7946", tags=GOSSIP_TAGS)
    async with (
        MemoryStore(clock=clock) as store,
        gossip,
        anyio.create_task_group() as tg,
    ):
        service = ShoalService(store, clock, members=gossip.members)
        app = create_app(service, RequestVerifier(keys.lookup), heartbeat=0.2)
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        yield Server(f"http://127.0.0.1:{port}", service)
        tg.cancel_scope.cancel()


async def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert isinstance(body, dict)
    error = body["error"]
    assert isinstance(error, dict)
    return error


async def test_signed_requests_reach_the_service(server: Server) -> None:
    async with server.client(OPERATOR) as http:
        response = await http.post("/v1/workloads/apply", json={"documents": [HELLO]})
        assert response.status_code == 200, response.text
        assert response.json()["plan"]["changes"][0]["action"] == "create"
        listed = await http.get("/v1/workloads")
        assert [w["spec"]["name"] for w in listed.json()] == ["hello"]
    events = await server.service.list_events(kind="Workload")
    assert events[-1].actor.id == "operator@test"
    assert events[-1].actor.via == "rest"


async def test_via_is_what_the_signature_covers_never_a_guess(server: Server) -> None:
    """The CLI and ``shoal mcp`` declare their front door in a signed header; nothing else."""

    async def scale_via(
        replicas: int, *, headers: dict[str, str] | None = None, via: Via | None = None
    ) -> str:
        document = {**HELLO, "replicas": replicas}
        if via is not None:
            async with ShoalClient(server.url, OPERATOR, via=via) as client:
                await client.apply_documents([document])
        else:
            async with server.client(OPERATOR) as http:
                # Added after signing (an httpx event hook runs after auth): not covered.
                async def add_headers(request: httpx.Request) -> None:
                    request.headers.update(headers or {})

                http.event_hooks["request"] = [add_headers]
                response = await http.post("/v1/workloads/apply", json={"documents": [document]})
                assert response.status_code == 200, response.text
        events = await server.service.list_events(kind="Workload", name="hello")
        assert events[-1].reason == "Updated"
        return str(events[-1].actor.via)

    async with server.client(OPERATOR) as http:
        await http.post("/v1/workloads/apply", json={"documents": [HELLO]})
    assert await scale_via(3, via=Via.CLI) == "cli"
    assert await scale_via(4, via=Via.MCP) == "mcp"
    assert await scale_via(5) == "rest"
    assert await scale_via(6, headers={VIA_HEADER: "mcp"}) == "rest"  # unsigned claim
    # A signed claim of something that does not call the API is not believed either.
    assert await scale_via(7, via=Via.CONTROL_LOOP) == "rest"


async def test_unsigned_request_is_refused(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/v1/workloads")
    assert response.status_code == 401
    error = await error_of(response)
    assert error["code"] == "unauthenticated"
    assert error["details"] == {"reason": "missing_signature"}


async def test_a_viewer_lists_the_gossip_members(server: Server) -> None:
    async with server.client(VIEWER) as http:
        response = await http.get("/v1/members")
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"name": "n1", "address": "127.0.0.1:7946", "state": "alive", "tags": GOSSIP_TAGS}
    ]
    async with ShoalClient(server.url, VIEWER) as client:
        assert await client.list_members() == [
            Member(name="n1", address="127.0.0.1:7946", state=GossipState.ALIVE, tags=GOSSIP_TAGS)
        ]


async def test_members_need_a_signature(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        unsigned = await http.get("/v1/members")
    async with server.client(STRANGER) as http:
        unknown = await http.get("/v1/members")
    assert (unsigned.status_code, unknown.status_code) == (401, 401)
    assert (await error_of(unsigned))["details"] == {"reason": "missing_signature"}
    assert (await error_of(unknown))["details"] == {
        "reason": "unknown_key",
        "key_id": "stranger@test",
    }


async def test_unknown_key_is_refused(server: Server) -> None:
    async with server.client(STRANGER) as http:
        response = await http.get("/v1/nodes")
    assert response.status_code == 401
    error = await error_of(response)
    assert error["details"]["reason"] == "unknown_key"  # type: ignore[index]
    assert "authorized_keys" in str(error["message"])


async def test_tampered_target_is_a_bad_signature(server: Server) -> None:
    signed = httpx.Request("GET", f"{server.url}/v1/workloads")
    flow = SignedAuth(VIEWER).auth_flow(signed)
    request = next(flow)
    tampered = httpx.Request("GET", f"{server.url}/v1/nodes", headers=request.headers)
    async with httpx.AsyncClient() as http:
        response = await http.send(tampered)
    assert response.status_code == 401
    assert (await error_of(response))["details"] == {"reason": "bad_signature"}


@pytest.mark.parametrize(
    "host",
    ["{authority}/v1/workloads/default/scratch#", "{authority}/v1/workloads/default/scratch?"],
)
async def test_a_host_header_cannot_carry_the_signed_path(server: Server, host: str) -> None:
    """A signature for one path does not pass on another by a Host that ends in it."""
    specs = [WorkloadSpec.model_validate(dict(HELLO, name=n)) for n in ("scratch", "prod")]
    await server.service.apply(specs)
    authority = server.url.removeprefix("http://")
    signed = httpx.Request("DELETE", f"{server.url}/v1/workloads/default/scratch")
    headers = next(SignedAuth(ADMIN).auth_flow(signed)).headers
    headers["host"] = host.format(authority=authority)
    forged = httpx.Request("DELETE", f"{server.url}/v1/workloads/default/prod", headers=headers)
    async with httpx.AsyncClient() as http:
        response = await http.send(forged)
    assert response.status_code == 401, response.text
    error = await error_of(response)
    assert error["details"] == {"reason": "malformed_request"}
    assert "is not a host[:port]" in str(error["message"])
    assert not any(w.deleting for w in await server.service.list_workloads())


async def test_body_changed_after_signing_is_a_digest_mismatch(server: Server) -> None:
    body = json.dumps({"documents": [HELLO]}).encode()
    request = next(
        SignedAuth(OPERATOR).auth_flow(
            httpx.Request("POST", f"{server.url}/v1/workloads/apply", content=body)
        )
    )
    changed = body.replace(b'"replicas": 2', b'"replicas": 9')
    headers = dict(request.headers)
    headers["content-length"] = str(len(changed))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.url}/v1/workloads/apply", content=changed, headers=headers
        )
    assert response.status_code == 401
    assert (await error_of(response))["details"] == {"reason": "digest_mismatch"}
    assert await server.service.list_workloads() == []


async def test_stale_request_is_refused(server: Server) -> None:
    async with server.client(VIEWER, clock=lambda: time.time() - 120) as http:
        response = await http.get("/v1/nodes")
    assert response.status_code == 401
    error = await error_of(response)
    assert error["details"]["reason"] == "stale"  # type: ignore[index]
    assert "clock" in str(error["message"])


async def test_replayed_request_is_refused(server: Server) -> None:
    async with server.client(VIEWER, nonce=lambda: "always-the-same") as http:
        first = await http.get("/v1/nodes")
        second = await http.get("/v1/nodes")
    assert first.status_code == 200
    assert second.status_code == 401
    assert (await error_of(second))["details"]["reason"] == "replayed"  # type: ignore[index]


async def test_viewer_cannot_change_anything(server: Server) -> None:
    async with server.client(VIEWER) as http:
        read = await http.get("/v1/workloads")
        write = await http.post("/v1/workloads/apply", json={"documents": [HELLO]})
    assert read.status_code == 200
    assert write.status_code == 403
    error = await error_of(write)
    assert error["code"] == "forbidden"
    assert "needs operator" in str(error["message"])
    async with ShoalClient(server.url, VIEWER) as client:
        with pytest.raises(Forbidden):
            await client.scale("hello", 3)


async def test_oversized_requests_are_refused(server: Server) -> None:
    big = {"documents": [HELLO], "padding": "x" * (1 << 20)}
    async with server.client(ADMIN) as http:
        response = await http.post("/v1/workloads/apply", json=big)
        assert response.status_code == 413
        assert (await error_of(response))["code"] == "request_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"x" * 65536

        streamed = await http.post("/v1/workloads/apply", content=chunks())
        assert streamed.status_code == 413
    async with ShoalClient(server.url, ADMIN) as client:
        many = [dict(HELLO, name=f"w{i}", labels={"pad": "y" * 60}) for i in range(20000)]
        with pytest.raises(RequestTooLarge):
            await client.apply_documents(many)
    assert await server.service.list_workloads() == []


async def test_invalid_documents_are_refused_whole(server: Server) -> None:
    bad = dict(HELLO, name="second", replicas=-1)
    async with ShoalClient(server.url, OPERATOR) as client:
        with pytest.raises(
            InvalidSpec, match=r"app.yaml: document 2 \((?i:workload) 'second'\): field replicas"
        ):
            await client.apply_documents([HELLO, bad], source="app.yaml")
        with pytest.raises(NotFound):
            await client.get_workload("hello")


async def test_client_apply_sends_only_what_a_spec_says(server: Server) -> None:
    """A field left to its default is not said: a paused rollout stays paused (as in process)."""
    async with ShoalClient(server.url, OPERATOR) as client:
        await client.apply([WorkloadSpec.model_validate(HELLO)])
        await client.pause_rollout("hello")
        image = {"containers": [{"name": "web", "image": "busybox:2"}]}
        await client.apply([WorkloadSpec.model_validate(dict(HELLO, template=image))])
        workload = await client.get_workload("hello")
        assert workload.spec.paused and workload.spec.template.containers[0].image == "busybox:2"
        namespace = NamespaceSpec.model_validate({"kind": "Namespace", "name": "shop"})
        await client.apply([namespace])  # its kind travels although it is the default
        assert "shop" in {n.spec.name for n in await client.list_namespaces()}


async def test_client_round_trips_every_call(server: Server) -> None:
    async with ShoalClient(server.url, OPERATOR) as client:
        plan = await client.apply_documents([HELLO], dry_run=True)
        assert not plan.applied
        await client.apply_documents([HELLO])
        assert (await client.scale("hello", 5)).spec.replicas == 5
        assert (await client.get_workload("hello")).generation == 2
        assert await client.list_instances() == []  # no control loop runs here
        assert (await client.delete_workload("hello")).deleting
        reasons = [e.reason for e in await client.list_events(kind="Workload")]
        assert reasons == ["Created", "Scaled", "Deleting"]
        with pytest.raises(NotFound, match="node 'ghost' not found"):
            await client.cordon("ghost")
        with pytest.raises(NotFound, match="node 'ghost' not found"):
            await client.delete_node("ghost")


async def test_events_stream_as_server_sent_events(server: Server) -> None:
    async with ShoalClient(server.url, OPERATOR) as client, anyio.create_task_group() as tg:
        received: list[str] = []
        subscribed = anyio.Event()

        async def follow() -> None:
            async for event in client.watch_events():
                received.append(event.reason)
                return

        async def apply_when_subscribed() -> None:
            # The stream subscribes on the server before its first byte; poll until
            # an apply is seen rather than guessing when that happened.
            with anyio.fail_after(10):
                while not received:
                    await client.scale("hello", len(received) + 3)
                    await anyio.sleep(0.05)
            subscribed.set()

        await client.apply_documents([HELLO])
        tg.start_soon(follow)
        tg.start_soon(apply_when_subscribed)
        with anyio.fail_after(15):
            await subscribed.wait()
    assert received == ["Scaled"]


async def test_health_and_openapi_need_no_signature(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        schema = (await http.get("/openapi.json")).json()
    assert "/v1/workloads/apply" in schema["paths"]
    spec = schema["components"]["schemas"]["Workload"]["properties"]["generation"]
    assert spec["description"].startswith("Incremented on every change")


async def test_a_request_signed_by_an_independent_implementation_is_accepted(
    server: Server,
) -> None:
    """http-message-signatures (not our code) signs; the live server accepts."""
    seed = bytes([2]) * 32  # OPERATOR's key

    body = json.dumps({"documents": [HELLO]}).encode()
    request = requests.Request(
        "POST",
        f"{server.url}/v1/workloads/apply",
        data=body,
        headers={"content-type": "application/json"},
    ).prepare()
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={},
            private_keys={OPERATOR.key_id: Ed25519PrivateKey.from_private_bytes(seed)},
        ),
    )
    signer.sign(
        request,
        key_id=OPERATOR.key_id,
        covered_component_ids=("@method", "@target-uri", "content-digest"),
        nonce="independent-1",
        include_alg=True,
        body=body,  # the library computes Content-Digest itself
    )
    response = await anyio.to_thread.run_sync(requests.Session().send, request)
    assert response.status_code == 200, response.text
    assert [w.name for w in await server.service.list_workloads()] == ["hello"]


@pytest.fixture
async def live() -> AsyncIterator[Server]:
    """A server whose node runs: control and node loops over a MockRuntime."""
    keys = AuthorizedKeys(
        {
            k.key_id: AuthorizedKey(role, k.key_id, k.verify_key)
            for k, role in ((OPERATOR, Role.OPERATOR), (VIEWER, Role.VIEWER))
        }
    )
    clock = SystemClock()
    capacity = Capacity.model_validate({"cpu": "4", "memory": "8Gi"})
    node = Node(name="n1", capacity=capacity, allocatable=capacity)
    runtime = MockRuntime(clock)
    async with MemoryStore(clock=clock) as store, anyio.create_task_group() as tg:
        service = ShoalService(store, clock, local=LocalNode("n1", runtime))
        await tg.start(ControlLoop(store, DefaultScheduler(), clock).run)
        await tg.start(NodeLoop(node, LocalNodeState(store, node.name), runtime, clock).run)
        app = create_app(service, RequestVerifier(keys.lookup))
        port = await tg.start(serve_api, app, bind("127.0.0.1:0"))
        yield Server(f"http://127.0.0.1:{port}", service)
        tg.cancel_scope.cancel()


async def running_instance(client: ShoalClient) -> str:
    template = {
        "init_containers": [{"name": "setup", "image": "busybox"}],
        "containers": [{"name": "web", "image": "busybox"}],
    }
    await client.apply_documents([dict(HELLO, replicas=1, template=template)])
    with anyio.fail_after(10):
        while True:
            instances = await client.list_instances()
            if instances and instances[0].state == InstanceState.RUNNING:
                return instances[0].name
            await anyio.sleep(0.05)


async def test_logs_exec_and_stats_reach_the_node_runtime(live: Server) -> None:
    async with ShoalClient(live.url, OPERATOR) as client:
        name = await running_instance(client)
        lines = [line.line async for line in client.logs(name)]
        assert lines == ["started web"]
        result = await client.exec(name, ["echo", "hi"])
        assert (result.exit_code, result.stdout) == (0, "echo hi")
        (stat,) = await client.stats(name)
        assert stat.name == "web"
        with pytest.raises(NotFound, match="has no container 'nope'; it has web"):
            await client.exec(name, ["true"], container="nope")
        with pytest.raises(InvalidInput, match="exec needs a command"):
            await live.service.exec(name, [])
    async with ShoalClient(live.url, VIEWER) as viewer:
        assert [line.line async for line in viewer.logs(name, tail=1)] == ["started web"]
        with pytest.raises(Forbidden):
            await viewer.exec(name, ["true"])
    reasons = [e.reason for e in await live.service.list_events(kind="Instance", name=name)]
    assert "Exec" in reasons


async def test_a_previous_runs_logs_are_read_after_its_instance_started_again(
    live: Server,
) -> None:
    assert live.service.local is not None
    runtime = live.service.local.runtime
    assert isinstance(runtime, MockRuntime)
    async with ShoalClient(live.url, OPERATOR) as client:
        name = await running_instance(client)
        with pytest.raises(
            NotFound, match=r"no previous run's log of 'web' .*not been started again"
        ):
            await anext(aiter(client.logs(name, previous=True)))
        uid = (await client.get_instance(name)).uid
        runtime.write_log(uid, "web", "dying words")
        runtime.kill(uid, "web")
        with anyio.fail_after(10):
            while True:
                now = await client.get_instance(name)
                if now.restart_count and now.state == InstanceState.RUNNING:
                    break
                await anyio.sleep(0.05)
        assert "dying words" in [line.line async for line in client.logs(name, previous=True)]
        assert "dying words" not in [line.line async for line in client.logs(name)]
        setup = client.logs(name, previous=True, container="setup")  # an init container's too
        assert [line.line async for line in setup] == ["started setup"]
        with pytest.raises(InvalidInput, match="previous cannot be combined with follow"):
            await anext(aiter(client.logs(name, previous=True, follow=True)))
        await client.delete_workload("hello")
        with anyio.fail_after(10):
            while True:  # its node stops and removes it
                if not await client.list_instances():
                    break
                await anyio.sleep(0.05)
    with pytest.raises(NotFound, match="no previous run's logs"):  # gone with the instance
        await anext(aiter(runtime.logs(uid, "web", previous=True)))


async def test_a_service_without_a_cluster_manager_says_so(live: Server) -> None:
    async with ShoalClient(live.url, VIEWER) as client:
        with pytest.raises(Unavailable, match="this service has no cluster manager"):
            await client.list_members()


async def test_front_doors_can_record_audit_events(live: Server) -> None:
    async with ShoalClient(live.url, OPERATOR) as client:
        event = await client.record_event(
            ObjectRef(kind="Workload", namespace="default", name="hello"),
            "ToolCalled",
            "list_workloads",
            details={"tool": "list_workloads"},
        )
    assert event.actor.id == "operator@test"
    stored = await live.service.list_events(kind="Workload", name="hello")
    assert stored[-1].details == {"tool": "list_workloads"}


async def test_readyz_says_why_a_node_is_not_ready() -> None:
    clock = SystemClock()
    async with MemoryStore(clock=clock) as store:
        why: list[str | None] = ["cannot reach etcd at 127.0.0.1:2379"]

        async def ready() -> str | None:
            return why[0]

        app = create_app(ShoalService(store, clock), RequestVerifier(lambda _: None), ready=ready)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            down = await http.get("/readyz")
            why[0] = None
            up = await http.get("/readyz")
    assert down.status_code == 503
    assert down.json() == {"status": "not ready", "reason": "cannot reach etcd at 127.0.0.1:2379"}
    assert (up.status_code, up.json()) == (200, {"status": "ready"})


async def test_a_config_deleted_with_if_match_goes_only_as_that_version(server: Server) -> None:
    settings = {"kind": "ConfigMap", "name": "settings", "data": {"mode": "a"}}
    token = {"kind": "Secret", "name": "token", "string_data": {"key": "s3cret"}}
    async with ShoalClient(server.url, OPERATOR) as client:
        await client.apply_documents([settings, token])
        planned = Expected.of(await client.get_config_map("settings"))
        await client.apply_documents([dict(settings, data={"mode": "b"})])  # another writer
        with pytest.raises(Conflict, match="ConfigMap default/settings changed since"):
            await client.delete_config("ConfigMap", "settings", expected=planned)
        current = Expected.of(await client.get_config_map("settings"))
        assert current.generation == planned.generation + 1
        await client.delete_config("ConfigMap", "settings", expected=current)
        with pytest.raises(NotFound):
            await client.get_config_map("settings")

        planned = Expected.of(await client.get_secret("token"))
        await client.delete_config("Secret", "token")
        await client.apply_documents([token])  # made again: a new uid
        with pytest.raises(Conflict, match="Secret default/token was deleted and made again"):
            await client.delete_config("Secret", "token", expected=planned)
        assert (await client.get_secret("token")).uid != planned.uid
        with pytest.raises(InvalidInput, match="namespace default has no version to expect"):
            await client.delete_config("Namespace", "default", expected=planned)


async def test_a_change_sent_with_if_match_is_made_only_on_that_version(server: Server) -> None:
    async with ShoalClient(server.url, OPERATOR) as client:
        await client.apply([WorkloadSpec.model_validate(HELLO)])
        planned = Expected.of(await client.get_workload("hello"))
        await client.scale("hello", 4)  # another writer, after the plan
        for act in [
            client.scale("hello", 0, expected=planned),
            client.delete_workload("hello", expected=planned),
            client.pause_rollout("hello", expected=planned),
            client.rollout_undo("hello", expected=planned),
            client.promote_rollout("hello", expected=planned),
        ]:
            with pytest.raises(Conflict, match="changed since this change was planned"):
                await act
        workload = await client.get_workload("hello")
        assert workload.spec.replicas == 4 and not workload.deleting and not workload.spec.paused
        assert (await client.delete_workload("hello", expected=Expected.of(workload))).deleting
    async with server.client(OPERATOR) as http:
        bad = await http.post(
            "/v1/workloads/default/hello/scale", json={"replicas": 1}, headers={"If-Match": "*"}
        )
        assert bad.status_code == 400
        assert "If-Match '*' is not an object's version" in str((await error_of(bad))["message"])
        signed = bad.request.headers["Signature-Input"]
        assert '"if-match"' in signed  # the client signs the precondition it sends
