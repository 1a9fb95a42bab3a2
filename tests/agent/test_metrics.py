"""GET /metrics: the catalogue holds, a real scrape parses, and churn adds no series."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from shoal.agent import NodeConfig, ShoalNode, run_agent
from shoal.agent._metrics import PrometheusMetrics
from shoal.core import (
    ControlLoop,
    DefaultScheduler,
    LocalNodeState,
    MeteredStore,
    NodeLoop,
    ShoalService,
    SystemClock,
)
from shoal.interfaces import (
    INSTANCES,
    METRICS,
    Capacity,
    Catalogue,
    EventKind,
    Instance,
    InstanceState,
    MetricKind,
    MetricSpec,
    Node,
    StateStore,
    Unavailable,
    WorkloadSpec,
)
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
ROW = re.compile(r"^\| `(shoal_\w+)` \| (\w+) \| ([^|]*) \|")


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The catalogue table of docs/observability.md: name → (type, label names)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match[1]] = (match[2], tuple(re.findall(r"`(\w+)`", match[3])))
    return rows


def test_the_documented_catalogue_is_the_one_in_the_code() -> None:
    in_code = {spec.name: (spec.kind.value, spec.labels) for spec in METRICS}
    assert documented() == in_code


def test_the_registry_exports_exactly_the_catalogue_with_its_labels() -> None:
    metrics = PrometheusMetrics()
    for spec in METRICS:  # one sample each, so every family shows its labels
        values = tuple(f"v{i}" for i in range(len(spec.labels)))
        if spec.kind == MetricKind.COUNTER:
            metrics.inc(spec, *values)
        elif spec.kind == MetricKind.GAUGE:
            metrics.set(spec, 1, *values)
        else:
            metrics.observe(spec, 0.1, *values)
    families = {
        family.name: family
        for family in text_string_to_metric_families(metrics.exposition()[0].decode())
    }
    # The parser names a counter family without its _total suffix.
    expected = {spec.name.removesuffix("_total"): spec for spec in METRICS}
    assert set(families) == set(expected)
    for name, family in families.items():
        spec = expected[name]
        assert family.type == spec.kind.value, name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert labels == set(spec.labels), name


def test_a_metric_outside_the_catalogue_is_refused_by_name() -> None:
    stray = MetricSpec("shoal_stray", MetricKind.GAUGE, "not catalogued")
    with pytest.raises(KeyError, match=r"shoal_stray is not in shoal\.interfaces\.METRICS"):
        PrometheusMetrics().set(stray, 1)


def hello(name: str, replicas: int) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": name,
            "replicas": replicas,
            "template": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
        }
    )


async def until_instances(store: StateStore, done: Callable[[dict[str, Instance]], bool]) -> None:
    """Follow the store's instances (listed, then watched) until ``done`` holds of them."""
    listed = await store.list(INSTANCES)
    seen = {kv.key: Instance.model_validate_json(kv.value) for kv in listed.items}
    if done(seen):
        return
    with anyio.fail_after(60):
        async for event in store.watch(INSTANCES, listed.revision + 1):
            if event.kind == EventKind.PUT:
                seen[event.kv.key] = Instance.model_validate_json(event.kv.value)
            else:
                seen.pop(event.kv.key, None)
            if done(seen):
                return


def all_running(count: int) -> Callable[[dict[str, Instance]], bool]:
    def done(seen: dict[str, Instance]) -> bool:
        states = [i.state for i in seen.values()]
        return len(states) == count and all(s == InstanceState.RUNNING for s in states)

    return done


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@asynccontextmanager
async def agent(tmp_path: Path) -> AsyncIterator[ShoalNode]:
    config = NodeConfig(
        data_dir=tmp_path / "data",
        name="m1",
        runtime="mock",
        state="memory",
        api_addr="127.0.0.1:0",
    )
    home = tmp_path / "home"
    home.mkdir()
    async with anyio.create_task_group() as tg:
        node: ShoalNode = await tg.start(run_agent, config, home)
        yield node
        tg.cancel_scope.cancel()


