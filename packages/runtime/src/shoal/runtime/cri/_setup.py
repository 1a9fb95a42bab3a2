"""What containerd needs to run Shoal's pods: its config, the CNI network, the pause image.

Used by ``scripts/setup_containerd.py`` (``make run RUNTIME=cri``) and by the
tests' private containerd alike, so both run what the docs describe:

* :func:`containerd_config`: a config (version 2) with the CRI plugin on,
  ``sandbox_image`` the locally built pause image (no registry needed),
  runc through ``io.containerd.runc.v2`` with the **cgroupfs** driver
  (:class:`~shoal.runtime.cri.CriRuntime` reads stats from cgroupfs paths),
  CNI from the given directories, and where the host needs them
  ``restrict_oom_score_adj`` (no CAP_SYS_RESOURCE) and
  ``netns_mounts_under_state_dir`` (a private instance keeps its network
  namespaces under its own state);
* :func:`cni_conflist`: the CNI network of the node's claimed bridge and
  subnet (the same bridge, ``host-local`` IPAM and ``portmap`` as the runc
  runtime's :class:`~shoal.runtime.CniNetwork`), for containerd's CNI
  ``conf_dir``;
* :func:`import_image`: ``ctr -n k8s.io images import`` of an archive;
* :func:`check_containerd`: what a running containerd lacks for Shoal (CRI
  plugin disabled, no pause image, the systemd cgroup driver, no CNI
  network), each with its fix: an existing containerd is checked, never changed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from shoal.interfaces import ShoalError
from shoal.runtime.net._cni import DEFAULT_PLUGIN_DIRS, CniNetwork

from ._client import CriClient, check_cri, pb
from ._images import CriImages
from ._pause import PAUSE_IMAGE

__all__ = [
    "check_containerd",
    "cni_conflist",
    "containerd_config",
    "import_image",
    "write_cni_conflist",
]


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def containerd_config(
    *,
    root: Path | None = None,
    state: Path | None = None,
    address: Path | None = None,
    cni_conf_dir: Path = Path("/etc/cni/net.d"),
    cni_bin_dirs: tuple[Path, ...] = DEFAULT_PLUGIN_DIRS,
    sandbox_image: str = PAUSE_IMAGE,
    restrict_oom_score_adj: bool = False,
    netns_under_state: bool = False,
    insecure_registries: tuple[str, ...] = (),
) -> str:
    """Return a containerd config (TOML, version 2) for running Shoal's pods.

    Args:
        root: containerd's ``root`` (its default when None).
        state: containerd's ``state`` (its default when None).
        address: Its gRPC socket; the ttrpc and debug sockets go beside it.
        cni_conf_dir: Where the CRI plugin reads CNI network configs.
        cni_bin_dirs: Where the CNI plugins are; the first that exists is used.
        sandbox_image: The pause image.
        restrict_oom_score_adj: Needed where containerd lacks CAP_SYS_RESOURCE.
        netns_under_state: Keep pod network namespaces under ``state``.
        insecure_registries: ``host:port`` registries reached over plain HTTP
            (loopback test registries).

    """
    lines = ["version = 2"]
    if root is not None:
        lines.append(f"root = {_toml(root)}")
    if state is not None:
        lines.append(f"state = {_toml(state)}")
    if address is not None:
        lines += [
            "[grpc]",
            f"  address = {_toml(address)}",
            "[ttrpc]",
            f"  address = {_toml(str(address) + '.ttrpc')}",
            "[debug]",
            f"  address = {_toml(address.with_name('debug.sock'))}",
        ]
    if root is not None:
        lines += ['[plugins."io.containerd.internal.v1.opt"]', f"  path = {_toml(root / 'opt')}"]
    bin_dir = next((d for d in cni_bin_dirs if d.is_dir()), cni_bin_dirs[0])
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines += [
        f"[{cri}]",
        f"  sandbox_image = {_toml(sandbox_image)}",
        f"  restrict_oom_score_adj = {_toml(restrict_oom_score_adj)}",
        f"  netns_mounts_under_state_dir = {_toml(netns_under_state)}",
        '  stream_server_address = "127.0.0.1"',
        f"[{cri}.cni]",
        f"  bin_dir = {_toml(bin_dir)}",
        f"  conf_dir = {_toml(cni_conf_dir)}",
        "  max_conf_num = 1",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",
    ]
    for registry in insecure_registries:
        lines += [
            f'[{cri}.registry.mirrors."{registry}"]',
            f"  endpoint = [{_toml('http://' + registry)}]",
        ]
    return "\n".join(lines) + "\n"


def cni_conflist(bridge: str, subnet: str, state: Path) -> dict[str, Any]:
    """Return the CNI config list of the node's bridge network, its IPAM state under ``state``.

    Raises:
        InvalidInput: the bridge name or subnet is not valid.

    """
    return CniNetwork(state, bridge=bridge, subnet=subnet).network_config()


def write_cni_conflist(conf_dir: Path, bridge: str, subnet: str, state: Path) -> Path:
    """Write :func:`cni_conflist` as ``conf_dir/10-shoal-<bridge>.conflist``; return its path."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / f"10-shoal-{bridge}.conflist"
    text = json.dumps(cni_conflist(bridge, subnet, state), indent=1) + "\n"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path


