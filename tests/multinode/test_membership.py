"""Who gets into a cluster, who leaves it, and what an operator does with its nodes.

One cluster of real agents (a server, and workers w1 in zone a and w2 in
zone b, running one replica each of a workload "base") serves the whole
module: each test leaves it as it found it, but for base. Nodes
that must be refused join it and exit with one line naming the cause and the
fix; the operator then reaches the workers' pods through the server
(logs, exec, top), places by label, cordons, drains, and sees a worker that
stops leave gracefully and come back as itself. The agent's configuration
errors need no cluster: they are refused before anything starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.cluster import NodeIdentity, new_gossip_key, new_join_token
from tests.multinode.support import (
    LocalCluster,
    NodeProcess,
    local_cluster,
    running_by_node,
    wait_until,
    workload_yaml,
)

pytestmark = pytest.mark.slow

TIMEOUT = 90.0
"""Seconds any one wait may take: generous, for a loaded two-core machine."""
AGENT = [sys.executable, "-m", "shoal.cli", "agent", "--runtime", "mock"]


@dataclass
class Nodes:
    """The module's cluster and its three long-lived nodes."""

    cluster: LocalCluster
    srv: NodeProcess
    w1: NodeProcess
    w2: NodeProcess

    def nodes(self) -> dict[str, dict[str, Any]]:
        """The server's node records by name."""
        return {n["name"]: n for n in self.cluster.listing(self.srv, "nodes")}

    def event_ids(self) -> set[str]:
        """Ids of the events the server holds now."""
        return {e["id"] for e in self.cluster.listing(self.srv, "events")}

    def events_since(self, seen: set[str]) -> list[dict[str, Any]]:
        """Events not in ``seen``, oldest first."""
        events = [e for e in self.cluster.listing(self.srv, "events") if e["id"] not in seen]
        return sorted(events, key=lambda e: e["id"])

    def apply(self, document: str) -> None:
        """Apply a workload document (set-up, so through the client: no CLI process)."""
        self.cluster.query(self.srv, lambda c: c.apply_documents([json.loads(document)]))

    def delete(self, workload: str) -> None:
        """Delete ``workload`` and wait until its instances are gone."""
        self.cluster.query(self.srv, lambda c: c.delete_workload(workload))
        wait_until(
            f"{workload} deleted",
            lambda: (
                not any(
                    i["workload"] == workload for i in self.cluster.listing(self.srv, "instances")
                )
            ),
            TIMEOUT,
            self.cluster.logs,
        )

    def all_alive(self) -> dict[str, dict[str, Any]]:
        """Wait until srv, w1 and w2 are alive (each test starts from there)."""

        def alive() -> dict[str, dict[str, Any]] | None:
            nodes = self.nodes()
            states = {name: node["state"] for name, node in nodes.items()}
            return nodes if states == dict.fromkeys(("srv", "w1", "w2"), "alive") else None

        return wait_until("srv, w1 and w2 alive", alive, TIMEOUT, self.cluster.logs)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """A server and two labelled workers, shared by the tests that do not disturb each other."""
    if shutil.which("serf") is None:
        pytest.skip("serf is not installed (make test installs it: apt-get install serf)")
    with local_cluster(tmp_path_factory.mktemp("membership")) as cluster:
        srv = cluster.add("srv", "server")
        cluster.start(srv)
        w1 = cluster.add("w1", "worker", join=[srv], extra=["--label", "zone=a"])
        w2 = cluster.add("w2", "worker", join=[srv], extra=["--label", "zone=b"])
        cluster.start(w1, w2)
        nodes = Nodes(cluster, srv, w1, w2)
        nodes.all_alive()
        # Something for refused nodes to leave alone.
        nodes.apply(workload_yaml("base", 2))
        steady(nodes, "base", {"w1": 1, "w2": 1})
        yield nodes


# --- helpers ---------------------------------------------------------------


def error_lines(output: str) -> list[str]:
    """The lines of ``output`` that the CLI printed as errors."""
    return [line for line in output.splitlines() if line.startswith("error:")]


