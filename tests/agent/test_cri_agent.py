"""The agent on a CRI runtime: `--runtime cri --cri-endpoint`, and its errors when none answers."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from shoal.agent import NodeConfig, build_node, reset_data_dir
from shoal.interfaces import NODE_KEY_FILE, Container, PodSpec
from shoal.runtime import CriImages, CriRuntime, HostNetworks
from tests.runtime.cri.harness import SLEEPER
from tests.runtime.cri.support import IMAGE, PrivateContainerd
from tests.shoal_cli import run_shoal

pytestmark = pytest.mark.anyio


def test_an_agent_whose_cri_endpoint_does_not_answer_says_so_and_exits(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/nothing.sock"
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    done = run_shoal(
        env,
        "agent",
        "--runtime",
        "cri",
        "--cri-endpoint",
        endpoint,
        "--data-dir",
        str(tmp_path / "node"),
        "--api-addr",
        "127.0.0.1:0",
        check=False,
    )
    assert done.returncode != 0
    assert f"error: cannot reach the CRI runtime at {endpoint}" in done.stderr
    assert "make run RUNTIME=cri" in done.stderr
    assert "Traceback" not in done.stderr


async def test_an_agent_on_cri_serves_the_runtimes_images(
    private_containerd: PrivateContainerd, tmp_path: Path
) -> None:
    config = NodeConfig(
        data_dir=tmp_path,
        name="cri-node",
        runtime="cri",
        cri_endpoint=private_containerd.endpoint,
        state="memory",
    )
    node = build_node(config)
    assert isinstance(node.runtime, CriRuntime)
    assert node.runtime.owner == "cri-node"
    assert node.node.runtime == "cri"
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            await tg.start(node.run)
        local = node.service.local
        assert local is not None and isinstance(local.images, CriImages)
        assert IMAGE in {image.reference for image in await local.images.list()}
        tg.cancel_scope.cancel()


async def test_node_reset_removes_the_pods_a_cri_node_left(
    private_containerd: PrivateContainerd, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / NODE_KEY_FILE).write_bytes(os.urandom(32))
    spec = PodSpec(
        uid="c0ffee" * 5,
        name="web-left",
        namespace="default",
        workload="web",
        containers=[Container(name="main", image=IMAGE, command=SLEEPER)],
    )
    endpoint = private_containerd.endpoint
    # Entering it notes its owner and endpoint in cri/runtime.json, as the agent's does.
    parent = private_containerd.cgroup_parent
    async with CriRuntime(
        data_dir / "cri", endpoint=endpoint, owner="left-node", cgroup_parent=parent
    ) as runtime:
        await runtime.run(spec)

    report = await reset_data_dir(data_dir, grace=2, registry=HostNetworks(tmp_path / "hosts"))

    assert report.pods == ["web-left"]
    async with CriRuntime(data_dir / "cri", endpoint=endpoint, owner="left-node") as runtime:
        assert await runtime.list() == []