async def test_a_scrape_over_http_shows_the_api_the_loops_the_runtime_and_the_store(
    tmp_path: Path,
) -> None:
    async with agent(tmp_path) as node:
        await node.service.apply([hello("web", 2)])
        await until_instances(node.store, all_running(2))
        url = f"http://{node.config.api_addr}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            unsigned = await http.get("/v1/workloads/default/web")
            assert unsigned.status_code == 401
            reply = await http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = samples(reply.text)
    route = "/v1/workloads/{namespace}/{name}"
    assert (
        value(
            found,
            "shoal_api_request_duration_seconds_count",
            route=route,
            method="GET",
            status="401",
        )
        == 1
    )
    assert all(s.labels.get("route") != "/v1/workloads/default/web" for s in found)
    assert value(found, "shoal_leader") == 1
    assert value(found, "shoal_instances", state="running") == 2
    assert value(found, "shoal_instances", state="failed") == 0
    assert value(found, "shoal_gossip_members", state="alive") == 1
    assert value(found, "shoal_scheduling_attempts_total", result="scheduled") == 2
    assert value(found, "shoal_workqueue_adds_total", queue="control") >= 1
    assert value(found, "shoal_workqueue_work_duration_seconds_count", queue="control") >= 1
    assert value(found, "shoal_node_loop_actions_total", action="start", outcome="ok") == 2
    assert value(found, "shoal_runtime_operation_duration_seconds_count", operation="run") == 2
    assert value(found, "shoal_runtime_operation_duration_seconds_count", operation="pull") == 2
    assert value(found, "shoal_store_operation_duration_seconds_count", operation="put") >= 2
    assert value(found, "shoal_instance_start_duration_seconds_count") == 2


async def test_churning_a_thousand_instances_adds_no_series() -> None:
    metrics = PrometheusMetrics()
    clock = SystemClock()
    capacity = Capacity.model_validate({"cpu": "64", "memory": "64Gi", "pods": 1000})
    node = Node(name="c1", capacity=capacity, allocatable=capacity, runtime="mock")
    counts = []
    async with MemoryStore(clock=clock) as raw, anyio.create_task_group() as tg:
        store = MeteredStore(raw, metrics)
        service = ShoalService(store, clock)
        await tg.start(ControlLoop(store, DefaultScheduler(), clock, metrics=metrics).run)
        await tg.start(
            NodeLoop(
                node, LocalNodeState(store, node.name), MockRuntime(clock), clock, metrics=metrics
            ).run
        )
        for round_ in range(10):  # ten workloads of their own names, 100 instances each
            name = f"churn-{round_}"
            await service.apply([hello(name, 100)])
            await until_instances(raw, all_running(100))
            await service.delete_workload(name)
            await until_instances(raw, lambda seen: not seen)
            counts.append(metrics.series())
        tg.cancel_scope.cancel()
    assert metrics.count(Catalogue.INSTANCE_START_DURATION) == 1000
    assert counts == [counts[0]] * 10, counts
    body = metrics.exposition()[0].decode()
    assert "churn-" not in body


async def test_metrics_addr_serves_the_metrics_alone_at_an_address_of_their_own(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = NodeConfig(
        data_dir=tmp_path / "data",
        name="m2",
        runtime="mock",
        state="memory",
        api_addr="127.0.0.1:0",
        metrics_addr="127.0.0.1:0",
    )
    async with anyio.create_task_group() as tg:
        node: ShoalNode = await tg.start(run_agent, config, home)
        assert node.config.metrics_addr is not None
        assert not node.config.metrics_addr.endswith(":0")  # the port it listens on
        url = f"http://{node.config.metrics_addr}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            scraped = await http.get("/metrics")
            healthz = await http.get("/healthz")
            api = await http.get("/v1/workloads")
        tg.cancel_scope.cancel()
    assert scraped.status_code == 200
    assert value(samples(scraped.text), "shoal_leader") in (0, 1)
    assert healthz.json() == {"status": "ok"}
    assert api.status_code == 404  # the API is not served there


async def test_metrics_addr_equal_to_the_api_addr_is_refused_naming_it(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port, for both options
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = NodeConfig(
        data_dir=tmp_path / "data",
        name="m3",
        runtime="mock",
        state="memory",
        api_addr=f"127.0.0.1:{port}",
        metrics_addr=f"127.0.0.1:{port}",
    )
    expected = f"--metrics-addr 127.0.0.1:{port} is the API's own address"
    with pytest.raises(Unavailable, match=re.escape(expected)):
        await run_agent(config, tmp_path / "home")
    with socket.socket() as again:  # the API's socket was closed on the way out
        again.bind(("127.0.0.1", port))