def serf_members(node: NodeProcess) -> dict[str, str]:
    """Ask ``node``'s own serf agent (with `serf members`) for each member's status."""
    assert node.process is not None
    parent = str(node.process.pid)
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue  # gone meanwhile, or not a process
        if stat.rpartition(")")[2].split()[1] != parent or "agent" not in argv:
            continue
        if not any(Path(a).name == "serf" for a in argv):
            continue
        rpc = next(a.partition("=")[2] for a in argv if a.startswith("-rpc-addr="))
        config = json.loads((node.data_dir / "serf" / "serf.json").read_text())
        listed = subprocess.run(
            [
                "serf",
                "members",
                "-format=json",
                f"-rpc-addr={rpc}",
                f"-rpc-auth={config['rpc_auth']}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return {m["name"]: m["status"] for m in json.loads(listed.stdout)["members"]}
    raise AssertionError(f"{node.name} runs no serf agent")


def refused(nodes: Nodes, node: NodeProcess) -> tuple[int, str, set[str]]:
    """Start ``node`` and wait for it to exit.

    Returns its exit code, its output, and every node name the server listed
    while it ran (looked at until it exited).
    """
    listed: set[str] = set()
    node.start()

    def ended() -> int | None:
        listed.update(nodes.nodes())
        return node.exited()

    wait_until(f"{node.name} to give up", lambda: ended() is not None, TIMEOUT, node.log)
    code = node.exited()
    assert code is not None
    return code, node.log(), listed


def identities(nodes: Nodes) -> dict[str, tuple[str, str]]:
    """Each node record's id and state, by name."""
    return {name: (n["node_id"], n["state"]) for name, n in nodes.nodes().items()}


def stored_state(nodes: Nodes) -> tuple[dict[str, tuple[str, str]], set[tuple[str, str, str]]]:
    """Node records and instances, as far as a refused node could have touched them."""
    instances = {
        (i["name"], i["node"] or "-", i["state"])
        for i in nodes.cluster.listing(nodes.srv, "instances")
    }
    return identities(nodes), instances


def pinned(name: str, replicas: int, zone: str) -> str:
    """A spread workload whose replicas may run only on nodes labelled ``zone``."""
    doc = json.loads(workload_yaml(name, replicas))
    doc["placement"]["constraints"] = {"zone": zone}
    return json.dumps(doc)


def steady(nodes: Nodes, workload: str, want: dict[str, int]) -> dict[str, int]:
    """Wait until ``workload`` runs as ``want`` per node, with no other instance of it left."""

    def placed() -> bool:
        instances = nodes.cluster.listing(nodes.srv, "instances")
        mine = [i for i in instances if i["workload"] == workload]
        return running_by_node(instances, workload) == want and len(mine) == sum(want.values())

    wait_until(f"{workload} running as {want}", placed, TIMEOUT, nodes.cluster.logs)
    return want


# --- bad input -------------------------------------------------------------


def test_agent_configuration_errors_are_one_line_and_start_nothing(tmp_path: Path) -> None:
    token, key = tmp_path / "join-token", tmp_path / "gossip-key"
    token.write_text(new_join_token() + "\n")
    key.write_text(new_gossip_key() + "\n")
    missing = tmp_path / "nowhere" / "join-token"
    needs_both = (
        "error: a clustered node needs both --join-token-file and --gossip-key-file "
        "(`shoal cluster init` writes them)"
    )
    cases: dict[str, tuple[list[str], str]] = {
        "worker-alone": (
            ["--role", "worker"],
            "error: a worker runs the instances of a cluster's servers: give it "
            "--join-token-file, --gossip-key-file and --join SERVER:7946 (see docs/cluster.md)",
        ),
        "join": (
            ["--join", "127.0.0.1:7946"],
            "error: --join clusters the node, which needs the cluster's secrets: "
            "add --join-token-file and --gossip-key-file (`shoal cluster init` writes them)",
        ),
        "etcd": (
            ["--state", "etcd"],
            "error: --state etcd needs the etcd endpoints: --etcd HOST:PORT[,HOST:PORT]",
        ),
        "token-only": (["--join-token-file", str(token)], needs_both),
        "worker-api": (
            ["--role", "worker", "--api-addr", "127.0.0.1:0"],
            "error: --api-addr: a worker serves no REST API (commands go to a server's): leave "
            "it out; --metrics-addr serves the worker's GET /metrics",
        ),
        "key-only": (["--role", "worker", "--gossip-key-file", str(key)], needs_both),
        "token-missing": (
            ["--join-token-file", str(missing), "--gossip-key-file", str(key)],
            f"error: cannot read the join token from {missing} (No such file or directory): "
            "create the cluster's secrets with `shoal cluster init` and pass their paths",
        ),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_HOME"] = str(tmp_path / "home")
    started: dict[str, subprocess.Popen[str]] = {}
    try:
        # All at once: each is a fresh Python process, and none may start anything.
        for case, (args, _) in cases.items():
            api = [] if "worker" in args else ["--api-addr", "127.0.0.1:0"]  # a worker has none
            started[case] = subprocess.Popen(
                [*AGENT, *api, "--data-dir", str(tmp_path / case), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        for case, (_, message) in cases.items():
            stdout, stderr = started[case].communicate(timeout=TIMEOUT)
            assert started[case].returncode == 1, (case, stdout, stderr)
            assert stderr.splitlines() == [message], case
            assert stdout == "", case
            data_dir = tmp_path / case
            assert not (data_dir / "serf").exists(), case
            assert not (data_dir / "state.db").exists(), case
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


WRONG_TOKEN = (
    "node '{name}' presented a wrong join token: start the node with the join token of this "
    "cluster (the file `shoal cluster init` wrote)"
)


@pytest.mark.parametrize(
    ("name", "role", "error", "gone"),
    [
        # A worker is refused by the server it registers with; its agent then stops.
        ("wt", "worker", WRONG_TOKEN, {"failed", "left"}),
        # A server asks the cluster's servers before it serves, and leaves when refused.
        ("st", "server", "server srv of the cluster refuses this server: " + WRONG_TOKEN, {"left"}),
    ],
)
def test_a_wrong_join_token_is_refused_and_leaves_no_member_behind(
    shared: Nodes, tmp_path: Path, name: str, role: str, error: str, gone: set[str]
) -> None:
    before = stored_state(shared)
    seen = shared.event_ids()
    token = tmp_path / "other-join-token"
    token.write_text(new_join_token() + "\n")
    node = shared.cluster.add(
        name, role, join=[shared.srv], secrets=shared.cluster.secret_args(token=token)
    )

    code, output, listed = refused(shared, node)

    assert code == 1, output
    assert error_lines(output) == ["error: " + error.format(name=name)], output
    assert "Traceback" not in output
    assert name not in listed
    # It gossiped with the right key for a moment; once gone, gossip does not call it alive.
    wait_until(
        f"the server's serf agent to see {name} {' or '.join(sorted(gone))}",
        lambda: serf_members(shared.srv).get(name) in gone,
        TIMEOUT,
        lambda: str(serf_members(shared.srv)),
    )
    assert stored_state(shared) == before
    new = shared.events_since(seen)
    assert not [e for e in new if e["object"]["name"] == name], new


def test_a_second_server_with_its_own_store_is_refused_and_the_first_keeps_leading(
    shared: Nodes,
) -> None:
    before = stored_state(shared)
    seen = shared.event_ids()
    # Same secrets, but its own SQLite state: a second cluster state in one cluster.
    node = shared.cluster.add("s2", "server", join=[shared.srv])

    code, output, listed = refused(shared, node)

    assert code == 1, output
    (line,) = error_lines(output)
    assert line.startswith("error: server(s) srv (cluster id "), line
    assert "keep another cluster state than this server, whose store was created just now" in line
    assert "servers of one cluster share one etcd (--state etcd" in line, line
    assert "Traceback" not in output
    assert "s2" not in listed
    wait_until(
        "the server's serf agent to see s2 left",
        lambda: serf_members(shared.srv).get("s2") == "left",
        TIMEOUT,
        lambda: str(serf_members(shared.srv)),
    )
    # The cluster's own server still schedules from the cluster's state.
    shared.apply(pinned("after-s2", 1, "b"))
    steady(shared, "after-s2", {"w2": 1})
    shared.delete("after-s2")
    assert stored_state(shared) == before
    assert not [e for e in shared.events_since(seen) if e["object"]["name"] == "s2"]


def test_a_wrong_gossip_key_cannot_join(shared: Nodes, tmp_path: Path) -> None:
    before = stored_state(shared)
    key = tmp_path / "other-gossip-key"
    key.write_text(new_gossip_key() + "\n")
    node = shared.cluster.add(
        "wk", "worker", join=[shared.srv], secrets=shared.cluster.secret_args(gossip_key=key)
    )

    code, output, listed = refused(shared, node)

    assert code == 1, output
    (line,) = error_lines(output)
    assert line.startswith(f"error: could not join {shared.srv.gossip}: gossip key mismatch ("), (
        line
    )
    assert (
        "); every node must use the cluster's gossip key (the one `shoal cluster init` created). "
        "Or the address is not a node's gossip port: --join takes a server's --bind address"
    ) in line, line
    assert "Traceback" not in output
    assert "wk" not in listed
    assert "wk" not in serf_members(shared.srv)
    assert stored_state(shared) == before


def test_a_node_without_serf_says_how_to_install_it(shared: Nodes, tmp_path: Path) -> None:
    before = stored_state(shared)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    node = shared.cluster.add("ws", "worker", join=[shared.srv], env={"PATH": str(bin_dir)})

    code, output, listed = refused(shared, node)

    assert code == 1, output
    assert error_lines(output) == [
        "error: the serf binary 'serf' was not found (looked on PATH and as a path): "
        "install it with `apt-get install serf` (scripts/system-deps.sh does), "
        "or put a serf executable on the PATH"
    ], output
    assert "Traceback" not in output
    assert "ws" not in listed
    assert "ws" not in serf_members(shared.srv)
    assert stored_state(shared) == before


def test_a_second_node_with_a_taken_name_is_refused_and_the_first_keeps_running(
    shared: Nodes,
) -> None:
    w1_id = shared.all_alive()["w1"]["node_id"]
    before = stored_state(shared)
    seen = shared.event_ids()
    # Another data dir (so another node key) under w1's name: the last --name wins.
    copy = shared.cluster.add("w1-copy", "worker", join=[shared.srv], extra=["--name", "w1"])

    code, output, _ = refused(shared, copy)

    copy_id = NodeIdentity.load_or_create("", copy.data_dir / "node.key").node_id
    assert code == 1, output
    assert error_lines(output) == [
        f"error: node name 'w1' is registered to another key (id {w1_id}, this call's key "
        f"has id {copy_id}); a node keeps its identity in <data-dir>/node.key — restore it, "
        "or pick another --name"
    ], output
    assert "Traceback" not in output
    # The first w1 still runs, is still w1 to the cluster, keeps its work and takes more.
    assert shared.w1.exited() is None
    shared.apply(pinned("after-copy", 1, "a"))
    steady(shared, "after-copy", {"w1": 1})
    shared.delete("after-copy")
    assert stored_state(shared) == before
    assert serf_members(shared.srv)["w1"] == "alive"
    troubles = [
        e
        for e in shared.events_since(seen)
        if e["reason"] in ("NodeFailed", "NodeLost", "Registered")
    ]
    assert troubles == []


# --- operating the cluster -------------------------------------------------


def test_a_label_constraint_places_on_the_labelled_worker_only(shared: Nodes) -> None:
    nodes = shared.all_alive()
    assert nodes["w1"]["labels"] == {"zone": "a"}
    assert nodes["w2"]["labels"] == {"zone": "b"}
    described = shared.cluster.cli(shared.srv, "describe", "node", "w1").stdout
    assert "labels:\n  zone: a\n" in described, described

    shared.apply(pinned("zoned", 3, "a"))

    # Spread would put replicas on both workers; the constraint keeps them in zone a.
    steady(shared, "zoned", {"w1": 3})
    shared.delete("zoned")


def test_logs_exec_and_top_reach_a_worker_through_the_server(shared: Nodes) -> None:
    shared.all_alive()
    shared.apply(pinned("tools", 1, "b"))
    steady(shared, "tools", {"w2": 1})
    (name,) = [
        i["name"]
        for i in shared.cluster.listing(shared.srv, "instances")
        if i["workload"] == "tools"
    ]

    logs = shared.cluster.cli(shared.srv, "logs", name)
    assert logs.stdout == "started main\n"  # what the mock runtime logs when a container starts

    run = shared.cluster.cli(shared.srv, "exec", name, "--", "echo", "hi")
    assert run.stdout == "echo hi"  # the mock runtime's exec echoes the command
    assert run.stderr == ""

    top = shared.cluster.cli(shared.srv, "top", name).stdout.splitlines()
    assert top[0].split() == ["NAMESPACE", "INSTANCE", "CONTAINER", "CPU", "MEMORY", "PIDS"]
    assert [line.split() for line in top[1:]] == [["default", name, "main", "0", "0", "0"]]

    # Its usage history is kept by w2 (sampled every 10 s); the server reads it over gRPC.
    def sampled() -> int:
        series = shared.cluster.query(shared.srv, lambda c: c.usage("instance", name, range="15m"))
        assert series.node == "w2"
        return len(series.points)

    wait_until("w2 to sample the instance", sampled, timeout=30)
    history = shared.cluster.cli(shared.srv, "top", name, "--range", "15m").stdout
    assert name in history and "no samples" not in history, history
    shared.delete("tools")


def test_cordon_keeps_new_replicas_off_and_drain_moves_them_replacement_first(
    shared: Nodes,
) -> None:
    shared.all_alive()
    shared.apply(workload_yaml("move", 4))
    steady(shared, "move", {"w1": 2, "w2": 2})

    cordoned = shared.cluster.cli(shared.srv, "cordon", "w1")
    assert cordoned.stdout.strip() == "node w1 cordoned"
    assert shared.nodes()["w1"]["cordoned"] is True
    shared.cluster.query(shared.srv, lambda c: c.scale("move", 6))
    # Spread would give w1 its share of the new replicas; cordoned, it gets none.
    steady(shared, "move", {"w1": 2, "w2": 4})

    seen = shared.event_ids()
    drained = shared.cluster.cli(shared.srv, "drain", "w1")
    assert drained.stdout.strip() == "node w1 draining"
    steady(shared, "move", {"w2": 6})
    assert shared.nodes()["w1"]["draining"] is True

    # Replay what happened: a replacement started before each old replica stopped.
    running, lowest, moves = 6, 6, []
    for event in shared.events_since(seen):
        if not event["object"]["name"].startswith("move-"):
            continue
        if event["reason"] == "Started":
            assert event["message"] == "started on w2", event
            running += 1
        elif event["reason"] == "Removed":
            assert event["message"] == "stopped and removed: moved off draining node w1", event
            running -= 1
        else:
            continue
        moves.append(event["reason"])
        lowest = min(lowest, running)
    assert sorted(moves) == ["Removed", "Removed", "Started", "Started"], moves
    assert lowest == 6, moves

    assert shared.cluster.cli(shared.srv, "uncordon", "w1").stdout.strip() == "node w1 uncordoned"
    w1 = shared.nodes()["w1"]
    assert (w1["cordoned"], w1["draining"]) == (False, False)
    shared.delete("move")


def test_a_stopped_worker_leaves_gracefully_and_rejoins_as_itself(shared: Nodes) -> None:
    w1_id = shared.all_alive()["w1"]["node_id"]
    shared.apply(workload_yaml("stay", 4))
    steady(shared, "stay", {"w1": 2, "w2": 2})
    seen = shared.event_ids()

    assert shared.w1.signal(signal.SIGTERM) == 0
    assert "w1 left the cluster" in shared.w1.log()
    assert "Traceback" not in shared.w1.log()

    wait_until(
        "w1 left",
        lambda: shared.nodes()["w1"]["state"] == "left",
        TIMEOUT,
        shared.cluster.logs,
    )
    steady(shared, "stay", {"w2": 4})
    # Serf says "leaving" until memberlist's own leave (or its failure detector)
    # reaches the server; Shoal treats both as left, Serf ends at "left".
    wait_until(
        "serf to say w1 left",
        lambda: serf_members(shared.srv)["w1"] == "left",
        TIMEOUT,
        shared.cluster.logs,
    )
    new = shared.events_since(seen)
    left = [e for e in new if e["reason"] == "NodeLeft"]
    assert [e["object"]["kind"] for e in left].count("Node") == 1, left
    moved = [e["object"]["name"] for e in left if e["object"]["kind"] == "Instance"]
    assert sum(name.startswith("stay-") for name in moved) == 2, left
    warnings = [e for e in new if e["reason"] in ("NodeFailed", "NodeLost")]
    assert warnings == []

    shared.cluster.start(shared.w1, timeout=TIMEOUT)
    nodes = shared.all_alive()
    assert nodes["w1"]["node_id"] == w1_id
    assert sorted(nodes) == ["srv", "w1", "w2"]
    # Nothing moves back by itself: the replacements stay where they run.
    steady(shared, "stay", {"w2": 4})
    shared.delete("stay")
