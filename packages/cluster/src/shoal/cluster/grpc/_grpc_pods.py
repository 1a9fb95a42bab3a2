"""The Pods service: logs, exec, stats and usage history of a node's pods, for the other nodes.

``shoal logs`` / ``exec`` / ``top`` reach an instance through whichever
server got the request; when the instance runs elsewhere, that server calls
the node running it::

    server --RemotePods--> (gRPC shoal.cluster.v1.Pods) --PodGateway--> runtime

:class:`PodGateway` serves the node's runtime to authenticated callers that
``authorize`` admits (the composition root admits the servers of the
cluster). :class:`RemotePods` is the calling side and has the same ``logs``,
``exec`` and ``stats`` as the runtime (:class:`~shoal.interfaces.PodAccess`),
so the service layer uses a local runtime and a remote node alike; it also
reads the node's usage history (``query``, a :class:`~shoal.interfaces.UsageQuery`),
which the node keeps of the instances it runs. Errors of the remote runtime
arrive as the same :class:`~shoal.interfaces.ShoalError`.

Times travel as RFC 3339 strings (``datetime.isoformat``) and are parsed back.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import anyio
import grpc
import grpc.aio

from shoal.interfaces import (
    AsyncClosing,
    ContainerStats,
    ExecResult,
    InvalidInput,
    LogLine,
    PodAccess,
    ShoalError,
    Unavailable,
    UsageHistory,
    UsageKind,
    UsagePoint,
    UsageRange,
    check_usage_range,
)

from ._grpc_base import PACKAGE, AdmittingService, NodeChannel
from ._grpc_errors import abort_with
from ._nodeauth import Caller, CallVerifier
from ._pb import shoal_node_pb2 as pb

__all__ = ["EXEC_DEADLINE_MARGIN", "PodGateway", "RemotePods"]

_SERVICE = f"{PACKAGE}.Pods"
_LOGS = f"/{_SERVICE}/Logs"
_EXEC = f"/{_SERVICE}/Exec"
_STATS = f"/{_SERVICE}/Stats"
_USAGE = f"/{_SERVICE}/Usage"

EXEC_DEADLINE_MARGIN = 10.0
"""Seconds an exec call may take beyond its ``time_limit``: the call and the kill."""

_Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class PodGateway(AdmittingService):
    """Serves ``runtime``'s logs, exec and stats to the nodes ``authorize`` admits.

    Every call is authenticated by ``verifier`` (the node key and the join
    token), then ``authorize`` decides whether that node may look into this
    node's pods: it raises :class:`~shoal.interfaces.Forbidden` (or any
    ShoalError) to refuse. Errors travel to the caller as ShoalErrors.

    Args:
        runtime: The pods served; any ContainerRuntime will do.
        verifier: Checks the auth metadata of each call.
        authorize: Admits or refuses an authenticated caller.
        usage: The node's usage history (None: it keeps none, and Usage is Unavailable).
    """

    def __init__(
        self,
        runtime: PodAccess,
        verifier: CallVerifier,
        authorize: Callable[[Caller], Awaitable[None]],
        *,
        usage: UsageHistory | None = None,
    ) -> None:
        super().__init__(verifier, authorize)
        self._runtime = runtime
        self._usage = usage

    def handler(self) -> grpc.GenericRpcHandler:
        """Return the handler of ``shoal.cluster.v1.Pods``, for :func:`serve_grpc`."""
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Logs": grpc.unary_stream_rpc_method_handler(
                    self._logs,
                    request_deserializer=pb.LogsRequest.FromString,
                    response_serializer=pb.LogLine.SerializeToString,
                ),
                "Exec": grpc.unary_unary_rpc_method_handler(
                    self._exec,
                    request_deserializer=pb.ExecRequest.FromString,
                    response_serializer=pb.ExecReply.SerializeToString,
                ),
                "Stats": grpc.unary_unary_rpc_method_handler(
                    self._stats,
                    request_deserializer=pb.StatsRequest.FromString,
                    response_serializer=pb.StatsReply.SerializeToString,
                ),
                "Usage": grpc.unary_unary_rpc_method_handler(
                    self._usage_history,
                    request_deserializer=pb.UsageRequest.FromString,
                    response_serializer=pb.UsageReply.SerializeToString,
                ),
            },
        )

    async def _logs(self, request: pb.LogsRequest, context: _Context) -> None:
        # A coroutine writing to the context rather than an async generator:
        # when the client goes away, gRPC cancels this task wherever it waits,
        # and the finally below closes the runtime's reader right then.
        await self._admit(context, _LOGS, request)
        try:
            since = _parse_time(request.since, "since") if request.HasField("since") else None
        except ShoalError as exc:
            await abort_with(context, exc)
        lines = self._runtime.logs(
            request.uid,
            request.container,
            follow=request.follow,
            tail=request.tail if request.HasField("tail") else None,
            since=since,
            previous=request.previous,
        )
        try:
            async for line in lines:
                reply = pb.LogLine(time=line.time.isoformat(), stream=line.stream, line=line.line)
                await context.write(reply)
        except ShoalError as exc:
            await abort_with(context, exc)
        finally:
            await _aclose(lines)

    async def _exec(self, request: pb.ExecRequest, context: _Context) -> pb.ExecReply:
        await self._admit(context, _EXEC, request)
        try:
            if not (math.isfinite(request.time_limit) and request.time_limit > 0):
                raise InvalidInput(
                    f"time_limit must be a positive number of seconds, not {request.time_limit}",
                    field="time_limit",
                )
            result = await self._runtime.exec(
                request.uid, request.container, list(request.command), request.time_limit
            )
        except ShoalError as exc:
            await abort_with(context, exc)
        return pb.ExecReply(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)

    async def _stats(self, request: pb.StatsRequest, context: _Context) -> pb.StatsReply:
        await self._admit(context, _STATS, request)
        try:
            stats = await self._runtime.stats(request.uid)
        except ShoalError as exc:
            await abort_with(context, exc)
        return pb.StatsReply(
            containers=[
                pb.ContainerStats(
                    name=s.name,
                    cpu_millicores=s.cpu_millicores,
                    memory_bytes=s.memory_bytes,
                    pids=s.pids,
                )
                for s in stats
            ]
        )

    async def _usage_history(self, request: pb.UsageRequest, context: _Context) -> pb.UsageReply:
        await self._admit(context, _USAGE, request)
        try:
            if self._usage is None:
                raise Unavailable("this node keeps no usage history (it runs no instances)")
            kind: UsageKind = "node" if request.kind == "node" else "instance"
            step, points = await self._usage.query(
                kind,
                request.key,
                check_usage_range(request.range),
                _parse_time(request.now, "now"),
            )
        except ShoalError as exc:
            await abort_with(context, exc)
        return pb.UsageReply(
            step_seconds=step,
            points=[
                pb.UsagePoint(
                    at=int(p.at.timestamp()),
                    cpu_millicores=p.cpu_millicores,
                    memory_bytes=p.memory_bytes,
                    restarts=p.restarts,
                )
                for p in points
            ],
        )


class RemotePods(AsyncClosing):
    """The pods of another node, through its Pods service: a PodAccess over gRPC.

    Owns ``channel``: :meth:`aclose` (or leaving ``async with``) closes it.
    Besides the errors of the remote runtime, every method raises
    :class:`~shoal.interfaces.Unavailable` when the node cannot be reached,
    and Unauthenticated or Forbidden when it refuses this node.
    """

    def __init__(self, channel: NodeChannel) -> None:
        self._channel = channel

    @property
    def address(self) -> str:
        """The ``host:port`` of the node's gRPC service."""
        return self._channel.address

    async def logs(
        self,
        uid: str,
        container: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        previous: bool = False,
    ) -> AsyncGenerator[LogLine, None]:
        """Yield a container's log lines; with ``follow``, keep yielding new ones.

        With ``previous``, those of the pod's previous run.

        Closing the generator early cancels the call, which ends the reading
        on the remote node.

        Raises:
            NotFound: no such pod or container (on first iteration).
            Unavailable: the node cannot be reached, or the stream broke.
        """
        request = pb.LogsRequest(
            uid=uid,
            container=container,
            follow=follow,
            tail=tail,
            since=None if since is None else since.isoformat(),
            previous=previous,
        )
        replies = self._channel.stream(_LOGS, request, pb.LogLine)
        try:
            async for reply in replies:
                yield LogLine(
                    time=_parse_time(reply.time, "time"), stream=reply.stream, line=reply.line
                )
        finally:
            await _aclose(replies)

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        """Run ``command`` in a running container; kill it after ``time_limit`` seconds.

        The call's deadline is ``time_limit`` plus :data:`EXEC_DEADLINE_MARGIN`.

        Raises:
            NotFound: no such pod or container.
            Conflict: the container is not running.
            InvalidInput: ``time_limit`` is not a positive number of seconds.
            Unavailable: the node cannot be reached or did not answer in time.
        """
        request = pb.ExecRequest(
            uid=uid, container=container, command=list(command), time_limit=time_limit
        )
        reply = await self._channel.unary(
            _EXEC, request, pb.ExecReply, deadline=time_limit + EXEC_DEADLINE_MARGIN
        )
        return ExecResult(exit_code=reply.exit_code, stdout=reply.stdout, stderr=reply.stderr)

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        """Return resource use of the pod's containers.

        Raises:
            NotFound: no such pod.
            Unavailable: the node cannot be reached.
        """
        reply = await self._channel.unary(_STATS, pb.StatsRequest(uid=uid), pb.StatsReply)
        return [
            ContainerStats(
                name=s.name,
                cpu_millicores=s.cpu_millicores,
                memory_bytes=s.memory_bytes,
                pids=s.pids,
            )
            for s in reply.containers
        ]

    async def query(
        self, kind: UsageKind, key: str, span: UsageRange, now: datetime
    ) -> tuple[int, list[UsagePoint]]:
        """Return the step and the points of one series of the node's usage history.

        Raises:
            Unavailable: the node cannot be reached, or keeps no history.
        """
        request = pb.UsageRequest(kind=kind, key=key, range=span, now=now.isoformat())
        reply = await self._channel.unary(_USAGE, request, pb.UsageReply)
        return reply.step_seconds, [
            UsagePoint(
                at=datetime.fromtimestamp(p.at, UTC),
                cpu_millicores=p.cpu_millicores,
                memory_bytes=p.memory_bytes,
                restarts=p.restarts,
            )
            for p in reply.points
        ]

    async def aclose(self) -> None:
        """Close the channel to the node."""
        await self._channel.aclose()


def _parse_time(text: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{field} {text!r} is not an RFC 3339 time (e.g. 2026-01-01T12:00:00+00:00)",
            field=field,
        ) from None


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """Close ``iterator`` if it can be closed (async generators can), even when cancelled."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()
