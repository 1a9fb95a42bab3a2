"""A private containerd for tests: its own root, state, socket, CNI network and mount namespace.

containerd 1.6 puts its shims' sockets under ``/run/containerd/s`` whatever
its ``state`` says, so a private instance runs in a mount namespace of its
own where ``/run/containerd`` is a fresh tmpfs: it never meets the host's
containerd, nor leaves anything in the host's ``/run``. The namespace is held
by a small holder process (``unshare -m``), and containerd is entered into
it (``nsenter``), so it can be stopped and started again in the same
namespace and find its shims (the restart tests).

The instance's directory is a shared bind mount, and the namespace its
slave: what a test mounts under it (a secret volume's tmpfs) shows inside
containerd's namespace too, as it would for a containerd in the host's.
Runtimes under test keep their pods there (:meth:`PrivateContainerd.pods_root`).

Its network is a bridge of its own, :data:`BRIDGE` on :data:`SUBNET`
(a free /24 of 198.19.128.0/18, apart from the subnets other tests use),
with ``host-local``'s state under the instance's directory. Its pods' cgroups
go under :data:`CGROUP_PARENT`.

:meth:`PrivateContainerd.close` removes everything, whatever happened: every
sandbox through CRI, containerd, the holder (and with it the namespace),
every process left in the cgroups, the cgroups, the bridge and the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import anyio
import pytest
from scripts.build_busybox_image import build_busybox_layout

from shoal.runtime.cri._client import CriClient, pb
from shoal.runtime.cri._pause import write_pause_archive
from shoal.runtime.cri._setup import containerd_config, import_image, write_cni_conflist


def _free_subnet() -> str:
    """Return a ``198.19.N.0/24`` (N in 128-191) no address or route of this host uses.

    Apart from the pool 198.18.N, the runc tests' 198.19.246-251 and the compose
    test's 198.19.208/20; where the search starts depends on the process, so two
    sessions at once look in different places first.
    """
    start = os.getpid() % 64
    for step in range(64):
        subnet = f"198.19.{128 + (start + step) % 64}.0/24"
        shown = (
            subprocess.run(
                ["ip", "-4", "-o", "addr", "show", "to", subnet], capture_output=True, text=True
            ).stdout.strip()
            or subprocess.run(
                ["ip", "-4", "route", "show", "root", subnet], capture_output=True, text=True
            ).stdout.strip()
        )
        if not shown:
            return subnet
    raise RuntimeError("no free /24 in 198.19.128.0/18 for the private containerd's bridge")


BRIDGE = f"shoalcri{os.getpid() % 1000}"
"""The private containerd's bridge: one per test session."""
SUBNET = _free_subnet() if shutil.which("ip") else "198.19.128.0/24"
"""Its subnet, inside 198.18.0.0/15."""
CGROUP_PARENT = "/shoal-cri-test"
DEFAULT_CGROUP_PARENT = "/shoal-cri"
"""CriRuntime's default: removed at the end when a test left it empty."""
IMAGE = "shoal.local/busybox:test"
"""The busybox of ``scripts/build_busybox_image.py``, imported into the private containerd."""
MISSING_IMAGE = "127.0.0.1:1/missing:1"
"""A reference whose registry refuses at once, on loopback."""
BOOT_SECONDS = 30.0


