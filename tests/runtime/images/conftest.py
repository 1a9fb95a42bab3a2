"""Fixtures for the image store: the busybox layout, a real loopback registry, a fake one.

The busybox layout is built once per session by the same script users run
(scripts/build_busybox_image.py). The real registry is Debian's
``docker-registry`` on a free loopback port with the layout pushed by
``skopeo``; it is skipped with the reason if either tool is missing. The fake
registry (``fake_registry``) is a per-test HTTP server for the cases a real
registry will not produce on demand: cuts, corruption, garbage, auth.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from scripts.build_busybox_image import BuiltImage, build_busybox_layout

from shoal.runtime import ImageStore
from tests.runtime.images.fake_registry import FakeRegistry, serving
from tests.runtime.images.support import LoopbackRegistry


@pytest.fixture(scope="session")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The busybox image, as an OCI layout in a directory named ``busybox``."""
    return build_busybox_layout(tmp_path_factory.mktemp("layout") / "busybox", "latest")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, busybox: BuiltImage) -> Iterator[str]:
    """``host:port`` of a real registry on 127.0.0.1 holding ``busybox:latest``."""
    missing = LoopbackRegistry.missing()
    if missing:
        pytest.skip(missing)
    server = LoopbackRegistry(tmp_path_factory.mktemp("registry"))
    server.start()
    try:
        server.push(busybox.layout, "latest")
        yield server.host
    finally:
        server.stop()


@pytest.fixture
async def fake_registry(busybox: BuiltImage) -> AsyncIterator[FakeRegistry]:
    """A fake registry serving the busybox layout as ``busybox``, all knobs off."""
    async with serving(FakeRegistry(busybox.layout)) as registry:
        yield registry


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    """An empty image store with no default registry."""
    return ImageStore(tmp_path / "store")


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    """Skip unless root: unpacking whiteouts (mknod) and overlay mounts need it, as Shoal does."""
    if os.geteuid() != 0:
        pytest.skip("the image store unpacks overlayfs whiteouts (mknod), which needs root")
