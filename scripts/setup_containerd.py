"""Make containerd ready for `shoal agent --runtime cri`, once per machine.

Usage::

    uv run python scripts/setup_containerd.py [--data-dir DIR] [--endpoint URL]
        [--config PATH] [--cni-dir DIR] [--root DIR] [--state DIR]
        [--network bridge|host] [--write-cni] [--import-pause]

With a containerd already answering at the endpoint, it only **checks** and
says what is missing (CRI plugin disabled, no pause image, the systemd cgroup
driver, no CNI network), with the fix for each, and exits 1 if anything is;
it changes nothing unless asked (``--write-cni`` writes Shoal's bridge
network into containerd's CNI directory, ``--import-pause`` imports Shoal's
pause image). With none, it sets one up for Shoal (as root):

1. claims the data dir's bridge network in the host's registry (the same
   claim a runc node makes, so nodes on one host never share a bridge or
   subnet) and writes it as a CNI network into ``--cni-dir``;
2. writes a containerd config to ``--config`` (Shoal's own file; the Debian
   one is left alone): the CRI plugin with the pause image, runc with the
   cgroupfs driver, ``restrict_oom_score_adj`` where containerd would lack
   CAP_SYS_RESOURCE, and that CNI directory;
3. starts ``containerd --config`` in the background (log: ``containerd.log``
   in the data dir), waits until it answers CRI v1, and imports the pause
   image, built offline from the host's busybox.

`make run RUNTIME=cri` runs it before the agent. See docs/runtime.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from shoal.interfaces import ShoalError
from shoal.runtime import HostNetworks
from shoal.runtime.cri import (
    DEFAULT_ENDPOINT,
    PAUSE_IMAGE,
    CriClient,
    check_containerd,
    check_cri,
    containerd_config,
    import_image,
    write_cni_conflist,
    write_pause_archive,
)
from shoal.runtime.cri._client import pb

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "shoal"
DEFAULT_CONFIG = Path("/etc/shoal/containerd.toml")
DEFAULT_CNI_DIR = Path("/etc/shoal/cni/net.d")
BOOT_SECONDS = 30.0
_CAP_SYS_RESOURCE = 24


def has_cap_sys_resource() -> bool:
    """Return whether this process (and so a containerd it starts) has CAP_SYS_RESOURCE."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def socket_of(endpoint: str) -> Path:
    """Return the socket path of a ``unix://`` endpoint (or a bare path)."""
    return Path(endpoint.removeprefix("unix://"))


def write_cni(data_dir: Path, cni_dir: Path) -> Path:
    """Claim the data dir's bridge network and write it into ``cni_dir``; return the file."""
    claim = HostNetworks().claim(data_dir)
    path = write_cni_conflist(cni_dir, claim.bridge, claim.subnet, data_dir / "cri-cni")
    print(f"setup: wrote CNI network {claim.bridge} ({claim.subnet}) to {path}")
    return path


def import_pause(address: Path) -> None:
    """Build the pause image and import it into containerd's k8s.io namespace."""
    with tempfile.TemporaryDirectory(prefix="shoal-pause-") as scratch:
        archive = Path(scratch) / "pause.tar"
        write_pause_archive(archive)
        import_image(address, archive)
    print(f"setup: imported {PAUSE_IMAGE}")


async def answering(endpoint: str) -> bool:
    """Return whether a CRI v1 runtime answers at ``endpoint``."""
    client = CriClient(endpoint, timeout=5)
    try:
        await check_cri(client)
        return True
    except ShoalError:
        return False
    finally:
        await client.aclose()


async def check(endpoint: str, *, host_network: bool) -> int:
    """Print what containerd lacks for Shoal; return the exit code."""
    client = CriClient(endpoint, timeout=10)
    try:
        problems = await check_containerd(client, host_network=host_network)
    finally:
        await client.aclose()
    if not problems:
        print(f"setup: the containerd at {endpoint} is ready for `shoal agent --runtime cri`")
        return 0
    print(f"setup: the containerd at {endpoint} is not ready for Shoal:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


def spawn_containerd(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``containerd --config`` in a session of its own: it outlives this script."""
    with log.open("ab") as output:
        return subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )


async def start(args: argparse.Namespace) -> int:
    """Write Shoal's containerd config and CNI network, start containerd, import the pause image."""
    if os.geteuid() != 0:
        print("setup: starting containerd needs root: run it as root (sudo)", file=sys.stderr)
        return 1
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        print("setup: containerd is not installed: apt-get install containerd", file=sys.stderr)
        return 1
    socket = socket_of(args.endpoint)
    if args.network == "bridge":
        write_cni(args.data_dir, args.cni_dir)
    text = containerd_config(
        root=args.root,
        state=args.state,
        address=None if args.endpoint == DEFAULT_ENDPOINT else socket,
        cni_conf_dir=args.cni_dir,
        restrict_oom_score_adj=not has_cap_sys_resource(),
    )
    args.config.parent.mkdir(parents=True, exist_ok=True)
    args.config.write_text(text)
    print(f"setup: wrote {args.config}")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    log = args.data_dir / "containerd.log"
    process = spawn_containerd(args.config, log)
    print(f"setup: started containerd (pid {process.pid}, log {log})")
    try:
        with anyio.fail_after(BOOT_SECONDS):
            while not await answering(args.endpoint):
                if process.poll() is not None:
                    raise RuntimeError(f"containerd exited with {process.returncode}")
                await anyio.sleep(0.1)  # a daemon's socket has no event to wait on
    except (TimeoutError, RuntimeError) as exc:
        print(f"setup: containerd did not come up ({exc}): see {log}", file=sys.stderr)
        return 1
    await anyio.to_thread.run_sync(import_pause, socket)
    return await check(args.endpoint, host_network=args.network == "host")


async def main(args: argparse.Namespace) -> int:
    """Check the containerd that answers (changing only what is asked), else set one up."""
    if await answering(args.endpoint) or socket_of(args.endpoint).exists():
        if args.write_cni:
            write_cni(args.data_dir, Path(await cni_dir_of(args.endpoint) or args.cni_dir))
        if args.import_pause:
            await anyio.to_thread.run_sync(import_pause, socket_of(args.endpoint))
        return await check(args.endpoint, host_network=args.network == "host")
    return await start(args)


async def cni_dir_of(endpoint: str) -> str | None:
    """Return the CNI conf_dir the containerd at ``endpoint`` reads, if it says."""
    client = CriClient(endpoint, timeout=10)
    try:
        reply = await client.runtime("Status", pb.StatusRequest(verbose=True), pb.StatusResponse)
        config: dict[str, Any] = json.loads(reply.info.get("config", "{}"))
        directory = config.get("cni", {}).get("confDir")
        return str(directory) if directory else None
    except (ShoalError, ValueError):
        return None
    finally:
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--cni-dir", type=Path, default=DEFAULT_CNI_DIR)
    parser.add_argument("--root", type=Path, default=None, help="containerd's root dir")
    parser.add_argument("--state", type=Path, default=None, help="containerd's state dir")
    parser.add_argument("--network", choices=["bridge", "host"], default="bridge")
    parser.add_argument("--write-cni", action="store_true", help="write Shoal's CNI network")
    parser.add_argument("--import-pause", action="store_true", help="import Shoal's pause image")
    sys.exit(anyio.run(main, parser.parse_args()))
