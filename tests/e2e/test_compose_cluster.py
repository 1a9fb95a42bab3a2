"""The compose cluster as a user runs it: Debian's docker-compose 1.29, the image built offline.

The test follows docs/cluster.md: ``make image``'s script builds ``shoal:dev``
(the base image from debootstrap when it cannot be pulled, the Python
environment from a wheelhouse), ``docker-compose up`` starts the server and
two workers, busybox is imported on the server and ``examples/hello.yaml``
applied. Then the worker that runs the three instances is SIGKILLed
(``docker-compose kill``): they must run again on the other worker, and once
the killed worker is started again it must remove its stale copies without a
traceback in its log. ``down -v`` ends it.

When no Docker daemon answers, the test starts its own on a private socket,
with its data root under :data:`CACHE` (kept, so the base image and the build
cache make later runs fast) and with neither iptables rules nor a default
bridge: the build runs on the host network, and the compose network needs
neither. It stops that daemon at the end and checks that the host's iptables
FORWARD policy, its bridges and its Docker processes are as it found them.
All traffic stays on 127.0.0.0/8 and the 198.18.0.0/15 bridges (the image
build fetches Debian packages from the mirror the base image names).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from scripts.build_busybox_image import build_busybox_layout

from tests.e2e.conftest import until
from tests.ports import free_port
from tests.shoal_cli import run_shoal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/shoal-test-docker")
"""The private daemon's home: its data root (images, build cache) survives runs."""
SUBNET = "198.19.223.0/24"
"""The compose network's subnet in the test, from the private daemon's pool."""
PROJECT = "shoale2e"
"""The compose project name the test's ``.env`` gives, apart from a user's ``shoal``."""
ADDRESS_POOL = "198.19.208.0/20"
"""Where the private daemon takes the compose network's subnet from (inside 198.18.0.0/15)."""
PUBLISHED = """\
kind: Workload
name: published
namespace: default
replicas: 1
template:
  containers:
    - name: web
      image: busybox:1.36
      command: ["httpd", "-f", "-p", "8080"]
      ports:
        - container_port: 8080
          host_port: 18080
"""
"""A pod whose port its worker publishes (on the worker's 127.0.0.1)."""
FETCH_IMAGE_MARKER = (
    "import urllib.request as u;"
    " print(u.urlopen('http://127.0.0.1:18080/etc/shoal-image', timeout=5).read().decode())"
)
"""Run in a worker: fetch through the published port a file the busybox image has."""
DOCKER_PROCESSES = ("dockerd", "docker-proxy")
"""Processes of any Docker daemon, by name. containerd and its shims count only
when they serve the private daemon: other tests run containerd of their own."""


def tools_or_skip() -> None:
    missing = [
        tool for tool in ("docker", "docker-compose", "debootstrap") if not shutil.which(tool)
    ]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: scripts/system-deps.sh installs them")
    if os.geteuid() != 0:
        pytest.skip("runs Docker and debootstrap: needs root")