def missing_requirement() -> str | None:
    """Return why a private containerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private containerd needs root"
    for tool in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/system-deps.sh installs it)"
    if not Path("/bin/busybox").is_file():
        return "/bin/busybox is missing: apt-get install busybox-static"
    return None


class PrivateContainerd:
    """One containerd for tests, in a mount namespace of its own.

    Args:
        directory: Everything of the instance goes here.

    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "containerd.sock"
        self.endpoint = f"unix://{self.socket}"
        self.cgroup_parent = CGROUP_PARENT
        self.log = directory / "containerd.log"
        self._holder: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None
        self._bound = False

    def start(self) -> None:
        """Write the config and CNI network, start containerd, import the images."""
        self.directory.mkdir(parents=True, exist_ok=True)
        conf_dir = self.directory / "net.d"
        write_cni_conflist(conf_dir, BRIDGE, SUBNET, self.directory / "cni")
        (self.directory / "config.toml").write_text(
            containerd_config(
                root=self.directory / "root",
                state=self.directory / "state",
                address=self.socket,
                cni_conf_dir=conf_dir,
                restrict_oom_score_adj=True,
                netns_under_state=True,
            )
        )
        # A shared mount of the directory, so that what the tests mount under it
        # (a secret volume's tmpfs) shows in containerd's namespace too, as it
        # would for a containerd in the host's.
        subprocess.run(["mount", "--bind", str(self.directory), str(self.directory)], check=True)
        self._bound = True
        subprocess.run(["mount", "--make-rshared", str(self.directory)], check=True)
        # The holder keeps the namespace (and its /run/containerd tmpfs) alive across restarts.
        script = (
            "mkdir -p /run/containerd && mount -t tmpfs -o mode=0700 tmpfs /run/containerd "
            "&& echo ready && exec cat"
        )
        self._holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "slave", "sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != b"ready":
            raise RuntimeError("the mount namespace for containerd could not be made")
        self.start_containerd()
        pause = self.directory / "pause.tar"
        write_pause_archive(pause)
        import_image(self.socket, pause)
        self.import_busybox()

    def pods_root(self, owner: str) -> Path:
        """Return where a runtime of ``owner`` keeps its pods: under the shared mount."""
        return self.directory / "pods" / owner

    def import_busybox(self) -> None:
        """Build the busybox test image and import it as :data:`IMAGE`."""
        layout = self.directory / "busybox"
        build_busybox_layout(layout, "test")
        archive = self.directory / "busybox.tar"
        subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
        subprocess.run(
            [*_ctr(self.socket), "import", "--base-name", IMAGE.rsplit(":", 1)[0], str(archive)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_containerd(self) -> None:
        """Start containerd in the namespace; return once it serves (its log says so)."""
        assert self._holder is not None
        self.socket.unlink(missing_ok=True)
        self._containerd = subprocess.Popen(
            [
                *_enter(self._holder.pid),
                "containerd",
                "--config",
                str(self.directory / "config.toml"),
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        booted = threading.Event()
        stream = self._containerd.stderr
        assert stream is not None

        def drain() -> None:
            with self.log.open("ab") as log:
                for line in stream:
                    log.write(line)
                    log.flush()
                    # The CRI plugin starts its streaming server last (then says it is ready).
                    if b"Start streaming server" in line:
                        booted.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not booted.wait(BOOT_SECONDS):
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"containerd did not boot in {BOOT_SECONDS}s:\n{tail}")

    def stop_containerd(self) -> None:
        """Stop containerd (SIGTERM, then SIGKILL); its shims and containers keep running."""
        process, self._containerd = self._containerd, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        if self._drain is not None:
            self._drain.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        """Remove every trace of the instance, whatever state it is in."""
        try:
            if self._containerd is not None and self._containerd.poll() is None:
                with contextlib.suppress(Exception):
                    anyio.run(remove_all_sandboxes, self.endpoint)
        finally:
            self.stop_containerd()
            holder, self._holder = self._holder, None
            if holder is not None:
                holder.kill()
                holder.wait(timeout=15)
                for pipe in (holder.stdin, holder.stdout):
                    if pipe is not None:
                        pipe.close()
            self._kill_shims()
            _kill_cgroup(self.cgroup_parent)
            remove_empty_cgroup(DEFAULT_CGROUP_PARENT)  # what runtimes on defaults made
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
            if self._bound:
                subprocess.run(["umount", "-R", "-l", str(self.directory)], check=False)
            shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_shims(self) -> None:
        """SIGKILL the shims that served this instance (its socket is on their command line)."""
        needle = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


def _ctr(socket: Path) -> list[str]:
    return ["ctr", "--address", str(socket), "-n", "k8s.io", "images"]


def _enter(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), "-m"]


async def remove_all_sandboxes(endpoint: str) -> None:
    """Stop and remove every sandbox of the runtime at ``endpoint`` (whoever made it)."""
    client = CriClient(endpoint, timeout=30)
    try:
        listed = await client.runtime(
            "ListPodSandbox", pb.ListPodSandboxRequest(), pb.ListPodSandboxResponse
        )
        for sandbox in listed.items:
            request = pb.StopPodSandboxRequest(pod_sandbox_id=sandbox.id)
            await client.runtime("StopPodSandbox", request, pb.StopPodSandboxResponse)
            remove = pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id)
            await client.runtime("RemovePodSandbox", remove, pb.RemovePodSandboxResponse)
    finally:
        await client.aclose()


def remove_empty_cgroup(parent: str) -> None:
    """Remove ``parent``'s cgroup directories where nothing is left in them (else keep them)."""
    for root in Path("/sys/fs/cgroup").iterdir():
        with contextlib.suppress(OSError):
            (root / parent.strip("/")).rmdir()


def _kill_cgroup(parent: str) -> None:
    """SIGKILL every process left under ``parent`` in any hierarchy, then remove its cgroups."""
    roots = [p for p in Path("/sys/fs/cgroup").iterdir() if (p / parent.strip("/")).is_dir()]
    if (Path("/sys/fs/cgroup") / parent.strip("/") / "cgroup.procs").is_file():
        roots.append(Path("/sys/fs/cgroup"))
    for root in roots:
        top = root / parent.strip("/")
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    for root in roots:
        top = root / parent.strip("/")
        directories = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*directories, top]:
            with contextlib.suppress(OSError):
                directory.rmdir()


def private_containerd(factory: pytest.TempPathFactory) -> PrivateContainerd:
    """Return a started private containerd (the caller closes it); skip where it cannot run."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    # A short path: unix socket paths are limited to 108 bytes.
    instance = PrivateContainerd(Path(factory.mktemp("ctrd", numbered=True)))
    try:
        instance.start()
    except BaseException:
        instance.close()
        raise
    return instance
