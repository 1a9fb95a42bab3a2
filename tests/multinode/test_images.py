"""Images reach every node offline: imported on a server, a runc worker fetches them over gRPC.

A real server and a real worker (runc, host networking) form a cluster with
no registry anywhere. The image is imported on the server only; a workload
placed on the worker runs because the worker fetched the image's blobs from
the server over the authenticated node channel into its own store, where each
one hashes to its digest. An image no source has fails its instance with a
status that names each source tried. ``shoal images ls --node`` shows either
node's images through the server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from scripts.build_busybox_image import BuiltImage, build_busybox_layout

from tests.multinode.support import LocalCluster, NodeProcess, running_by_node, wait_until

pytestmark = pytest.mark.slow


def workload(name: str, image: str) -> str:
    return json.dumps(
        {
            "kind": "Workload",
            "name": name,
            "replicas": 1,
            "template": {
                "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]
            },
        }
    )


def blob_file(node: NodeProcess, digest: str) -> Path:
    return node.data_dir / "images" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def instance_of(cluster: LocalCluster, server: NodeProcess, name: str) -> dict[str, Any] | None:
    found = [i for i in cluster.listing(server, "instances") if i["workload"] == name]
    return found[0] if found else None


@pytest.fixture
def busybox(tmp_path: Path) -> BuiltImage:
    return build_busybox_layout(tmp_path / "layout" / "busybox", "latest")


def test_an_image_imported_on_the_server_runs_on_a_runc_worker(
    cluster: LocalCluster, busybox: BuiltImage
) -> None:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    server = cluster.add("srv", "server")
    cluster.start(server)
    worker = cluster.add("w1", "worker", join=[server], extra=["--network", "host"])
    worker.args[worker.args.index("--runtime") + 1] = "runc"
    cluster.start(worker)
    try:
        imported = cluster.cli(server, "images", "import", str(busybox.layout)).stdout
        assert "busybox:latest" in imported, imported
        assert not (worker.data_dir / "images" / "images.json").exists()

        cluster.cli(server, "apply", "-f", "-", stdin=workload("web", "busybox:latest"))
        wait_until(
            "web running on w1",
            lambda: running_by_node(cluster.listing(server, "instances"), "web") == {"w1": 1},
            90,
            cluster.logs,
        )
        # The worker's own store holds every blob of the image, each verified.
        for digest in (busybox.manifest_digest, busybox.config_digest, *busybox.layer_digests):
            data = blob_file(worker, digest).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        index = json.loads((worker.data_dir / "images" / "images.json").read_text())
        records = index.get("images", index)
        text = json.dumps(records)
        assert busybox.manifest_digest in text and '"cluster"' in text, records

        # Through the server: what each node holds.
        on_worker = cluster.cli(server, "images", "ls", "--node", "w1").stdout
        assert "busybox:latest" in on_worker, on_worker
        on_server = cluster.cli(server, "images", "ls", "--node", "srv").stdout
        assert "busybox:latest" in on_server, on_server

        # No server nor registry has this one: the status names each source.
        cluster.cli(server, "apply", "-f", "-", stdin=workload("ghost", "nothere:1"))
        failed = wait_until(
            "ghost failed",
            lambda: (
                (i := instance_of(cluster, server, "ghost"))
                and "ImagePullFailed" in i["message"]
                and i
            ),
            90,
            cluster.logs,
        )
        message = failed["message"]  # the status; the restart keeps the failure's message
        assert "server srv: does not have it" in message, message
        assert "registry: none" in message, message
    finally:
        if worker.exited() is None:
            worker.signal(signal.SIGTERM)  # leaves, stopping its runc pods
