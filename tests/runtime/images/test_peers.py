"""Fetching an image from another node's store: verified, resumable, and every failure named.

The serving side is a real :class:`ImageStore` with the busybox layout
imported; the network in between is replaced by wrappers that cut a blob's
stream part way or flip a byte, which a real channel will not do on demand.
(tests/multinode/test_images.py fetches over the real gRPC channel.)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest
from scripts.build_busybox_image import BuiltImage

from shoal.interfaces import (
    ImageError,
    ImageInfo,
    ImagePeer,
    ImageShare,
    NotFound,
    SharedManifest,
    Unavailable,
)
from shoal.runtime import ImageStore

pytestmark = pytest.mark.anyio

WAIT = 60.0


class Relay:
    """An ImageShare passing another one through, with faults, and recording each ask."""

    def __init__(self, inner: ImageShare, *, cut_after: int | None = None) -> None:
        self.inner = inner
        self.cut_after = cut_after
        """Bytes of the first large blob sent before its stream breaks (once)."""
        self.corrupt: str | None = None
        """Digest of a blob whose first byte is flipped in transit."""
        self.asked: list[tuple[str, int]] = []
        self.lost: bool = False
        """Every blob is gone from the server (it has the manifest still)."""

    async def shared_manifest(self, reference: str) -> SharedManifest:
        return await self.inner.shared_manifest(reference)

    async def shared_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        self.asked.append((digest, offset))
        if self.lost:
            raise NotFound(f"blob {digest} is not in the image store")
        sent = 0
        first = True
        async for chunk in self.inner.shared_blob(digest, offset):
            if digest == self.corrupt and first:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            first = False
            if self.cut_after is not None and sent + len(chunk) > self.cut_after:
                keep = self.cut_after - sent
                self.cut_after = None
                yield chunk[:keep]
                raise Unavailable("the connection to the server broke (injected)")
            sent += len(chunk)
            yield chunk

    async def list(self) -> Sequence[ImageInfo]:
        return await self.inner.list()


def peers_of(*peers: ImagePeer):  # type: ignore[no-untyped-def]
    async def found() -> list[ImagePeer]:
        return list(peers)

    return found


async def served(tmp_path: Path, busybox: BuiltImage) -> ImageStore:
    server = ImageStore(tmp_path / "server", unpack=False)
    await server.import_path(busybox.layout)
    return server


def biggest_layer(server_root: Path, busybox: BuiltImage) -> str:
    """The image's largest layer (over a megabyte: the busybox binary)."""
    blobs = server_root / "blobs" / "sha256"
    return max(
        busybox.layer_digests,
        key=lambda d: (blobs / d.removeprefix("sha256:")).stat().st_size,
    )


def blob_names(store_root: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (store_root / "blobs" / "sha256").iterdir()}


