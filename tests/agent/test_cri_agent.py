"""The agent on a CRI runtime: `--runtime cri --cri-endpoint`, and its errors when none answers."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from shoal.agent import NodeConfig, build_node
from shoal.runtime import CriImages, CriRuntime
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
