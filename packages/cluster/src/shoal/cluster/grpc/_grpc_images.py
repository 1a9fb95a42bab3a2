"""The Images service: a node's images, for the other nodes of the cluster.

A worker that lacks an image asks a server for it, with no registry::

    worker ImageStore --RemoteImages--> (gRPC shoal.cluster.v1.Images) --ImageGateway--> store

:class:`ImageGateway` serves a node's image store (any
:class:`~shoal.interfaces.ImageShare`) to authenticated callers that
``authorize`` admits (the composition root admits members of the cluster).
:class:`RemoteImages` is the calling side and is itself an ImageShare, so the
worker's store reads a remote node as it would a local one. Blobs travel in
chunks from an offset, so the caller resumes a cut transfer; verifying what
arrives is the caller's job (it knows the digest it asked for).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import anyio
import grpc
import grpc.aio

from shoal.interfaces import AsyncClosing, ImageInfo, ImageShare, SharedManifest, ShoalError

from ._grpc_base import PACKAGE, AdmittingService, NodeChannel
from ._grpc_errors import abort_with
from ._nodeauth import Caller, CallVerifier
from ._pb import shoal_node_pb2 as pb

__all__ = ["ImageGateway", "RemoteImages"]

_SERVICE = f"{PACKAGE}.Images"
_MANIFEST = f"/{_SERVICE}/Manifest"
_BLOB = f"/{_SERVICE}/Blob"
_LIST = f"/{_SERVICE}/List"

_Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class ImageGateway(AdmittingService):
    """Serves ``images`` to the nodes ``authorize`` admits.

    Args:
        images: The node's images; its ImageStore.
        verifier: Checks the auth metadata of each call.
        authorize: Admits or refuses an authenticated caller (raises a ShoalError).
    """

    def __init__(
        self,
        images: ImageShare,
        verifier: CallVerifier,
        authorize: Callable[[Caller], Awaitable[None]],
    ) -> None:
        super().__init__(verifier, authorize)
        self._images = images

    def handler(self) -> grpc.GenericRpcHandler:
        """Return the handler of ``shoal.cluster.v1.Images``, for :func:`serve_grpc`."""
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Manifest": grpc.unary_unary_rpc_method_handler(
                    self._manifest,
                    request_deserializer=pb.ManifestRequest.FromString,
                    response_serializer=pb.ManifestReply.SerializeToString,
                ),
                "Blob": grpc.unary_stream_rpc_method_handler(
                    self._blob,
                    request_deserializer=pb.BlobRequest.FromString,
                    response_serializer=pb.BlobChunk.SerializeToString,
                ),
                "List": grpc.unary_unary_rpc_method_handler(
                    self._list,
                    request_deserializer=pb.ImageListRequest.FromString,
                    response_serializer=pb.ImageListReply.SerializeToString,
                ),
            },
        )

    async def _manifest(self, request: pb.ManifestRequest, context: _Context) -> pb.ManifestReply:
        await self._admit(context, _MANIFEST, request)
        try:
            shared = await self._images.shared_manifest(request.reference)
        except ShoalError as exc:
            await abort_with(context, exc)
        return pb.ManifestReply(
            reference=shared.reference,
            digest=shared.digest,
            data=shared.data,
            index=shared.index_data,
        )

    async def _blob(self, request: pb.BlobRequest, context: _Context) -> None:
        # Writes to the context (as Pods.Logs does): when the caller goes
        # away, gRPC cancels this task and the finally closes the reader.
        await self._admit(context, _BLOB, request)
        chunks = self._images.shared_blob(request.digest, request.offset)
        try:
            async for chunk in chunks:
                await context.write(pb.BlobChunk(data=chunk))
        except ShoalError as exc:
            await abort_with(context, exc)
        finally:
            await _aclose(chunks)

    async def _list(self, request: pb.ImageListRequest, context: _Context) -> pb.ImageListReply:
        await self._admit(context, _LIST, request)
        try:
            images = await self._images.list()
        except ShoalError as exc:
            await abort_with(context, exc)
        return pb.ImageListReply(
            images=[
                pb.ImageEntry(reference=i.reference, digest=i.digest, size=i.size) for i in images
            ]
        )


class RemoteImages(AsyncClosing):
    """The images of another node, through its Images service: an ImageShare over gRPC.

    Owns ``channel``. Besides the errors of the remote store, every method
    raises :class:`~shoal.interfaces.Unavailable` when the node cannot be
    reached (or a stream breaks), and Unauthenticated or Forbidden when it
    refuses this node.
    """

    def __init__(self, channel: NodeChannel) -> None:
        self._channel = channel

    @property
    def address(self) -> str:
        """The ``host:port`` of the node's gRPC service."""
        return self._channel.address

    async def shared_manifest(self, reference: str) -> SharedManifest:
        """Return the node's platform manifest of ``reference`` (not yet verified).

        Raises:
            NotFound: the node does not hold it.
            Unavailable: the node cannot be reached.
        """
        reply = await self._channel.unary(
            _MANIFEST, pb.ManifestRequest(reference=reference), pb.ManifestReply
        )
        return SharedManifest(reply.reference, reply.digest, reply.data, reply.index)

    async def shared_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Yield the bytes of blob ``digest`` from ``offset`` on (not yet verified).

        Raises:
            NotFound: the node does not hold it.
            Unavailable: the node cannot be reached, or the stream broke.
        """
        replies = self._channel.stream(
            _BLOB, pb.BlobRequest(digest=digest, offset=offset), pb.BlobChunk
        )
        try:
            async for reply in replies:
                yield reply.data
        finally:
            await _aclose(replies)

    async def list(self) -> Sequence[ImageInfo]:
        """Return every image the node holds.

        Raises:
            Unavailable: the node cannot be reached.
        """
        reply = await self._channel.unary(_LIST, pb.ImageListRequest(), pb.ImageListReply)
        return [
            ImageInfo(reference=item.reference, digest=item.digest, size=item.size)
            for item in reply.images
        ]

    async def aclose(self) -> None:
        """Close the channel to the node."""
        await self._channel.aclose()


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()
