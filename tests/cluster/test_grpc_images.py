"""The Images service over real gRPC: an ImageGateway serving a store, RemoteImages fetching.

A "server" image store (no unpacking, so no root needed) holds an image
imported from an OCI layout; a "worker" store fetches it through a signed
:class:`NodeChannel`, as a worker lacking an image does in a cluster. Bytes
arrive in chunks, from an offset; errors arrive as the same ShoalErrors; a
node the gateway does not admit, or with the wrong token, gets nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from nacl.signing import SigningKey

from shoal.cluster import ImageGateway, RemoteImages
from shoal.cluster.grpc._grpc_base import NodeChannel
from shoal.cluster.grpc._nodeauth import Caller, CallVerifier, NodeIdentity
from shoal.interfaces import (
    Forbidden,
    ImageError,
    ImagePeer,
    ImageShare,
    InvalidInput,
    NotFound,
    SharedManifest,
    Unauthenticated,
)
from shoal.runtime import ImageStore
from tests.cluster.grpc_support import serving
from tests.runtime.images.support import member, tar_layer, write_layout

pytestmark = pytest.mark.anyio

TOKEN = "the-join-token"
WAIT = 10.0
BIG = 3 * (1 << 20) + 12345
"""A layer larger than a few 1 MiB chunks, so it crosses as a stream."""


@dataclass
class Members:
    """Admits the nodes named; remembers who asked."""

    names: set[str]
    callers: list[Caller] = field(default_factory=list)

    async def __call__(self, caller: Caller) -> None:
        self.callers.append(caller)
        if caller.name not in self.names:
            raise Forbidden(f"node {caller.name!r} is not a member", node=caller.name)


@dataclass
class Served:
    store: ImageStore
    address: str
    members: Members
    manifest_digest: str
    layer_digest: str


def make_layout(out: Path) -> tuple[str, str]:
    """Write an OCI layout ``app:latest`` with one big layer; return manifest and layer digests."""
    payload = hashlib.sha256(b"seed").digest() * (BIG // 32 + 1)
    layer = tar_layer(member("data.bin", payload[:BIG]))
    digest = write_layout(out, [layer], compress=False)
    manifest = json.loads((out / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())
    return digest, manifest["layers"][0]["digest"]


@asynccontextmanager
async def images_server(tmp_path: Path, share: ImageShare | None = None) -> AsyncIterator[Served]:
    store = ImageStore(tmp_path / "server", unpack=False)
    manifest_digest, layer_digest = make_layout(tmp_path / "app")
    await store.import_path(tmp_path / "app")
    members = Members({"worker-1"})
    gateway = ImageGateway(share or store, CallVerifier(TOKEN), members)
    async with serving(gateway.handler()) as address:
        yield Served(store, address, members, manifest_digest, layer_digest)


@asynccontextmanager
async def remote(
    address: str, name: str = "worker-1", token: str = TOKEN
) -> AsyncIterator[RemoteImages]:
    identity = NodeIdentity(name, SigningKey.generate())
    async with RemoteImages(NodeChannel(identity, token, address)) as images:
        yield images


def peers(*found: ImagePeer):  # type: ignore[no-untyped-def]
    async def listed() -> list[ImagePeer]:
        return list(found)

    return listed


async def test_a_worker_store_fetches_an_image_over_grpc(tmp_path: Path) -> None:
    async with images_server(tmp_path) as served, remote(served.address) as images:
        share: ImageShare = images  # RemoteImages is an ImageShare (mypy checks it)
        worker = ImageStore(
            tmp_path / "worker", unpack=False, peers=peers(ImagePeer("server-1", share))
        )
        with anyio.fail_after(WAIT):
            await worker.ensure("app:latest")
            [info] = await worker.list()
            listed = await images.list()
    assert info.digest == served.manifest_digest
    assert [i.reference for i in listed] == ["app:latest"]
    blob = tmp_path / "worker" / "blobs" / "sha256" / served.layer_digest.removeprefix("sha256:")
    assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == served.layer_digest
    assert {c.name for c in served.members.callers} == {"worker-1"}


async def test_blobs_stream_in_chunks_from_an_offset(tmp_path: Path) -> None:
    async with images_server(tmp_path) as served, remote(served.address) as images:
        with anyio.fail_after(WAIT):
            whole = [c async for c in images.shared_blob(served.layer_digest)]
            tail = b"".join([c async for c in images.shared_blob(served.layer_digest, 1_000_001)])
            shared = await images.shared_manifest("app")
    assert len(whole) >= 4 and all(len(c) <= 1 << 20 for c in whole)
    data = b"".join(whole)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == served.layer_digest
    assert tail == data[1_000_001:]
    assert shared.digest == served.manifest_digest
    assert shared.reference == "app:latest"


async def test_errors_travel_as_shoal_errors(tmp_path: Path) -> None:
    async with images_server(tmp_path) as served, remote(served.address) as images:
        with anyio.fail_after(WAIT):
            with pytest.raises(NotFound):
                await images.shared_manifest("other:1")
            with pytest.raises(NotFound):
                _ = [c async for c in images.shared_blob("sha256:" + "0" * 64)]
            with pytest.raises(InvalidInput):
                _ = [c async for c in images.shared_blob("md5:0")]
            with pytest.raises(InvalidInput):
                _ = [c async for c in images.shared_blob(served.layer_digest, 1 << 40)]


async def test_only_admitted_nodes_with_the_token_get_images(tmp_path: Path) -> None:
    async with images_server(tmp_path) as served:
        with anyio.fail_after(WAIT):
            async with remote(served.address, name="stranger") as images:
                with pytest.raises(Forbidden):
                    await images.shared_manifest("app")
                with pytest.raises(Forbidden):
                    _ = [c async for c in images.shared_blob(served.layer_digest)]
            async with remote(served.address, token="wrong") as images:
                with pytest.raises(Unauthenticated):
                    await images.list()


class PinnedThroughIndex:
    """Serves the store's image as if it came through an index (or through a forged one)."""

    def __init__(self, store: ImageStore, *, forge: bool = False) -> None:
        self.store = store
        self.forge = forge
        self.index = b""

    async def shared_manifest(self, reference: str) -> SharedManifest:
        shared = await self.store.shared_manifest("app:latest")
        listed = "sha256:" + "1" * 64 if self.forge else shared.digest
        self.index = json.dumps(
            {"schemaVersion": 2, "manifests": [{"digest": listed, "size": 1, "mediaType": ""}]}
        ).encode()
        return shared._replace(index_data=self.index)

    def shared_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        return self.store.shared_blob(digest, offset)

    async def list(self):  # type: ignore[no-untyped-def]
        return await self.store.list()


@pytest.mark.parametrize("forge", [False, True])
async def test_a_reference_pinned_to_an_index_is_verified_through_it(
    tmp_path: Path, forge: bool
) -> None:
    store = ImageStore(tmp_path / "server", unpack=False)
    make_layout(tmp_path / "app")
    await store.import_path(tmp_path / "app")
    share = PinnedThroughIndex(store, forge=forge)
    await share.shared_manifest("app")
    pinned = "sha256:" + hashlib.sha256(share.index).hexdigest()
    worker = ImageStore(tmp_path / "worker", unpack=False, peers=peers(ImagePeer("s1", share)))
    with anyio.fail_after(WAIT):
        if forge:
            with pytest.raises(ImageError, match="not, nor is listed by, the pinned"):
                await worker.ensure(f"app@{pinned}")
            return
        await worker.ensure(f"app@{pinned}")
        [info] = await worker.list()
    assert info.reference == f"app@{pinned}"
