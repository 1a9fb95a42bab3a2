"""Real runc containers: process semantics, limits, shared network, stop, exec, stats."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from shoal.interfaces import (
    Container,
    ContainerState,
    PodStatus,
    Resources,
    RuntimeFailure,
    SystemClock,
    Unavailable,
)
from shoal.runtime import OciCliRuntime
from tests.runtime.oci.harness import ENTRY_IMAGE, IMAGE, SLEEPER, RuntimeFactory, new_pod
from tests.runtime.oci.support import (
    WAIT,
    DirectoryImageSource,
    cgroup_dirs,
    container_ids,
    missing_requirement,
    mounts_under,
    shim_pids,
)
from tests.shims import standby_shims

pytestmark = pytest.mark.anyio

V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()


async def exited(runtime: OciCliRuntime, uid: str) -> PodStatus:
    """Follow the first container's log to its end, then return the pod's status."""
    status = await runtime.inspect(uid)
    with anyio.fail_after(WAIT):
        for container in status.containers:
            async for _ in runtime.logs(uid, container.name, follow=True):
                pass
    return await runtime.inspect(uid)


async def lines(runtime: OciCliRuntime, uid: str, container: str) -> list[str]:
    with anyio.fail_after(WAIT):
        return [line.line async for line in runtime.logs(uid, container)]


async def output(runtime: OciCliRuntime, uid: str, container: str, *command: str) -> str:
    result = await runtime.exec(uid, container, list(command))
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


async def test_image_config_and_kubernetes_semantics_are_visible_inside(
    runtime: OciCliRuntime,
) -> None:
    spec = new_pod(
        Container(name="entry", image=ENTRY_IMAGE),
        Container(name="args", image=ENTRY_IMAGE, args=["x", "y"]),
        Container(
            name="shell",
            image=ENTRY_IMAGE,
            command=SLEEPER,
            env={"SHARED": "container", "MINE": "mine"},
            working_dir="/home/guest",
        ),
    )
    await runtime.create(spec)
    await runtime.start(spec.uid)

    assert await output(runtime, spec.uid, "shell", "pwd") == "/home/guest"
    env = (await output(runtime, spec.uid, "shell", "env")).splitlines()
    assert {"IMAGE_VAR=image", "SHARED=container", "MINE=mine", "PATH=/bin"} <= set(env)
    assert f"HOSTNAME={spec.name}" in env
    assert await output(runtime, spec.uid, "shell", "id", "-u") == "405"
    assert await output(runtime, spec.uid, "shell", "id", "-g") == "100"
    assert "10" in (await output(runtime, spec.uid, "shell", "id", "-G")).split()
    assert await output(runtime, spec.uid, "shell", "hostname") == spec.name
    await runtime.stop(spec.uid, 5)

    status = await exited(runtime, spec.uid)
    assert await lines(runtime, spec.uid, "entry") == ["entry default-arg"]
    assert await lines(runtime, spec.uid, "args") == ["entry x y"]
    codes = {c.name: c.exit_code for c in status.containers}
    assert codes == {"entry": 0, "args": 0, "shell": 143}


async def test_limits_are_visible_in_the_cgroup(make_runtime: RuntimeFactory) -> None:
    resources = Resources.model_validate({"limits": {"cpu": "500m", "memory": "64Mi"}})
    async with make_runtime(pids_limit=12) as runtime:
        spec = new_pod(Container(name="main", image=IMAGE, command=SLEEPER, resources=resources))
        await runtime.create(spec)
        await runtime.start(spec.uid)
        if V2:
            memory = await output(runtime, spec.uid, "main", "cat", "/sys/fs/cgroup/memory.max")
            cpu = await output(runtime, spec.uid, "main", "cat", "/sys/fs/cgroup/cpu.max")
            pids = await output(runtime, spec.uid, "main", "cat", "/sys/fs/cgroup/pids.max")
            assert cpu.split() == ["50000", "100000"]
        else:
            memory = await output(
                runtime, spec.uid, "main", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
            )
            quota = await output(
                runtime, spec.uid, "main", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"
            )
            pids = await output(runtime, spec.uid, "main", "cat", "/sys/fs/cgroup/pids/pids.max")
            assert quota == "50000"
        assert memory == str(64 * 1024 * 1024)
        assert pids == "12"


async def test_a_process_over_its_memory_limit_is_oom_killed(runtime: OciCliRuntime) -> None:
    tiny = Resources.model_validate({"limits": {"memory": "24Mi"}})
    # tail buffers /dev/zero (no newline ever) until the OOM killer stops it.
    hog = Container(name="hog", image=IMAGE, command=["sh", "-c", "tail /dev/zero"], resources=tiny)
    spec = new_pod(hog)
    await runtime.create(spec)
    await runtime.start(spec.uid)

    (container,) = (await exited(runtime, spec.uid)).containers
    assert container.state == ContainerState.EXITED
    assert container.exit_code == 137
    assert "OOMKilled" in container.message
    assert "resources.limits.memory" in container.message


async def test_the_pids_limit_stops_a_fork_storm(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(pids_limit=8) as runtime:
        # The subshell dies on its first failed fork; its sleeps stay, up to the limit.
        storm = "(for i in $(seq 1 20); do sleep 300 & done); echo spawned; exec sleep 300"
        spec = new_pod(Container(name="main", image=IMAGE, command=["sh", "-c", storm]))
        await runtime.create(spec)
        await runtime.start(spec.uid)
        with anyio.fail_after(WAIT):
            async for line in runtime.logs(spec.uid, "main", follow=True):
                if line.line == "spawned":
                    break
        (stats,) = await runtime.stats(spec.uid)
        assert 1 < stats.pids <= 8
        assert any("can't fork" in line for line in await lines(runtime, spec.uid, "main"))


async def test_containers_of_a_pod_share_the_host_network(runtime: OciCliRuntime) -> None:
    spec = new_pod(
        Container(name="a", image=IMAGE, command=SLEEPER),
        Container(name="b", image=IMAGE, command=SLEEPER),
    )
    await runtime.create(spec)
    status = await runtime.start(spec.uid)

    first = await output(runtime, spec.uid, "a", "readlink", "/proc/self/ns/net")
    second = await output(runtime, spec.uid, "b", "readlink", "/proc/self/ns/net")
    assert first == second == os.readlink("/proc/self/ns/net")
    assert status.ip == "127.0.0.1"


@dataclass(frozen=True)
class Attachment:
    """What the test hook gives a pod."""

    ip: str
    netns_path: Path | None


class PinnedNamespaces:
    """A network hook that gives each pod a fresh namespace with only loopback."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.detached: list[str] = []

    async def attach(self, pod_uid: str, ports: object) -> Attachment:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / pod_uid
        path.touch()
        await anyio.run_process(["unshare", f"--net={path}", "ip", "link", "set", "lo", "up"])
        return Attachment("127.0.0.1", path)

    async def detach(self, pod_uid: str) -> None:
        path = self.directory / pod_uid
        if path.exists():
            await anyio.run_process(["umount", str(path)], check=False)
            path.unlink()
        self.detached.append(pod_uid)


