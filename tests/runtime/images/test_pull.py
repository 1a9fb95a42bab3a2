"""Pulling over the distribution API: from a real loopback registry, and a fake that misbehaves."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from scripts.build_busybox_image import ADDED_IN_OPAQUE, HIDDEN_BY_OPAQUE, WHITED_OUT, BuiltImage

from shoal.interfaces import ImageError
from shoal.runtime import ImageStore, PullProgress
from shoal.runtime.images._manifest import digest_of, host_platform
from tests.runtime.images.fake_registry import FakeRegistry, junk_server
from tests.runtime.images.support import merged_view

pytestmark = pytest.mark.anyio

WAIT = 30.0


def _blob_files(store: ImageStore) -> set[str]:
    return {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}


def _incoming(store: ImageStore) -> list[str]:
    return sorted(p.name for p in (store.root / "incoming").iterdir())


async def test_pull_from_a_real_registry_gives_layers_whose_merged_view_is_busybox(
    store: ImageStore, registry: str, busybox: BuiltImage, tmp_path: Path
) -> None:
    events: list[PullProgress] = []
    with anyio.fail_after(WAIT):
        info = await store.pull(f"{registry}/busybox:latest", progress=events.append)
        prepared = await store.prepare(f"{registry}/busybox")
    assert info.digest == prepared.digest == busybox.manifest_digest
    assert info.reference == f"{registry}/busybox:latest"
    assert prepared.config.cmd == ["sh"]
    assert prepared.config.env == ["PATH=/bin"]
    assert len(prepared.layers) == 2
    downloaded = {e.digest for e in events if e.status == "downloaded" and e.kind == "layer"}
    assert downloaded == set(busybox.layer_digests)
    assert {e.digest for e in events if e.status == "unpacked"} == set(busybox.layer_digests)
    with merged_view(prepared.layers, tmp_path / "rootfs") as rootfs:
        assert (rootfs / "bin" / "busybox").is_file()
        assert (rootfs / "bin" / "sh").is_symlink()
        assert not (rootfs / WHITED_OUT).exists()
        assert not (rootfs / HIDDEN_BY_OPAQUE).exists()
        assert (rootfs / ADDED_IN_OPAQUE).is_file()
        # The unpacked image really runs: busybox's sh inside the merged root.
        process = await anyio.run_process(
            ["chroot", str(rootfs), "/bin/sh", "-c", "echo hi; id -u"]
        )
        assert process.stdout.split() == [b"hi", b"0"]


async def test_unqualified_names_use_the_default_registry(
    registry: str, busybox: BuiltImage, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "store", default_registry=registry)
    with anyio.fail_after(WAIT):
        prepared = await store.prepare("busybox")
    assert prepared.digest == busybox.manifest_digest
    assert [i.reference for i in await store.list()] == [f"{registry}/busybox:latest"]


async def test_an_image_the_registry_lacks_is_an_error_naming_it(
    store: ImageStore, registry: str
) -> None:
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await store.pull(f"{registry}/nothing-here:1.0")
    assert f"{registry}/nothing-here:1.0 not found in registry {registry}" in caught.value.message
    assert await store.list() == []


async def test_second_pull_downloads_no_blob(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    reference = f"{fake_registry.host}/busybox:latest"
    with anyio.fail_after(WAIT):
        await store.pull(reference)
        assert len(fake_registry.blob_gets()) == 3  # config and two layers
        events: list[PullProgress] = []
        await store.pull(reference, progress=events.append)
        await store.prepare(reference)
    assert len(fake_registry.blob_gets()) == 3
    assert len(fake_registry.manifest_gets()) == 2  # a pull re-reads the tag; prepare does not
    assert {e.status for e in events if e.kind != "manifest"} == {"cached", "unpacked"}


async def test_concurrent_prepares_fetch_each_blob_once(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    results = []

    async def prepare() -> None:
        results.append(await store.prepare(f"{fake_registry.host}/busybox"))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(prepare)
    assert len({tuple(r.layers) for r in results}) == 1
    for digest in busybox.layer_digests:
        assert len(fake_registry.blob_gets(digest)) == 1


async def test_bearer_token_flow_with_credentials(
    tmp_path: Path, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    fake_registry.token = "t0ken"
    fake_registry.token_credentials = ("alice", "s3cret")
    store = ImageStore(tmp_path / "store", credentials={fake_registry.host: ("alice", "s3cret")})
    with anyio.fail_after(WAIT):
        prepared = await store.prepare(f"{fake_registry.host}/busybox")
    assert prepared.digest == busybox.manifest_digest
    assert len(fake_registry.token_gets()) == 1  # one token serves the whole pull
    assert all(s.authorization == "Bearer t0ken" for s in fake_registry.blob_gets())


async def test_bearer_token_refused_without_credentials(
    store: ImageStore, fake_registry: FakeRegistry
) -> None:
    fake_registry.token = "t0ken"
    fake_registry.token_credentials = ("alice", "s3cret")
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="configure credentials"):
        await store.pull(f"{fake_registry.host}/busybox")


async def test_basic_auth(tmp_path: Path, fake_registry: FakeRegistry) -> None:
    fake_registry.basic = ("bob", "pw")
    anonymous = ImageStore(tmp_path / "anonymous")
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="requires credentials"):
        await anonymous.pull(f"{fake_registry.host}/busybox")
    wrong = ImageStore(tmp_path / "wrong", credentials={fake_registry.host: ("bob", "nope")})
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="refused the credentials"):
        await wrong.pull(f"{fake_registry.host}/busybox")
    right = ImageStore(tmp_path / "right", credentials={fake_registry.host: ("bob", "pw")})
    with anyio.fail_after(WAIT):
        await right.pull(f"{fake_registry.host}/busybox")


async def test_a_cut_download_resumes_with_a_range_request(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    big = busybox.layer_digests[0]
    fake_registry.cut_once.add(big)
    with anyio.fail_after(WAIT):
        prepared = await store.prepare(f"{fake_registry.host}/busybox")
    first, second = fake_registry.blob_gets(big)
    assert first.range is None
    assert second.range is not None and int(second.range.removeprefix("bytes=").rstrip("-")) > 0
    assert prepared.digest == busybox.manifest_digest
    assert big in _blob_files(store)
    assert _incoming(store) == []


async def test_an_interrupted_pull_is_resumed_by_the_next_pull(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    big = busybox.layer_digests[0]
    fake_registry.cut_always.add(big)
    reference = f"{fake_registry.host}/busybox"
    with anyio.fail_after(WAIT), pytest.raises(ImageError, match="resumes") as caught:
        await store.pull(reference)
    assert caught.value.details["digest"] == big
    [partial] = _incoming(store)
    held = (store.root / "incoming" / partial).stat().st_size
    assert 0 < held < (busybox.layout / "blobs/sha256" / big.removeprefix("sha256:")).stat().st_size
    fake_registry.cut_always.clear()
    fake_registry.seen.clear()
    with anyio.fail_after(WAIT):
        await store.pull(reference)
    [resumed] = fake_registry.blob_gets(big)
    assert resumed.range == f"bytes={held}-"
    assert big in _blob_files(store)


async def test_a_registry_that_ignores_range_restarts_the_download(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    big = busybox.layer_digests[0]
    fake_registry.cut_once.add(big)
    fake_registry.ignore_range = True
    with anyio.fail_after(WAIT):
        prepared = await store.prepare(f"{fake_registry.host}/busybox")
    assert prepared.digest == busybox.manifest_digest
    assert len(fake_registry.blob_gets(big)) == 2


async def test_a_blob_that_fails_its_digest_is_never_kept(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    bad = busybox.layer_digests[1]
    fake_registry.corrupt.add(bad)
    with (
        anyio.fail_after(WAIT),
        pytest.raises(ImageError, match=f"blob {bad} .* failed verification"),
    ):
        await store.prepare(f"{fake_registry.host}/busybox")
    assert bad not in _blob_files(store)
    assert not any(name.startswith(bad.removeprefix("sha256:")) for name in _incoming(store))
    assert list((store.root / "layers").iterdir()) == []
    assert await store.list() == []  # an image whose blobs failed is not recorded


async def test_a_registry_that_is_down_is_named(store: ImageStore) -> None:
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await store.pull("127.0.0.1:9/busybox")  # discard port: nothing listens
    assert "cannot reach registry 127.0.0.1:9" in caught.value.message
    assert "check that it is running" in caught.value.message


async def test_a_registry_answering_html_is_named(
    store: ImageStore, fake_registry: FakeRegistry
) -> None:
    fake_registry.garbage = True
    with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
        await store.pull(f"{fake_registry.host}/busybox")
    assert "not an image manifest" in caught.value.message
    assert (
        f"check that {fake_registry.host} is an OCI distribution registry" in caught.value.message
    )


async def test_a_server_that_does_not_speak_http_is_named(store: ImageStore) -> None:
    async with junk_server() as host:
        with anyio.fail_after(WAIT), pytest.raises(ImageError) as caught:
            await store.pull(f"{host}/busybox")
    assert f"registry {host} answered something that is not HTTP" in caught.value.message


async def test_an_index_resolves_to_the_host_platform(
    store: ImageStore, fake_registry: FakeRegistry, busybox: BuiltImage
) -> None:
    manifest = (busybox.layout / "blobs/sha256" / busybox.manifest_digest[7:]).read_bytes()
    host = host_platform()
    other = "sha256:" + "0" * 64  # not served: choosing it would fail the pull
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other,
             "size": 500, "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other,
             "size": 500, "platform": {"os": "unknown", "architecture": "unknown"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": busybox.manifest_digest, "size": len(manifest),
             "platform": {"os": "linux", "architecture": host.architecture}},
        ],
    }  # fmt: skip
    data = json.dumps(index).encode()
    fake_registry.extra["multi"] = (data, "application/vnd.oci.image.index.v1+json")
    with anyio.fail_after(WAIT):
        info = await store.pull(f"{fake_registry.host}/busybox:multi")
        pinned = await store.prepare(f"{fake_registry.host}/busybox@{digest_of(data)}")
    assert info.digest == busybox.manifest_digest
    assert pinned.digest == busybox.manifest_digest  # found locally by the index digest
    assert len(fake_registry.manifest_gets()) == 2  # the index, then the host's manifest
