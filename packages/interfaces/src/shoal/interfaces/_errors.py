"""The error tree shared by every Shoal package and front door.

Every error carries a stable ``code``, a human ``message`` that says what was
wrong and what to do, and structured ``details``; REST, MCP and the CLI render
the same failure their own way from those three fields::

    ShoalError
    ├── InvalidInput            400  a request or document is malformed
    │   ├── InvalidSpec         400  a workload document fails validation
    │   ├── InvalidTransition   400  an instance state change the ontology forbids
    │   └── RequestTooLarge     413  a request body over the limit
    ├── NotFound                404  no such workload, instance, node or key
    ├── Conflict                409  the object changed or already exists
    │   └── RevisionConflict    409  compare-and-swap lost: re-read and retry
    ├── Compacted               410  a watch asked for history that was compacted
    ├── Unauthenticated         401  missing, unknown, bad, stale or replayed signature
    ├── Forbidden               403  the caller's role does not allow the action
    ├── Unavailable             503  a dependency (store, runtime, leader) is not reachable
    ├── RuntimeFailure          500  the container runtime failed an operation
    │   └── ImageError          500  an image could not be found, pulled or unpacked
    └── InternalError           500  a bug: reported, never swallowed

Free of pydantic (the wire form, :class:`~shoal.interfaces.ErrorBody`, lives
in its own module), so a program can catch these errors without building any
model: the `shoal` command's ``--help`` among them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._errorbody import ErrorBody

__all__ = [
    "NOT_SERVED",
    "Compacted",
    "Conflict",
    "Forbidden",
    "ImageError",
    "InternalError",
    "InvalidInput",
    "InvalidSpec",
    "InvalidTransition",
    "NotFound",
    "RequestTooLarge",
    "RevisionConflict",
    "RuntimeFailure",
    "ShoalError",
    "Unauthenticated",
    "Unavailable",
    "error_from_body",
]


NOT_SERVED = "not_served"
"""The ``reason`` detail of an :class:`Unavailable` from a node that does not serve the
call (gRPC UNIMPLEMENTED): an older Shoal, or a service its role or runtime does not run."""


class ShoalError(Exception):
    """Root of every error Shoal raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_body(self) -> ErrorBody:
        """Return the wire form of this error."""
        from ._errorbody import ErrorBody  # pydantic: only when an error goes on the wire

        return ErrorBody(code=self.code, message=self.message, details=self.details)

    def __str__(self) -> str:
        return self.message


class InvalidInput(ShoalError):
    """A request or document is malformed; the message names the field and the fix."""

    code = "invalid_input"
    http_status = 400


class InvalidSpec(InvalidInput):
    """A workload document failed validation; nothing of the request was applied."""

    code = "invalid_spec"


class InvalidTransition(InvalidInput):
    """A state change that the ontology's transition table does not allow."""

    code = "invalid_transition"


class RequestTooLarge(InvalidInput):
    """A request body is larger than the server accepts."""

    code = "request_too_large"
    http_status = 413


class NotFound(ShoalError):
    """The named object does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(ShoalError):
    """The object already exists or changed concurrently."""

    code = "conflict"
    http_status = 409


class RevisionConflict(Conflict):
    """A compare-and-swap failed: the key's revision was not the expected one."""

    code = "revision_conflict"


class Compacted(ShoalError):
    """A watch asked for revisions the store no longer keeps."""

    code = "compacted"
    http_status = 410


class Unauthenticated(ShoalError):
    """The request's signature is missing or not acceptable (``details['reason']`` says why)."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(ShoalError):
    """The caller is known, but its role does not allow this action."""

    code = "forbidden"
    http_status = 403


class Unavailable(ShoalError):
    """A dependency is unreachable; retrying later may succeed."""

    code = "unavailable"
    http_status = 503


class RuntimeFailure(ShoalError):
    """The container runtime failed an operation."""

    code = "runtime_failure"
    http_status = 500


class ImageError(RuntimeFailure):
    """An image could not be found, pulled, verified or unpacked."""

    code = "image_error"


class InternalError(ShoalError):
    """An unexpected failure inside Shoal (a bug)."""

    code = "internal_error"
    http_status = 500


def _all_subclasses(cls: type[ShoalError]) -> list[type[ShoalError]]:
    found: list[type[ShoalError]] = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


def error_from_body(body: ErrorBody) -> ShoalError:
    """Rebuild the most specific :class:`ShoalError` for a wire error body."""
    # Parents come before children, so a subclass that keeps its parent's code
    # (a private refinement in some package) never shadows the public class.
    by_code: dict[str, type[ShoalError]] = {}
    for candidate in _all_subclasses(ShoalError):
        by_code.setdefault(candidate.code, candidate)
    cls = by_code.get(body.code, ShoalError)
    return cls(body.message, **body.details)
