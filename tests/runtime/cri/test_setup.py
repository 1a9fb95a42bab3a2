"""Setting containerd up for Shoal: the config it writes, and the check of a running one."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grpc.aio
import pytest

from shoal.runtime.cri import PAUSE_IMAGE, CriClient, check_containerd, containerd_config
from tests.runtime.cri.support import PrivateContainerd

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


def test_the_containerd_config_has_what_shoal_needs(tmp_path: Path) -> None:
    text = containerd_config(
        root=tmp_path / "root",
        address=tmp_path / "containerd.sock",
        cni_conf_dir=tmp_path / "net.d",
        restrict_oom_score_adj=True,
        insecure_registries=("127.0.0.1:5000",),
    )
    config = tomllib.loads(text)
    assert config["version"] == 2
    assert config["grpc"]["address"] == str(tmp_path / "containerd.sock")
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE_IMAGE
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == str(tmp_path / "net.d")
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    mirror = cri["registry"]["mirrors"]["127.0.0.1:5000"]
    assert mirror["endpoint"] == ["http://127.0.0.1:5000"]


def test_a_ready_containerd_is_only_checked(private_containerd: PrivateContainerd) -> None:
    script = str(ROOT / "scripts" / "setup_containerd.py")
    done = subprocess.run(
        [sys.executable, script, "--endpoint", private_containerd.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"the containerd at {private_containerd.endpoint} is ready" in done.stdout
    assert "wrote" not in done.stdout  # nothing was changed


async def test_an_endpoint_without_cri_is_reported_with_the_fix(tmp_path: Path) -> None:
    server = grpc.aio.server()
    socket = tmp_path / "other.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    client = CriClient(f"unix://{socket}")
    try:
        (problem,) = await check_containerd(client)
    finally:
        await client.aclose()
        await server.stop(None)
    assert "does not implement CRI v1" in problem
    assert "CRI plugin enabled" in problem