async def test_containers_of_a_pod_join_the_namespace_of_a_network_hook(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    hook = PinnedNamespaces(tmp_path / "netns")
    async with make_runtime(network=hook) as runtime:
        spec = new_pod(
            Container(name="a", image=IMAGE, command=SLEEPER),
            Container(name="b", image=IMAGE, command=SLEEPER),
        )
        await runtime.create(spec)
        await runtime.start(spec.uid)

        first = await output(runtime, spec.uid, "a", "readlink", "/proc/self/ns/net")
        second = await output(runtime, spec.uid, "b", "readlink", "/proc/self/ns/net")
        pinned = os.stat(tmp_path / "netns" / spec.uid).st_ino
        assert first == second == f"net:[{pinned}]"
        assert first != os.readlink("/proc/self/ns/net")

        await runtime.remove(spec.uid)
        assert hook.detached == [spec.uid]
        assert not (tmp_path / "netns" / spec.uid).exists()


async def test_stop_sends_sigterm_waits_the_grace_then_kills(runtime: OciCliRuntime) -> None:
    stubborn = "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done"
    spec = new_pod(Container(name="main", image=IMAGE, command=["sh", "-c", stubborn]))
    await runtime.create(spec)
    await runtime.start(spec.uid)
    with anyio.fail_after(WAIT):
        async for line in runtime.logs(spec.uid, "main", follow=True):
            if line.line == "ready":
                break

    began = time.monotonic()
    (container,) = (await runtime.stop(spec.uid, 1.0)).containers
    assert time.monotonic() - began >= 1.0
    assert container.exit_code == 137
    assert "grace" in container.message
    assert "got TERM" in await lines(runtime, spec.uid, "main")


async def test_exec_reports_exit_codes_and_both_streams(runtime: OciCliRuntime) -> None:
    spec = new_pod()
    await runtime.create(spec)
    await runtime.start(spec.uid)

    assert (await runtime.exec(spec.uid, "main", ["sh", "-c", "exit 7"])).exit_code == 7
    both = await runtime.exec(spec.uid, "main", ["sh", "-c", "echo out; echo err >&2"])
    assert (both.exit_code, both.stdout, both.stderr) == (0, "out\n", "err\n")
    missing = await runtime.exec(spec.uid, "main", ["no-such-tool"])
    assert missing.exit_code == 127
    assert "no-such-tool" in missing.stderr

    began = time.monotonic()
    slow = await runtime.exec(spec.uid, "main", ["sleep", "30"], time_limit=0.5)
    assert slow.exit_code == 137
    assert "0.5s" in slow.stderr
    assert time.monotonic() - began < 5
    processes = await output(runtime, spec.uid, "main", "ps", "-o", "args")
    assert "sleep 30" not in processes


async def test_stats_of_a_busy_container(runtime: OciCliRuntime) -> None:
    busy = Container(name="busy", image=IMAGE, command=["sh", "-c", "while :; do :; done"])
    spec = new_pod(busy, Container(name="idle", image=IMAGE, command=SLEEPER))
    await runtime.create(spec)
    await runtime.start(spec.uid)

    stats = {s.name: s for s in await runtime.stats(spec.uid)}
    assert stats["busy"].cpu_millicores > 200
    assert stats["busy"].memory_bytes > 0
    assert stats["busy"].pids >= 1
    assert stats["idle"].cpu_millicores < stats["busy"].cpu_millicores
    assert stats["idle"].pids >= 2  # sh and its sleep


async def test_a_command_missing_from_the_image_fails_create_and_leaves_nothing(
    runtime: OciCliRuntime,
) -> None:
    spec = new_pod(
        Container(name="ok", image=IMAGE, command=SLEEPER),
        Container(name="broken", image=IMAGE, command=["/no/such/program"]),
    )
    with pytest.raises(RuntimeFailure) as caught:
        await runtime.create(spec)

    assert "'broken'" in caught.value.message
    assert "/no/such/program" in caught.value.message
    await assert_nothing_left(runtime, spec.uid, ["ok", "broken"])


async def test_remove_leaves_nothing_behind(runtime: OciCliRuntime) -> None:
    spec = new_pod(
        Container(name="a", image=IMAGE, command=SLEEPER),
        Container(name="b", image=IMAGE, command=SLEEPER),
    )
    await runtime.create(spec)
    await runtime.start(spec.uid)
    assert len(container_ids(runtime.runc.state_root)) == 2
    assert mounts_under(runtime.files.directory(spec.uid))
    assert cgroup_dirs(f"{spec.uid}-a")

    await runtime.remove(spec.uid)
    await assert_nothing_left(runtime, spec.uid, ["a", "b"])


async def test_listing_while_pods_come_and_go_never_fails(runtime: OciCliRuntime) -> None:
    """A list never fails because a pod was removed meanwhile, though runc 1.1's does.

    ``runc list`` fails as a whole when a delete removes a container it is reading.

    Three pods at a time started and removed while lists run back to back:
    without trying such a list again, this test fails in most of its runs.
    """
    churning = 3
    listed: list[int] = []

    async def churn() -> None:
        nonlocal churning
        for _ in range(8):
            spec = new_pod(name="churn")
            await runtime.run(spec)
            await runtime.remove(spec.uid)
        churning -= 1

    async def keep_listing() -> None:
        while churning:
            listed.append(len(await runtime.list()))

    with anyio.fail_after(WAIT * 3):
        async with anyio.create_task_group() as tg:
            for _ in range(churning):
                tg.start_soon(churn)
            tg.start_soon(keep_listing)
            tg.start_soon(keep_listing)
    assert len(listed) > 20 and max(listed) <= 3
    assert await runtime.list() == []


async def assert_nothing_left(runtime: OciCliRuntime, uid: str, names: list[str]) -> None:
    assert container_ids(runtime.runc.state_root) == []
    assert mounts_under(runtime.root) == []
    assert not runtime.files.directory(uid).exists()
    assert shim_pids(runtime.root) == []
    for name in names:
        assert cgroup_dirs(f"{uid}-{name}") == []
    assert uid not in {pod.uid for pod in await runtime.list()}


async def test_start_after_an_exit_runs_the_container_again(runtime: OciCliRuntime) -> None:
    spec = new_pod(Container(name="once", image=IMAGE, command=["sh", "-c", "echo run; exit 3"]))
    await runtime.create(spec)
    await runtime.start(spec.uid)
    assert (await exited(runtime, spec.uid)).containers[0].exit_code == 3

    await runtime.start(spec.uid)
    (container,) = (await exited(runtime, spec.uid)).containers
    assert container.exit_code == 3
    assert await lines(runtime, spec.uid, "once") == ["run", "run"]


async def test_stopping_a_pod_that_never_started_does_not_wait_the_grace(
    runtime: OciCliRuntime,
) -> None:
    spec = new_pod()
    await runtime.create(spec)
    began = time.monotonic()
    (container,) = (await runtime.stop(spec.uid, 30)).containers
    assert time.monotonic() - began < 5
    assert container.state == ContainerState.EXITED


def test_a_missing_runtime_binary_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first without root")
    with pytest.raises(Unavailable) as caught:
        OciCliRuntime(DirectoryImageSource({}), tmp_path, binary="no-such-runc")
    message = caught.value.message
    assert "'no-such-runc'" in message
    assert "apt-get install no-such-runc" in message
    assert "--runtime mock" in message


def test_the_runtime_is_named_after_its_binary(tmp_path: Path) -> None:
    if missing_requirement():
        pytest.skip(str(missing_requirement()))
    binary = shutil.which("runc")
    assert binary is not None
    assert OciCliRuntime(DirectoryImageSource({}), tmp_path, binary=binary).name == "runc"


class HurriedClock(SystemClock):
    """Real time, but every sleep (the grace period) is over at once."""

    async def sleep(self, seconds: float) -> None:
        await anyio.lowlevel.checkpoint()


async def test_the_grace_period_runs_on_the_runtime_clock(make_runtime: RuntimeFactory) -> None:
    async with make_runtime(clock=HurriedClock()) as runtime:
        stubborn = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
        spec = new_pod(Container(name="main", image=IMAGE, command=["sh", "-c", stubborn]))
        await runtime.create(spec)
        await runtime.start(spec.uid)
        with anyio.fail_after(WAIT):
            async for line in runtime.logs(spec.uid, "main", follow=True):
                if line.line == "ready":
                    break
        with anyio.fail_after(WAIT):  # an hour of grace, on a clock where it passes at once
            (container,) = (await runtime.stop(spec.uid, 3600)).containers
        assert container.exit_code == 137


async def test_the_pods_etc_files_are_shoals_and_read_only(
    runtime: OciCliRuntime, tmp_path: Path
) -> None:
    """/etc/hosts, hostname and resolv.conf are the pod's, read-only, whatever the image has.

    One image has none of them; the other has /etc/hosts as a symlink to an
    absolute path, which must resolve inside the container, never on the host.
    """
    canary = tmp_path / "host-file"
    canary.write_text("the host's\n")
    top = tmp_path / "symlink-layer"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "hosts").symlink_to(canary)
    resolv = (await anyio.Path("/etc/resolv.conf").read_text()).strip()
    assert isinstance(runtime.images, DirectoryImageSource)
    layers, config = runtime.images.images[IMAGE]
    runtime.images.images["busybox:linked"] = ([*layers, top], config)
    spec = new_pod(
        Container(name="plain", image=IMAGE, command=SLEEPER),
        Container(name="linked", image="busybox:linked", command=SLEEPER),
    )
    await runtime.run(spec)
    for name in ("plain", "linked"):
        hosts = await output(runtime, spec.uid, name, "cat", "/etc/hosts")
        assert f"127.0.0.1\t{spec.name}" in hosts.splitlines()
        assert await output(runtime, spec.uid, name, "cat", "/etc/hostname") == spec.name
        assert await output(runtime, spec.uid, name, "cat", "/etc/resolv.conf") == resolv
        for path in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
            result = await runtime.exec(spec.uid, name, ["sh", "-c", f"echo x >> {path}"])
            assert result.exit_code != 0
            assert "Read-only file system" in result.stderr
    assert canary.read_text() == "the host's\n"
    assert not mounts_under(canary)


def alive(pids: set[int]) -> bool:
    """Return whether any of ``pids`` is still a process."""
    return any(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_the_next_standby_shim_starts_after_a_run_and_exits_with_the_runtime(
    make_runtime: RuntimeFactory,
) -> None:
    """It is started once the pod runs (in the background), and gone once the runtime is."""
    async with make_runtime() as runtime:
        spec = new_pod()
        await runtime.run(spec)
        with anyio.fail_after(WAIT):
            while not (shims := standby_shims("self")):  # noqa: ASYNC110 (no event says so)
                await anyio.sleep(0.01)
        second = new_pod()
        await runtime.run(second)  # takes the standby shim: its container runs
        assert (await runtime.inspect(second.uid)).containers[0].state == ContainerState.RUNNING
        with anyio.fail_after(WAIT):
            while not (fresh := standby_shims("self") - shims):  # noqa: ASYNC110 (no event says so)
                await anyio.sleep(0.01)
    # By pid: once the runtime closed its end of the pipe, standby_shims("self") no longer
    # finds the shim, whether or not the process is gone.
    with anyio.fail_after(WAIT):
        while alive(fresh):  # noqa: ASYNC110 (no event says so)
            await anyio.sleep(0.01)
