"""ShoalErrors across gRPC: a status code for gRPC, the exact error for Shoal.

The server aborts a call with the status code that matches the error's class
and the error's wire form (:class:`~shoal.interfaces.ErrorBody`, JSON) in the
``shoal-error-bin`` trailer; the client rebuilds the same class, so a
``RevisionConflict`` on a server is a ``RevisionConflict`` on the worker.
Transport failures (server gone, deadline) become ``Unavailable``.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
import grpc.aio

from shoal.interfaces import (
    NOT_SERVED,
    Compacted,
    Conflict,
    ErrorBody,
    Forbidden,
    InvalidInput,
    NotFound,
    ShoalError,
    Unauthenticated,
    Unavailable,
    error_from_body,
)

__all__ = ["ERROR_TRAILER", "abort_with", "error_from_rpc", "status_of"]

ERROR_TRAILER = "shoal-error-bin"

_STATUS: list[tuple[type[ShoalError], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ABORTED),
    (Compacted, grpc.StatusCode.OUT_OF_RANGE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def status_of(error: ShoalError) -> grpc.StatusCode:
    """Return the gRPC status code for ``error``'s class."""
    for cls, code in _STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


async def abort_with(
    context: grpc.aio.ServicerContext[object, object], error: ShoalError
) -> NoReturn:
    """End the call with ``error``: its status code, message and wire form."""
    body = error.to_body().model_dump_json().encode()
    context.set_trailing_metadata(((ERROR_TRAILER, body),))
    await context.abort(status_of(error), error.message)


def error_from_rpc(exc: grpc.aio.AioRpcError, target: str) -> ShoalError:
    """Return the ShoalError a failed call stands for; ``target`` names the peer."""
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_TRAILER and isinstance(value, bytes):
            try:
                return error_from_body(ErrorBody.model_validate_json(value))
            except ValueError:
                break
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            f"node {target} is not reachable over gRPC ({exc.details() or code.name})",
            target=target,
        )
    if code == grpc.StatusCode.CANCELLED:
        return Unavailable(f"the call to {target} was cancelled", target=target)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unavailable(
            f"node {target} does not serve this call ({exc.details() or code.name}): it runs "
            "an older Shoal (upgrade it), or has nothing of the kind (a service its role or "
            "runtime does not run)",
            target=target,
            reason=NOT_SERVED,
        )
    return ShoalError(f"gRPC call to {target} failed: {code.name}: {exc.details()}", target=target)
