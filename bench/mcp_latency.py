"""Benchmark: latency of ``list_workloads`` through MCP, over stdio and HTTP, against in-process.

Starts a real ``shoal agent`` (mock runtime, memory state) in a temporary
directory and stores 100 workloads in it, then times one call per transport
per round, alternating the three in one loop so machine noise hits them all:

* in-process — ``ShoalService.list_workloads()`` over a MemoryStore holding
  the same 100 workloads, in this process: the floor;
* mcp-direct — the MCP server's tool call (``MCPServer.call_tool``) over that
  same service, in this process: what the MCP layer itself adds (the gate,
  the audit event, the views, the result conversion), without a transport;
* rest — ``list_workloads`` over the agent's signed REST API (``ShoalClient``):
  one HTTP hop to the same in-process service, for reference;
* http-raw — the MCP tool ``list_workloads`` over streamable HTTP at the
  agent's ``/mcp`` with an operator bearer token, as one plain JSON-RPC POST
  (2026-07-28 protocol): what the agent's MCP endpoint costs (bearer check,
  tool call, its audit event, the views, the transport);
* http — the same through the MCP SDK's client, which also validates every
  result against the tool's output schema;
* stdio — the same tool through a ``shoal mcp`` subprocess, which reaches the
  agent over signed REST (one more process and HTTP hop than HTTP).

It prints p50 and p99 per transport, their ratios to in-process, and what MCP
over HTTP adds at p50 (aim: under 5 ms). Then the agent's own view, scraped
from its ``GET /metrics``: p50 and p99 of its histograms of the MCP tool call
and of the REST routes the transports reached, beside the bench's figures.
And the cost of telemetry: mcp-direct runs twice, over a service whose store
calls are timed and an MCP server that counts its tool calls, each call
recorded as a span in the agent's span buffer, its store calls as events of
it (on), and over the
same without metrics and with every span dropped (off); the ratio of their
p50s is printed (aim: at most 1.05). The bench's own process sets its garbage
collector as the agent does (:func:`shoal.agent.tune_gc`) once its servers
exist, so a full collection of the process's modules does not land in some
calls and not others. Run with ``uv run python bench/mcp_latency.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import InputRequiredResult
from prometheus_client.parser import text_string_to_metric_families

from shoal.agent import SpanRecorder, tune_gc
from shoal.agent._metrics import PrometheusMetrics, histogram_quantile
from shoal.client import ShoalClient, init_keypair, load_keypair
from shoal.core import MeteredStore, ShoalService, SystemClock
from shoal.interfaces import NO_METRICS, Catalogue, MetricSpec, Role, WorkloadSpec
from shoal.mcp import McpSettings, build_server, create_token, in_process
from shoal.state import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, only bench/ is on the path
    sys.path.insert(0, str(ROOT))
from bench.common import TracingSwitch, install_switched_tracing  # noqa: E402

READY = "ready: API on http://"
PROTOCOL = "2026-07-28"
RAW_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": "list_workloads",
        "arguments": {},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": PROTOCOL,
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}


def workloads(count: int) -> list[WorkloadSpec]:
    return [
        WorkloadSpec.model_validate(
            {
                "name": f"app-{i:03d}",
                "replicas": 0,  # stored, not running: the bench measures reads
                "labels": {"team": "bench"},
                "template": {"containers": [{"name": "main", "image": "registry.local/app:1"}]},
            }
        )
        for i in range(count)
    ]


def start_agent(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start `shoal agent` and return it with its URL once it is ready."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "shoal.cli", "agent", "--data-dir", str(root / "data")),
            *("--api-addr", "127.0.0.1:0", "--state", "memory", "--runtime", "mock"),
            *("--name", "bench"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if READY in line:
            # Keep draining its log so that a full pipe never blocks the agent.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, "http://" + line.split(READY, 1)[1].split(",", 1)[0]
    raise SystemExit("the agent exited before it was ready")


def scraped_quantiles(text: str, spec: MetricSpec, **labels: str) -> tuple[float, float] | None:
    """Return p50 and p99 of histogram ``spec`` in a scraped exposition, over ``labels``."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != spec.name + "_bucket":
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    ordered = sorted(buckets.items())
    p50, p99 = histogram_quantile(0.5, ordered), histogram_quantile(0.99, ordered)
    return None if p50 is None or p99 is None else (p50, p99)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(rounds: int, count: int, root: Path, env: dict[str, str], url: str) -> None:
    keypair = load_keypair(root / "home")
    specs = workloads(count)
    async with ShoalClient(url, keypair) as setup:
        await setup.apply(specs)
    clock = SystemClock()
    token = create_token(keypair, Role.OPERATOR, 3600)
    stdio = StdioServerParameters(
        command=sys.executable,
        args=["-m", "shoal.cli", "mcp"],
        env={"SHOAL_HOME": env["SHOAL_HOME"], "SHOAL_SERVER": url},
    )
    raw_headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL,
        "MCP-Method": "tools/call",
        "MCP-Name": "list_workloads",
    }
    async with (
        ShoalClient(url, keypair) as rest,
        MemoryStore(clock=clock) as store,
        httpx.AsyncClient(base_url=url, headers=raw_headers) as raw,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as over_http,
        Client(stdio) as over_stdio,
    ):
        service = ShoalService(store, clock)
        await service.apply(specs)
        direct_off = build_server(in_process(service), McpSettings(metrics=NO_METRICS))
        metrics = PrometheusMetrics()
        measured = ShoalService(MeteredStore(store, metrics), clock)
        direct = build_server(in_process(measured), McpSettings(metrics=metrics))
        tune_gc()  # the in-process servers' collector as `shoal agent` sets it for its own

        async def service_call() -> None:
            assert len(await service.list_workloads()) == count

        def tool(client: Client) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                result = await client.call_tool("list_workloads", {})
                assert not result.is_error and result.structured_content is not None
                assert len(result.structured_content["workloads"]) == count

            return call

        async def raw_http() -> None:
            response = await raw.post("/mcp", json=RAW_CALL)
            response.raise_for_status()
            assert len(response.json()["result"]["structuredContent"]["workloads"]) == count

        async def mcp_direct() -> None:
            tracing.on = True
            result = await direct.call_tool("list_workloads", {})
            assert not isinstance(result, InputRequiredResult) and not result.is_error

        async def mcp_direct_off() -> None:
            tracing.on = False
            result = await direct_off.call_tool("list_workloads", {})
            assert not isinstance(result, InputRequiredResult) and not result.is_error

        async def over_rest() -> None:
            assert len(await rest.list_workloads()) == count

        calls = {
            "in-process": service_call,
            "mcp-direct": mcp_direct,
            "mcp-off": mcp_direct_off,
            "rest": over_rest,
            "http-raw": raw_http,
            "http": tool(over_http),
            "stdio": tool(over_stdio),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        swapped = list(calls)
        on, off = swapped.index("mcp-direct"), swapped.index("mcp-off")
        swapped[on], swapped[off] = swapped[off], swapped[on]
        for round_ in range(rounds + 10):  # the first 10 rounds warm up
            # Telemetry on and off swap places every round: neither always goes first.
            for name in swapped if round_ % 2 else names:
                call = calls[name]
                start = time.perf_counter()
                await call()
                if round_ >= 10:
                    samples[name].append(time.perf_counter() - start)
        scraped = (await raw.get("/metrics")).text
        spans = len(recorder)

    base50 = statistics.median(samples["in-process"])
    base99 = percentile(samples["in-process"], 0.99)
    print(f"list_workloads with {count} workloads stored, {rounds} calls per transport")
    for name, taken in samples.items():
        p50, p99 = statistics.median(taken), percentile(taken, 0.99)
        print(
            f"{name:>10}  p50 {p50 * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms"
            f"  ratio p50 {p50 / base50:6.1f}  p99 {p99 / base99:6.1f}"
        )
    ms = {name: statistics.median(taken) * 1000 for name, taken in samples.items()}
    base = ms["in-process"]
    print(f"MCP over HTTP adds {ms['http-raw'] - base:.2f} ms at p50 (aim: < 5 ms):")
    print(f"  the MCP layer {ms['mcp-direct'] - base:.2f} ms, the HTTP hop the rest")
    print(f"  (REST adds {ms['rest'] - base:.2f} ms for the same call over HTTP)")
    print(f"the SDK client adds {ms['http'] - ms['http-raw']:.2f} ms more (result validation)")
    print_agent_view(scraped, samples)
    off50 = statistics.median(samples["mcp-off"])
    print(
        f"telemetry on/off (mcp-direct): p50 {ms['mcp-direct']:.2f} ms / {off50 * 1000:.2f} ms, "
        f"ratio {ms['mcp-direct'] / (off50 * 1000):.3f}  (aim: <= 1.05)"
    )
    print(f"  (on: metrics and traces, {spans} spans recorded; off: neither)")


tracing = TracingSwitch()
recorder = SpanRecorder()


def print_agent_view(scraped: str, samples: dict[str, list[float]]) -> None:
    """Print the agent's histograms (p50/p99) beside the bench's figures for the same calls."""
    print("the agent's histograms (GET /metrics; warm-up calls included):")
    views = (
        (
            "MCP tool list_workloads",
            Catalogue.MCP_TOOL_DURATION,
            {"tool": "list_workloads"},
            ["http-raw", "http"],
        ),
        (
            "REST POST /mcp",
            Catalogue.API_REQUEST_DURATION,
            {"route": "/mcp", "method": "POST"},
            ["http-raw", "http"],
        ),
        (
            "REST GET /v1/workloads",
            Catalogue.API_REQUEST_DURATION,
            {"route": "/v1/workloads", "method": "GET"},
            ["rest", "stdio"],
        ),
    )
    for title, spec, labels, transports in views:
        found = scraped_quantiles(scraped, spec, **labels)
        bench = sorted(t for name in transports for t in samples[name])
        mine = f"bench ({'+'.join(transports)}) p50 {statistics.median(bench) * 1000:6.2f} ms"
        if found is None:
            print(f"  {title:<24} no observations   {mine}")
            continue
        p50, p99 = found
        print(
            f"  {title:<24} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms   "
            f"{mine}  p99 {percentile(bench, 0.99) * 1000:6.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="calls per transport")
    parser.add_argument("--workloads", type=int, default=100, help="workloads stored")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env |= {"SHOAL_HOME": str(root / "home"), "SHOAL_LOG_LEVEL": "INFO"}
        init_keypair(root / "home", "bench@local")
        agent, url = start_agent(root, env)
        try:
            install_switched_tracing(tracing, recorder)
            anyio.run(measure, args.rounds, args.workloads, root, env, url)
        finally:
            agent.terminate()
            agent.wait(timeout=30)


if __name__ == "__main__":
    main()
