"""How nodes share images: what one node serves, and where another fetches from.

A node that keeps an image store shares it (:class:`ImageShare`): the
platform manifest of an image by reference, and any blob by digest from an
offset. The serving node's store implements it, and so does a client of that
node's ``Images`` gRPC service, so a worker's image store fetches from "a
server" without knowing how it is reached. :data:`ImagePeers` is how the
composition root hands a store the nodes to ask, found at the time of asking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from ._runtime import ImageInfo

__all__ = ["ImagePeer", "ImagePeers", "ImageShare", "SharedManifest"]


class SharedManifest(NamedTuple):
    """An image's platform manifest as a node holds it."""

    reference: str
    """The reference it is recorded under on the serving node."""
    digest: str
    """The manifest's digest (``sha256:...``): what ``data`` hashes to."""
    data: bytes
    """The manifest's bytes, exactly as stored."""
    index_data: bytes = b""
    """The bytes of the index it was chosen from, when it came through one (else empty):
    what lets a reference pinned to the index's digest be verified."""


class ImageShare(Protocol):
    """The images of one node, as other nodes read them."""

    async def shared_manifest(self, reference: str) -> SharedManifest:
        """Return the platform manifest of ``reference`` (a tag or a digest reference).

        Raises:
            NotFound: the node does not hold it.
            InvalidInput: ``reference`` is not an image reference.
        """
        ...

    def shared_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Yield the bytes of blob ``digest`` from ``offset`` on, in chunks.

        Raises:
            NotFound: the node does not hold it (on first iteration).
            InvalidInput: ``digest`` is not a sha256 digest, or ``offset`` is out of range.
        """
        ...

    async def list(self) -> Sequence[ImageInfo]:
        """Return every image the node holds."""
        ...


class ImagePeer(NamedTuple):
    """One node to fetch images from."""

    name: str
    """The node's name, for messages."""
    share: ImageShare
    """Its images."""


ImagePeers = Callable[[], Awaitable[Sequence[ImagePeer]]]
"""Return the nodes to ask for an image this node lacks, in the order to ask them."""
