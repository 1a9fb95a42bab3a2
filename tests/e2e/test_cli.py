"""The CLI against a real agent process: the issue's "done when", end to end."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Agent, agent_in

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "hello.yaml"


@pytest.fixture(scope="module")
def idle_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One started agent (mock runtime) for the tests that must leave it without workloads."""
    with agent_in(tmp_path_factory.mktemp("idle-agent")) as handle:
        handle.start()
        yield handle


def all_running(instances: Any) -> list[Any] | None:
    """Return the instances if they are the three of hello, all running."""
    ok = (
        isinstance(instances, list)
        and len(instances) == 3
        and all(i["state"] == "running" for i in instances)
    )
    return instances if ok else None


def test_apply_get_and_survive_sigkill(agent: Agent) -> None:
    agent.start()
    assert any("authorizing your key" in line for line in agent.log)
    planned = agent.cli("apply", "-f", str(EXAMPLE), "--dry-run").stdout
    assert "would create (+3 instance(s))" in planned
    assert agent.json("get", "workloads") == []
    assert "workload default/hello created" in agent.cli("apply", "-f", str(EXAMPLE)).stdout

    before = agent.wait_for("instances", all_running)
    names = sorted(i["name"] for i in before)
    table = agent.cli("get", "instances").stdout
    assert table.count("running") == 3

    agent.kill(signal.SIGKILL)
    agent.start()
    listed, workloaded = agent.cli_side_by_side(
        ("get", "instances", "-o", "json"), ("get", "workloads", "-o", "json")
    )
    after, workloads = json.loads(listed.stdout), json.loads(workloaded.stdout)
    assert sorted(i["name"] for i in after) == names  # same instances, none duplicated
    assert [w["spec"]["name"] for w in workloads] == ["hello"]
    # The mock runtime lost its containers with the process: they restart in place.
    again = agent.wait_for("instances", all_running)
    assert sorted(i["name"] for i in again) == names

    nodes = agent.json("get", "nodes")
    assert [(n["name"], n["state"]) for n in nodes] == [("e2e-node", "alive")]


def test_operations_and_explain(agent: Agent) -> None:
    agent.start()
    agent.cli("apply", "-f", str(EXAMPLE))
    agent.wait_for("instances", all_running)
    assert "scaled to 1" in agent.cli("scale", "hello", "1").stdout
    (instance,) = agent.wait_for("instances", lambda items: items if len(items) == 1 else None)
    explained, described = agent.cli_side_by_side(
        ("explain", instance["name"]), ("describe", "workload", "hello")
    )
    assert "running on node e2e-node" in explained.stdout
    assert "replicas: 1" in described.stdout and "Scaled" in described.stdout

    assert "cordoned" in agent.cli("cordon", "e2e-node").stdout
    agent.cli("scale", "hello", "2")
    stuck = agent.wait_for(
        "instances",
        lambda items: next(
            (i for i in items if i["state"] == "pending" and i["schedule_failure"]), None
        ),
    )
    why = agent.cli("explain", stuck["name"]).stdout
    assert "node e2e-node: node is cordoned" in why
    agent.cli("uncordon", "e2e-node")
    agent.wait_for(
        "instances",
        lambda items: len(items) == 2 and all(i["state"] == "running" for i in items),
    )
    assert "deleting" in agent.cli("delete", "hello").stdout
    agent.wait_for("workloads", lambda items: items == [])
    listed, logged = agent.cli_side_by_side(
        ("get", "instances", "-o", "json"), ("events", "--limit", "100")
    )
    assert json.loads(listed.stdout) == []
    events = logged.stdout
    for reason in ("Created", "Scaled", "Cordoned", "Uncordoned", "Deleting", "Deleted"):
        assert reason in events
    assert "(cli)" in events  # the actor's front door is recorded


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: [\n", "invalid YAML"),
        ("name: x\nbogus: 1\ntemplate: {containers: [{name: a, image: b}]}\n", "field bogus"),
        ("name: x\nreplicas: -1\ntemplate: {containers: [{name: a, image: b}]}\n", "replicas"),
        (
            "name: x\ntemplate: {containers: [{name: a, image: b, resources: "
            "{requests: {memory: 12Zi}}}]}\n",
            "unknown unit 'Zi'",
        ),
        (
            "name: x\ntemplate: {containers: [{name: a, image: b}, {name: a, image: c}]}\n",
            "used twice",
        ),
        ("name: ok\ntemplate: {containers: [{name: a, image: b}]}\n---\nname: BAD\n", "document 2"),
    ],
)
def test_bad_files_are_refused_whole_with_one_clear_line(
    idle_agent: Agent, tmp_path: Path, content: str, expected: str
) -> None:
    agent = idle_agent
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = agent.cli("apply", "-f", str(bad), check=False)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # Nothing of it applied. Read through the API: `shoal get workloads -o json`
    # itself is checked in test_apply_get_and_survive_sigkill.
    assert agent.read("workloads") == []


def test_client_errors_without_a_server_or_key(agent: Agent, tmp_path: Path) -> None:
    agent.env["SHOAL_SERVER"] = "http://127.0.0.1:9"
    no_key = agent.cli("get", "nodes", check=False)
    assert no_key.returncode == 1 and "shoal keys init" in no_key.stderr
    assert "created key" in agent.cli("keys", "init").stdout
    down = agent.cli("get", "nodes", check=False)
    assert down.returncode == 1
    assert "cannot reach the shoal server at http://127.0.0.1:9" in down.stderr
    assert "Traceback" not in down.stderr
    assert agent.cli("get", "nonsense", check=False).returncode == 2


def test_agent_refuses_an_unwritable_data_dir_and_a_busy_port(agent: Agent, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    agent.data_dir = blocker / "data"
    process = agent.start(expect_ready=False)
    _, stderr = process.communicate(timeout=60)
    agent.process = None
    assert process.returncode == 1
    assert "is not writable" in stderr and "Traceback" not in stderr

    agent.data_dir = tmp_path / "data"
    agent.start()
    busy = agent.url.removeprefix("http://")
    second = Agent(tmp_path / "data2", agent.home, dict(agent.env))
    proc = second.start("--api-addr", busy, expect_ready=False)
    _, stderr = proc.communicate(timeout=60)
    second.process = None
    assert proc.returncode == 1
    assert "cannot listen on" in stderr and "Traceback" not in stderr
