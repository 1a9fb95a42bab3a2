"""ShoalService's images of any node: list_images(node) through the node's Images service."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence

import pytest

from shoal.core import ShoalService
from shoal.core._service import LocalNode
from shoal.interfaces import (
    NOT_SERVED,
    Actor,
    ImageInfo,
    ImageShare,
    Node,
    NotFound,
    SharedManifest,
    Unavailable,
)
from shoal.runtime import MockRuntime
from tests.core.support import Cluster

pytestmark = pytest.mark.anyio


def image(reference: str) -> ImageInfo:
    return ImageInfo(reference=reference, digest="sha256:" + "a" * 64, size=1)


class Images:
    """A node's images: an ImageManager (for the local node) and an ImageShare alike."""

    def __init__(self, *references: str) -> None:
        self.images = [image(r) for r in references]

    async def list(self) -> Sequence[ImageInfo]:
        return self.images

    async def shared_manifest(self, reference: str) -> SharedManifest:
        raise NotFound(reference)

    async def shared_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        chunks: list[bytes] = []  # none: this node holds no blobs
        for chunk in chunks:
            yield chunk
        raise NotFound(digest)

    async def pull(self, reference: str, *, progress: object = None) -> ImageInfo:
        raise NotImplementedError

    async def import_path(
        self, path: object, reference: str | None = None
    ) -> builtins.list[ImageInfo]:
        raise NotImplementedError

    async def remove(self, reference: str) -> builtins.list[ImageInfo]:
        raise NotImplementedError

    async def gc(self, *, in_use: object = ()) -> int:
        raise NotImplementedError


async def test_list_images_of_this_node_or_another_through_its_share(cluster: Cluster) -> None:
    await cluster.add_node("server")
    await cluster.add_node("worker1")
    asked: list[str] = []
    on_worker = Images("busybox:latest")

    def images_of(node: Node) -> ImageShare:
        asked.append(node.name)
        return on_worker

    service = ShoalService(
        cluster.store,
        cluster.clock,
        local=LocalNode("server", MockRuntime(cluster.clock), Images("app:1")),
        remote_images=images_of,
    ).with_actor(Actor(id="viewer@test", via="rest"))

    assert [i.reference for i in await service.list_images()] == ["app:1"]
    assert [i.reference for i in await service.list_images("server")] == ["app:1"]
    assert [i.reference for i in await service.list_images("worker1")] == ["busybox:latest"]
    assert asked == ["worker1"]
    with pytest.raises(NotFound, match="node nosuch is not in the cluster"):
        await service.list_images("nosuch")


async def test_a_node_alone_cannot_list_another_nodes_images(cluster: Cluster) -> None:
    await cluster.add_node("worker1")
    service = ShoalService(
        cluster.store,
        cluster.clock,
        local=LocalNode("n1", MockRuntime(cluster.clock), Images()),
    )
    with pytest.raises(Unavailable, match="not clustered"):
        await service.list_images("worker1")


class NoImages(Images):
    """A node's gRPC server without an Images service: it answers UNIMPLEMENTED."""

    async def list(self) -> Sequence[ImageInfo]:
        raise Unavailable("node 127.0.0.1:7947 does not serve this call", reason=NOT_SERVED)


async def test_a_node_without_images_is_said_to_keep_none_not_to_be_old(cluster: Cluster) -> None:
    await cluster.add_node("worker1")  # its runtime is mock: it keeps no images
    service = ShoalService(
        cluster.store,
        cluster.clock,
        local=LocalNode("server", MockRuntime(cluster.clock), Images()),
        remote_images=lambda node: NoImages(),
    )
    with pytest.raises(Unavailable, match=r"node worker1 keeps no images .*runtime is mock"):
        await service.list_images("worker1")
