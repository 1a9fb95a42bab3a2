r"""A typed grpc.aio client of the CRI v1 services, with failures translated to Shoal's errors.

The Kubernetes Container Runtime Interface has two services on one socket,
``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService``. Calls are made
through ``channel.unary_unary`` over the messages protoc generated from the
vendored ``proto/cri_api.proto`` (protoc's ``_pb2_grpc`` stubs are untyped and
add nothing for a client).

Failures become :class:`~shoal.interfaces.ShoalError`\\ s here, once:

* the socket cannot be reached: :class:`~shoal.interfaces.Unavailable`, naming
  the endpoint and how to start containerd;
* ``UNIMPLEMENTED``: :class:`~shoal.interfaces.Unavailable`, the endpoint does
  not speak CRI v1 (an old runtime, or its CRI plugin is disabled);
* ``NOT_FOUND``: :class:`~shoal.interfaces.NotFound`;
* containerd's CRI plugin still starting (it answers "server is not
  initialized yet" for a moment after a restart): :class:`~shoal.interfaces.Unavailable`;
* anything else: :class:`~shoal.interfaces.RuntimeFailure` with the runtime's message.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from shoal.interfaces import NotFound, RuntimeFailure, ShoalError, Unavailable

from ._pb import cri_api_pb2 as pb

__all__ = ["DEFAULT_ENDPOINT", "CriClient", "check_cri", "pb"]

DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
"""containerd's socket, where its CRI plugin listens."""

Reply = TypeVar("Reply", bound=Message)

_RUNTIME = "runtime.v1.RuntimeService"
_IMAGE = "runtime.v1.ImageService"
_FIX = (
    "start containerd with its CRI plugin enabled (`make run RUNTIME=cri` sets one up, "
    "see docs/runtime.md), or pass the right --cri-endpoint"
)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    details = exc.details() or ""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and "connect" in details


def endpoint_target(endpoint: str) -> str:
    """Return the gRPC target of ``endpoint``: a ``unix://`` URL, or a bare socket path."""
    if endpoint.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return endpoint
    return f"unix://{endpoint}"


class CriClient:
    """One connection to a CRI runtime (containerd, CRI-O).

    The channel is opened on first use, in the event loop that uses it.

    Args:
        endpoint: ``unix:///run/containerd/containerd.sock`` or a socket path.
        timeout: Seconds one call may take unless the call says otherwise.

    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 60.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, Any] = {}

    def _method(self, path: str, reply: type[Message]) -> Any:
        if self._channel is None:
            options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            self._channel = grpc.aio.insecure_channel(
                endpoint_target(self.endpoint), options=options
            )
        method = self._methods.get(path)
        if method is None:
            method = self._channel.unary_unary(
                path,
                request_serializer=_serialize,
                response_deserializer=reply.FromString,
            )
            self._methods[path] = method
        return method

    async def _call(
        self, service: str, name: str, request: Message, reply: type[Reply], deadline: float | None
    ) -> Reply:
        for attempt in range(2):
            method = self._method(f"/{service}/{name}", reply)
            try:
                result: Reply = await method(
                    request, timeout=deadline if deadline is not None else self.timeout
                )
            except grpc.aio.AioRpcError as exc:
                if attempt == 0 and _never_sent(exc):
                    # The runtime restarted: a channel in reconnect backoff fails at
                    # once, a new one connects now. Nothing was sent, so retrying is safe.
                    await self.aclose()
                    continue
                raise self.translate(exc, name) from exc
            return result
        raise AssertionError("unreachable")

    async def runtime(
        self, name: str, request: Message, reply: type[Reply], *, deadline: float | None = None
    ) -> Reply:
        """Call ``RuntimeService/<name>``.

        Raises:
            Unavailable: the runtime cannot be reached or does not speak CRI v1.
            NotFound: the runtime does not know the object named.
            RuntimeFailure: the runtime refused or failed the call.

        """
        return await self._call(_RUNTIME, name, request, reply, deadline)

    async def image(
        self, name: str, request: Message, reply: type[Reply], *, deadline: float | None = None
    ) -> Reply:
        """Call ``ImageService/<name>``; raises as :meth:`runtime`."""
        return await self._call(_IMAGE, name, request, reply, deadline)

    def translate(self, exc: grpc.aio.AioRpcError, call: str) -> ShoalError:
        """Return the Shoal error for a failed call."""
        code, details = exc.code(), exc.details() or ""
        where = {"endpoint": self.endpoint, "call": call}
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(
                f"cannot reach the CRI runtime at {self.endpoint}: {details}; {_FIX}", **where
            )
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return Unavailable(
                f"the runtime at {self.endpoint} does not implement CRI v1 {call} ({details}): "
                "use containerd 1.6 or later with its CRI plugin enabled",
                **where,
            )
        if "not initialized yet" in details:  # containerd's CRI plugin is still starting
            return Unavailable(
                f"the CRI runtime at {self.endpoint} is starting ({details}): try again shortly",
                **where,
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(f"{call}: {details}", **where)
        return RuntimeFailure(f"CRI {call} failed ({code.name}): {details}", **where)

    async def aclose(self) -> None:
        """Close the channel (a later call opens a new one)."""
        channel, self._channel = self._channel, None
        self._methods.clear()
        if channel is not None:
            await channel.close()


async def check_cri(client: CriClient) -> pb.VersionResponse:
    """Return the runtime's version once it is known to answer CRI v1.

    Raises:
        Unavailable: the endpoint cannot be reached, or does not speak CRI v1
            (the message names the endpoint, the error and the fix).

    """
    try:
        version = await client.runtime(
            "Version", pb.VersionRequest(version="v1"), pb.VersionResponse, deadline=10
        )
    except Unavailable:
        raise
    except ShoalError as exc:
        raise Unavailable(
            f"the runtime at {client.endpoint} did not answer CRI v1 Version: {exc}; {_FIX}",
            endpoint=client.endpoint,
        ) from exc
    if version.runtime_api_version != "v1":
        raise Unavailable(
            f"the runtime at {client.endpoint} ({version.runtime_name} "
            f"{version.runtime_version}) speaks CRI {version.runtime_api_version!r}, not v1: "
            "upgrade it (containerd 1.6 or later)",
            endpoint=client.endpoint,
        )
    return version