def verified(store_root: Path, digest: str) -> bool:
    data = (store_root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest() == digest


async def test_a_worker_gets_an_image_from_a_server_and_resumes_a_cut_blob(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    server = await served(tmp_path, busybox)
    layer = biggest_layer(tmp_path / "server", busybox)
    relay = Relay(server, cut_after=300_000)
    worker = ImageStore(tmp_path / "worker", peers=peers_of(ImagePeer("srv", relay)))
    with anyio.fail_after(WAIT):
        prepared = await worker.prepare("busybox")
    assert prepared.digest == busybox.manifest_digest
    assert any((path / "bin" / "busybox").is_file() for path in prepared.layers)
    # The layer was asked twice: from 0, then from where the cut left it.
    asks = [offset for digest, offset in relay.asked if digest == layer]
    assert asks == [0, 300_000], relay.asked
    wanted = {busybox.manifest_digest, busybox.config_digest, *busybox.layer_digests}
    assert wanted <= blob_names(tmp_path / "worker")
    assert all(verified(tmp_path / "worker", d) for d in wanted)
    [info] = await worker.list()
    assert info.reference == "busybox:latest"
    assert info.digest == busybox.manifest_digest


async def test_a_partial_left_by_an_earlier_attempt_is_resumed(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    server = await served(tmp_path, busybox)
    layer = biggest_layer(tmp_path / "server", busybox)
    source = tmp_path / "server" / "blobs" / "sha256" / layer.removeprefix("sha256:")
    incoming = tmp_path / "worker" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / f"{layer.removeprefix('sha256:')}.partial").write_bytes(
        source.read_bytes()[:123_456]
    )
    relay = Relay(server)
    worker = ImageStore(tmp_path / "worker", peers=peers_of(ImagePeer("srv", relay)))
    with anyio.fail_after(WAIT):
        await worker.prepare("busybox:latest")
    assert [o for d, o in relay.asked if d == layer] == [123_456]
    assert verified(tmp_path / "worker", layer)


async def test_bytes_that_do_not_match_their_digest_are_refused_and_deleted(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    server = await served(tmp_path, busybox)
    layer = biggest_layer(tmp_path / "server", busybox)
    relay = Relay(server)
    relay.corrupt = layer
    worker = ImageStore(tmp_path / "worker", peers=peers_of(ImagePeer("srv", relay)))
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await worker.prepare("busybox")
    message = caught.value.message
    assert "server srv" in message
    assert f"blob {layer}" in message and "failed verification" in message
    assert layer not in blob_names(tmp_path / "worker")
    # Its partial is gone (others, cut short by the failure, stay to be resumed).
    partials = {p.name for p in (tmp_path / "worker" / "incoming").iterdir()}
    assert f"{layer.removeprefix('sha256:')}.partial" not in partials
    assert await worker.list() == []


async def test_every_source_tried_is_named_with_why_it_failed(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    server = await served(tmp_path, busybox)
    empty = ImageStore(tmp_path / "empty", unpack=False)
    worker = ImageStore(
        tmp_path / "worker",
        peers=peers_of(ImagePeer("srv1", server), ImagePeer("srv2", empty)),
    )
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await worker.prepare("127.0.0.1:9/nothere:1")
    message = caught.value.message
    assert "server srv1: does not have it" in message
    assert "server srv2: does not have it" in message
    assert "registry 127.0.0.1:9: cannot reach registry" in message
    assert caught.value.details["sources"] == [
        "server srv1: does not have it",
        "server srv2: does not have it",
        message.split("[3] ")[1].split(". Import it")[0],
    ]

    lonely = ImageStore(tmp_path / "lonely", peers=peers_of())
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await lonely.prepare("nothere:1")
    assert "servers: none is alive in gossip" in caught.value.message
    assert "registry: none" in caught.value.message


async def test_a_server_that_lost_a_blob_is_named_and_the_next_source_tried(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    server = Relay(await served(tmp_path, busybox))
    server.lost = True
    worker = ImageStore(tmp_path / "worker", peers=peers_of(ImagePeer("srv", server)))
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await worker.prepare("busybox")
    assert "server srv: does not have it" in caught.value.message
    assert "registry: none" in caught.value.message


async def test_a_store_shares_blobs_from_an_offset_and_refuses_bad_asks(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    server = await served(tmp_path, busybox)
    config = (tmp_path / "server" / "blobs" / "sha256").joinpath(
        busybox.config_digest.removeprefix("sha256:")
    )
    got = b"".join([c async for c in server.shared_blob(busybox.config_digest, 10)])
    assert got == config.read_bytes()[10:]
    from shoal.interfaces import InvalidInput, NotFound

    with pytest.raises(InvalidInput):
        _ = [c async for c in server.shared_blob("md5:abc")]
    with pytest.raises(InvalidInput):
        _ = [c async for c in server.shared_blob(busybox.config_digest, 10**9)]
    with pytest.raises(NotFound):
        _ = [c async for c in server.shared_blob("sha256:" + "0" * 64)]
    with pytest.raises(NotFound):
        await server.shared_manifest("other:1")
