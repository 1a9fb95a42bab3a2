"""Several nodes on one host, and the end of a node: issue 9 end to end, on real runc.

* Two agents with `make run`'s network defaults (no --bridge, no
  --bridge-subnet), each with its own data dir and API port, each serving
  busybox httpd on a free host port: each port answers from its own container
  (its request shows in that container's log only), their pod addresses
  differ, and neither pod reaches the other.
* SIGTERM finishes a deletion in flight (a container whose PID 1 ignores
  SIGTERM holds its stop for the whole grace period) and says which
  workloads keep running.
* `shoal node reset` refuses a data dir in use and a path that is no data dir,
  and removes everything a stopped node left: pods, shims, mounts, network
  namespaces, port rules, its bridge and its claim.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.client import ShoalClient
from shoal.runtime import HostNetworks
from tests.e2e.conftest import Agent, agent_in, leftovers, until
from tests.ports import free_port
from tests.shims import standby_shims

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]


def httpd(tmp_path: Path, name: str, image: str, port: int) -> Path:
    """A workload file: busybox httpd that logs every URL it serves (-vv), on ``port``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""kind: Workload
name: {name}
replicas: 1
template:
  containers:
    - name: web
      image: {image}
      command: ["httpd", "-f", "-vv", "-p", "80", "-h", "/var/www"]
      ports:
        - container_port: 80
          host_port: {port}
"""
    )
    return path


def sleeper(tmp_path: Path, name: str, image: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""kind: Workload
name: {name}
replicas: 1
template:
  containers:
    - name: main
      image: {image}
      command: ["sleep", "3600"]
"""
    )
    return path


def running(*names: str) -> Any:
    """A `wait_for("instances", ...)` check: every named workload has a running instance."""

    def check(items: list[Any]) -> dict[str, Any] | None:
        found = {i["workload"]: i for i in items if i["state"] == "running"}
        return found if all(name in found for name in names) else None

    return check


def served(instance: str, text: str) -> Callable[[ShoalClient], Awaitable[bool]]:
    """A probe for `Agent.until`: ``text`` shows in the instance's log."""

    async def probe(client: ShoalClient) -> bool:
        return any([text in log.line async for log in client.logs(instance, tail=200)])

    return probe


def logged(agent: Agent, instance: str, text: str) -> bool:
    return agent.api(served(instance, text))