def run(
    args: list[str],
    env: Mapping[str, str],
    *,
    timeout: float = 120,
    stdin: str | bytes | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check``, fail the test naming it and its stderr."""
    result = subprocess.run(
        args,
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
    )
    text = subprocess.CompletedProcess(
        args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{text.stderr}{text.stdout}"
    return text


def daemon_answers(env: Mapping[str, str]) -> bool:
    probe = run(
        ["docker", "version", "--format", "{{.Server.Version}}"], env, timeout=10, check=False
    )
    return probe.returncode == 0


def docker_pids() -> set[tuple[int, str]]:
    """Return (pid, name) of Docker's daemons and proxies, and the private daemon's shims."""
    found: set[tuple[int, str]] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            command = (proc / "cmdline").read_text()
        except OSError:
            continue
        if name in DOCKER_PROCESSES or str(CACHE) in command:
            found.add((int(proc.name), name))
    return found


def host_network() -> dict[str, Any]:
    """What the test leaves as found: FORWARD policy, Docker rules, bridges, mounts, cgroups."""
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30).stdout
    docker_rules = sorted(
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in rules.splitlines()
        if re.search(r"DOCKER|docker0|br-[0-9a-f]{12}", line)
    )
    policy = re.search(r"^:FORWARD (\w+)", rules, re.MULTILINE)
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    bridges = sorted(
        link["ifname"] for link in links if re.fullmatch(r"docker0|br-[0-9a-f]{12}", link["ifname"])
    )
    return {
        "forward": policy and policy.group(1),
        "docker rules": docker_rules,
        "bridges": bridges,
        "mounts": sorted(mounts_under(CACHE)),
        "cgroups": docker_cgroups(),
    }


@contextmanager
def docker_daemon() -> Iterator[dict[str, str]]:
    """Yield the environment of a Docker daemon: the one running, else a private one.

    A private daemon that a killed run left behind is taken over and stopped
    like one started here. Hold :func:`host_lock` around it.
    """
    env = {**os.environ, "PATH": f"{Path.home()}/.local/bin:{os.environ['PATH']}"}
    if daemon_answers(env):
        yield env
        return
    cgroups_before = docker_cgroups()
    socket = CACHE / "docker.sock"
    env["DOCKER_HOST"] = f"unix://{socket}"
    pidfile = CACHE / "docker.pid"
    daemon: subprocess.Popen[bytes] | None = None
    if not daemon_answers(env):
        pidfile.unlink(missing_ok=True)
        # No iptables and no default bridge: nothing on the host's firewall to
        # undo. The compose network is a bridge of its own, removed by `down`.
        with (CACHE / "dockerd.log").open("w") as log:
            daemon = subprocess.Popen(
                [
                    "dockerd", "--data-root", str(CACHE / "docker"),
                    "--exec-root", str(CACHE / "exec"), "--host", f"unix://{socket}",
                    "--pidfile", str(pidfile), "--bridge=none", "--iptables=false",
                    "--ip-masq=false", "--default-address-pool", f"base={ADDRESS_POOL},size=24",
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    try:
        until("the private dockerd to answer", lambda: daemon_answers(env), 60)
        yield env
    finally:
        stop_daemon(daemon, pidfile)
        # dockerd leaves the (empty) cgroup it made per controller behind.
        for cgroup in set(docker_cgroups()) - set(cgroups_before):
            with contextlib.suppress(OSError):
                Path(cgroup).rmdir()


def docker_cgroups() -> list[str]:
    """Return the cgroups Docker files containers under (one per v1 controller, or v2)."""
    root = Path("/sys/fs/cgroup")
    return sorted(str(path) for path in [root / "docker", *root.glob("*/docker")] if path.is_dir())


@contextmanager
def host_lock() -> Iterator[None]:
    """Hold the host for this test: a second run (another pytest here) waits its turn.

    Both would share the private daemon, and each would see the other's
    processes and bridges as ones it left behind.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        until("the compose test's lock", lambda: try_lock(lock), 600)
        yield


def try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def stop_daemon(daemon: subprocess.Popen[bytes] | None, pidfile: Path) -> None:
    """Stop the private dockerd (SIGTERM, then SIGKILL), and wait until it is gone."""
    pid = daemon.pid if daemon is not None else int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    if daemon is not None:
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
    else:
        until("the private dockerd to stop", lambda: not Path(f"/proc/{pid}").exists(), 40)
    # Shims outlive containerd by a moment.
    until("the private daemon's shims to exit", lambda: not shims_of(CACHE), 30)
    # dockerd leaves its exec root's netns/default (a mount of the host's network
    # namespace) behind when it stops.
    for mountpoint in sorted(mounts_under(CACHE), reverse=True):
        subprocess.run(["umount", mountpoint], capture_output=True, timeout=30, check=False)


def mounts_under(directory: Path) -> list[str]:
    """Return the mount points at or under ``directory``."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    points = [line.split()[4] for line in lines]
    return [p for p in points if p == str(directory) or p.startswith(f"{directory}/")]


def shims_of(exec_root: Path) -> list[int]:
    """Return the pids of the containerd shims serving the daemon under ``exec_root``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(exec_root) in (proc / "cmdline").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


class Compose:
    """``docker-compose`` in a project directory of its own."""

    def __init__(self, directory: Path, env: Mapping[str, str]) -> None:
        self.directory = directory
        self.env = env

    def __call__(
        self, *args: str, timeout: float = 120, stdin: str | bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["docker-compose", *args],
            self.env,
            cwd=self.directory,
            timeout=timeout,
            stdin=stdin,
            check=check,
        )

    def shoal(self, *args: str, stdin: str | None = None) -> str:
        """Run ``shoal ARGS`` in the server container, as the docs do."""
        return self("exec", "-T", "server", "shoal", *args, stdin=stdin).stdout

    def instances(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self.shoal("get", "instances", "-o", "json"))
        return listed


def running_on(compose: Compose, count: int, nodes: set[str]) -> dict[str, str] | None:
    """Return {instance: node} once exactly ``count`` instances exist, all running on ``nodes``."""
    instances = compose.instances()
    placed = {item["name"]: item["node"] for item in instances if item["state"] == "running"}
    if len(instances) == count and len(placed) == count and set(placed.values()) <= nodes:
        return placed
    return None


def test_the_compose_cluster_runs_hello_and_survives_a_killed_worker(tmp_path: Path) -> None:
    tools_or_skip()
    with host_lock():
        compose_cluster(tmp_path)


def compose_cluster(tmp_path: Path) -> None:
    """The test's body, run while it holds the host."""
    network_before, processes_before = host_network(), docker_pids()
    timings: dict[str, float] = {}
    started = time.monotonic()

    def lap(what: str) -> None:
        timings[what] = round(time.monotonic() - started - sum(timings.values()), 1)

    with docker_daemon() as env:
        lap("dockerd")
        built = run([str(ROOT / "scripts/build_image.sh")], env, timeout=600)
        assert "built shoal:dev" in built.stderr
        lap("image")

        # The project as a user has it, apart from its name, the API's host port
        # and its network's subnet (pinned inside 198.18.0.0/15 on any daemon).
        compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        assert "name" not in compose_file, "docker-compose 1.29 refuses a top-level name"
        assert "networks" not in compose_file
        api_port = free_port()
        (tmp_path / "docker-compose.yml").write_text(
            (ROOT / "docker-compose.yml")
            .read_text()
            .replace('"127.0.0.1:7070:7070"', f'"127.0.0.1:{api_port}:7070"')
            + f"\nnetworks:\n  default:\n    ipam:\n      config: [{{subnet: {SUBNET}}}]\n"
        )
        dotenv = (ROOT / ".env").read_text()
        assert "COMPOSE_PROJECT_NAME=shoal\n" in dotenv
        (tmp_path / ".env").write_text(dotenv.replace("=shoal\n", f"={PROJECT}\n"))
        host = {
            **env,
            "SHOAL_HOME": str(tmp_path / "home"),
            "SHOAL_SERVER": f"http://127.0.0.1:{api_port}",
        }
        run_shoal(host, "cluster", "init", "--out", str(tmp_path / "cluster-secrets"))
        compose = Compose(tmp_path, env)
        if run(["docker", "compose", "version"], env, check=False).returncode == 0:
            # Compose v2 where its plugin is installed: the same file, the same project.
            v2 = run(["docker", "compose", "config", "--format", "json"], env, cwd=tmp_path)
            assert json.loads(v2.stdout)["name"] == PROJECT
        try:
            compose("up", "-d", "--no-build", timeout=180)
            lap("up")
            nodes = until("three alive nodes", lambda: alive_nodes(compose, 3), 90)
            assert re.search(r"server\s+server\s+alive", nodes)

            # The docs' key step: a key first, then the operator's line on the server.
            run_shoal(host, "keys", "init")
            key = run_shoal(host, "keys", "show").stdout.strip()
            compose(
                "exec",
                "-T",
                "server",
                "sh",
                "-c",
                "cat >> /var/lib/shoal/authorized_keys",
                stdin=f"operator {key}\n",
            )
            until(
                "the host's CLI to be authorized",
                lambda: run_shoal(host, "get", "nodes", check=False).returncode == 0,
                30,
            )

            # busybox imported on the server reaches the workers over the node channel.
            layout = build_busybox_layout(tmp_path / "busybox", "1.36").layout
            tarball = subprocess.run(
                ["tar", "-C", str(layout), "-c", "."], capture_output=True, check=True, timeout=60
            ).stdout
            compose(
                "exec",
                "-T",
                "server",
                "sh",
                "-c",
                "mkdir -p /tmp/busybox && tar -C /tmp/busybox -x",
                stdin=tarball,
            )
            assert "imported busybox:1.36" in compose.shoal("images", "import", "/tmp/busybox")
            compose.shoal("apply", "-f", "-", stdin=(ROOT / "examples/hello.yaml").read_text())
            placed = until(
                "3 hello instances running on the workers",
                lambda: running_on(compose, 3, {"worker1", "worker2"}),
                90,
            )
            lap("hello running")
            (victim,) = set(placed.values())  # the default strategy, binpack, fills one worker
            (survivor,) = {"worker1", "worker2"} - {victim}

            compose("kill", victim)  # SIGKILL: the agent, its serf and its pods die at once
            moved = until(
                f"hello back on {survivor}", lambda: running_on_survivor(compose, survivor), 90
            )
            assert not set(moved) & set(placed), "the killed worker's instances were not replaced"
            lap("failover")

            compose("start", victim)
            until(
                f"{victim} alive and its stale instances removed",
                lambda: running_on(compose, 3, {survivor}) and alive(compose, victim),
                90,
            )
            lap("cleanup")
            log = compose("logs", "--no-color", victim).stdout
            assert "Traceback" not in log, log[-4000:]

            # A host_port is published on its worker's loopback (portmap needs the
            # worker's net sysctls writable, which its entrypoint sees to).
            compose.shoal("apply", "-f", "-", stdin=PUBLISHED)
            (node,) = until(
                "the published pod running",
                lambda: {
                    i["node"]
                    for i in compose.instances()
                    if i["name"].startswith("published-") and i["state"] == "running"
                },
                60,
            )
            served = compose("exec", "-T", node, "python3", "-c", FETCH_IMAGE_MARKER).stdout
            assert "busybox built by scripts/build_busybox_image.py" in served
            lap("host port")
        finally:
            compose("down", "-v", "--timeout", "20", timeout=180, check=False)
            lap("down")
    lap("dockerd stop")
    print(f"compose cluster timings (s): {timings}")
    assert host_network() == network_before
    assert docker_pids() <= processes_before, "Docker processes the test started are still running"


def running_on_survivor(compose: Compose, survivor: str) -> dict[str, str] | None:
    """Return the 3 running instances once all run on ``survivor`` (the lost ones may linger)."""
    placed = {
        item["name"]: item["node"] for item in compose.instances() if item["state"] == "running"
    }
    return placed if len(placed) == 3 and set(placed.values()) == {survivor} else None


def alive(compose: Compose, node: str) -> bool:
    return (
        re.search(rf"^\s*{node}\s+worker\s+alive\b", compose.shoal("get", "nodes"), re.MULTILINE)
        is not None
    )


def alive_nodes(compose: Compose, count: int) -> str | None:
    """Return ``shoal get nodes`` once it lists ``count`` alive nodes."""
    listed = compose.shoal("get", "nodes")
    return listed if listed.count(" alive ") == count else None