def import_image(address: Path | str, archive: Path, *, ctr: str = "ctr") -> str:
    """Import ``archive`` into containerd's ``k8s.io`` namespace (blocking); return ctr's output.

    Raises:
        subprocess.CalledProcessError: ctr failed (its stderr is on the exception).

    """
    done = subprocess.run(
        [ctr, "--address", str(address), "-n", "k8s.io", "images", "import", str(archive)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


async def check_containerd(client: CriClient, *, host_network: bool = False) -> list[str]:
    """Return what the CRI runtime at ``client``'s endpoint lacks for Shoal; [] when ready.

    Each entry says what is wrong and how to fix it: nothing answers (or not
    CRI v1: the CRI plugin is disabled), the runtime is not ready, no CNI
    network (unless pods use the host's network), the sandbox image is
    missing (it cannot be pulled offline), or runc uses the systemd cgroup
    driver (Shoal reads stats from cgroupfs paths).
    """
    try:
        await check_cri(client)
        reply = await client.runtime("Status", pb.StatusRequest(verbose=True), pb.StatusResponse)
    except ShoalError as exc:
        return [exc.message]
    problems = []
    conditions = {c.type: c for c in reply.status.conditions}
    runtime_ready = conditions.get("RuntimeReady")
    if runtime_ready is not None and not runtime_ready.status:
        problems.append(
            f"the runtime is not ready ({runtime_ready.reason}: {runtime_ready.message}): "
            "see containerd's log"
        )
    try:
        config: dict[str, Any] = json.loads(reply.info.get("config", "{}"))
    except ValueError:
        config = {}
    conf_dir = config.get("cni", {}).get("confDir", "its CNI conf_dir")
    network_ready = conditions.get("NetworkReady")
    if not host_network and network_ready is not None and not network_ready.status:
        problems.append(
            f"it has no CNI network ({network_ready.reason}): write Shoal's bridge network "
            f"into {conf_dir} (`scripts/setup_containerd.py --write-cni`), or run the agent "
            "with --network host"
        )
    sandbox = config.get("sandboxImage")
    if sandbox:
        try:
            present = await CriImages(client).status(str(sandbox))
        except ShoalError as exc:
            problems.append(f"cannot look for its sandbox image {sandbox}: {exc}")
        else:
            if present is None:
                problems.append(
                    f"its sandbox (pause) image {sandbox} is missing and cannot be pulled "
                    f"offline: import Shoal's (`scripts/setup_containerd.py --import-pause`, "
                    f"then set sandbox_image = {PAUSE_IMAGE!r}) or make {sandbox} available"
                )
    runc = config.get("containerd", {}).get("runtimes", {}).get("runc", {})
    options = runc.get("options") or {}
    if config.get("systemdCgroup") or options.get("SystemdCgroup"):
        problems.append(
            "runc uses the systemd cgroup driver; Shoal's CRI runtime needs cgroupfs: set "
            "SystemdCgroup = false under "
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options] '
            "and restart containerd"
        )
    return problems