def pod_ip(agent: Agent, instance: str) -> str:
    shown = agent.cli("exec", instance, "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    return shown.split(" inet ", 1)[1].split("/", 1)[0]


def test_two_nodes_with_the_default_network_each_serve_only_their_own_pods(
    tmp_path: Path, registry: str
) -> None:
    with agent_in(tmp_path / "one") as one, agent_in(tmp_path / "two") as two:
        agents = {"one": one, "two": two}
        ports = {}
        for label, agent in agents.items():
            agent.runtime = "runc"
            agent.start()
            agent.cli("images", "pull", registry)
            ports[label] = free_port()
            agent.cli("apply", "-f", str(httpd(tmp_path, f"web-{label}", registry, ports[label])))
        instances = {
            label: agent.wait_for("instances", running(f"web-{label}"))[f"web-{label}"]["name"]
            for label, agent in agents.items()
        }
        claims = {label: HostNetworks().owned_by(agent.data_dir) for label, agent in agents.items()}
        assert claims["one"] is not None and claims["two"] is not None
        assert claims["one"].bridge != claims["two"].bridge
        assert claims["one"].subnet != claims["two"].subnet

        # Each port answers from its own container: the URL shows in that log only.
        for label, agent in agents.items():
            page = httpx.get(f"http://127.0.0.1:{ports[label]}/asked-{label}", timeout=10)
            assert page.status_code == 404  # no such file; httpd still logs the URL
            agent.until(
                f"{label}'s httpd to log its request",
                served(instances[label], f"asked-{label}"),
                timeout=30,
            )
        assert not logged(one, instances["one"], "asked-two")
        assert not logged(two, instances["two"], "asked-one")

        ips = {label: pod_ip(agents[label], instances[label]) for label in agents}
        assert ips["one"] != ips["two"]
        # Neither pod reaches the other's: each has a route to its own subnet only.
        reach = one.cli(
            "exec",
            instances["one"],
            "--",
            "wget",
            "-T",
            "2",
            "-qO-",
            f"http://{ips['two']}/",
            check=False,
        )
        assert reach.returncode != 0

        # Asking for the other node's bridge is refused, naming its owner and the fix.
        three = Agent(tmp_path / "three" / "data", one.home, dict(one.env), runtime="runc")
        process = three.start("--bridge", claims["one"].bridge, expect_ready=False)
        _, err = process.communicate(timeout=60)
        assert process.returncode != 0
        assert f"bridge {claims['one'].bridge} belongs to the node on data dir" in err
        assert str(one.data_dir) in err and "agent pid" in err and "--bridge NAME" in err


def test_sigterm_finishes_a_deletion_in_flight_and_names_what_keeps_running(
    agent: Agent, registry: str, tmp_path: Path
) -> None:
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "pull", registry)
    agent.cli("apply", "-f", str(httpd(tmp_path, "stubborn", registry, free_port())))
    agent.cli("apply", "-f", str(sleeper(tmp_path, "keeper", registry)))
    found = agent.wait_for("instances", running("stubborn", "keeper"))
    stubborn, keeper = found["stubborn"], found["keeper"]

    # httpd is PID 1 of its container and ignores SIGTERM: its stop takes the
    # whole grace period, and the agent is told to stop while it runs.
    agent.cli("delete", "stubborn")
    assert agent.kill(signal.SIGTERM, timeout=60) == 0
    log = "".join(agent.log)
    assert leftovers(agent.data_dir, stubborn["uid"]) == [], log
    assert "workload default/keeper keeps 1 pod(s) running after the agent stops" in log
    assert f"shoal node reset --data-dir {agent.data_dir.resolve()}" in log
    assert "stubborn" not in log.split("keeps 1 pod(s)")[1].split("\n")[0]
    state = subprocess.run(
        [
            "runc",
            "--root",
            str(agent.data_dir / "runtime" / "runc"),
            "state",
            f"{keeper['uid']}-main",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert '"status": "running"' in state.stdout, state


def test_reset_removes_what_a_stopped_node_left_and_refuses_while_it_runs(
    agent: Agent, registry: str, tmp_path: Path
) -> None:
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "pull", registry)
    port = free_port()
    agent.cli("apply", "-f", str(httpd(tmp_path, "web", registry, port)))
    uid = agent.wait_for("instances", running("web"))["web"]["uid"]
    claim = HostNetworks().owned_by(agent.data_dir)
    assert claim is not None and Path("/sys/class/net", claim.bridge).exists()

    assert agent.process is not None
    refused = agent.cli("node", "reset", "--data-dir", str(agent.data_dir), check=False)
    assert refused.returncode == 1
    assert f"another shoal agent (pid {agent.process.pid}) runs on data dir" in refused.stderr

    shims = standby_shims(agent.process.pid)
    assert shims, "the agent keeps a standby shim warm"
    agent.kill(signal.SIGKILL)
    until("its standby shims to exit with it", lambda: not standby_shims() & shims, timeout=30)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # by design

    reset = agent.cli("node", "reset", "--data-dir", str(agent.data_dir), "--grace", "1")
    assert "removed pods: web-" in reset.stdout
    assert f"released bridge {claim.bridge}: deleted" in reset.stdout
    assert leftovers(agent.data_dir, uid) == []
    assert not Path("/sys/class/net", claim.bridge).exists()
    assert HostNetworks().owned_by(agent.data_dir) is None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)

    # A second reset finds nothing to do; a path that is no data dir is refused untouched.
    again = agent.cli("node", "reset", "--data-dir", str(agent.data_dir))
    assert "removed pods: none" in again.stdout
    stranger = tmp_path / "not-a-data-dir"
    (stranger / "runtime").mkdir(parents=True)
    wrong = agent.cli("node", "reset", "--data-dir", str(stranger), check=False)
    assert wrong.returncode == 1
    assert "is not a Shoal data dir (it has no node.key): nothing was touched" in wrong.stderr
    assert [p.name for p in stranger.iterdir()] == ["runtime"]
