"""Measured stand-ins for a store and a container runtime: same calls, timed.

:class:`MeteredStore` and :class:`MeteredRuntime` wrap an implementation and
pass every call through, recording its duration by operation (and each
failure) in :class:`~shoal.interfaces.Metrics`. They change nothing else:
the errors, the results and the attributes of the wrapped part are its own
(an attribute the protocol does not name is looked up on the wrapped part).
A lost compare-and-swap (:class:`~shoal.interfaces.RevisionConflict`) and a
missing pod or key (:class:`~shoal.interfaces.NotFound`) are answers, not
failures.

Inside a recorded span (a request, a node's start of an instance) a runtime
call is also a child span, ``runtime.<operation>``; a failure marks it
failed, an answer (a missing pod) does not. A store call is an *event* of
that span, ``store.<operation>``, with its duration
(:data:`~shoal.interfaces.EVENT_DURATION`) and, unless it did as asked, its
outcome (:data:`~shoal.interfaces.EVENT_OUTCOME`). A request makes a
handful of store calls, most shorter than a span costs to record; an event
costs a fraction of a span (as spans, the store calls were two thirds of
what telemetry added to an instance's start).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry.trace import Status, StatusCode, get_current_span

from shoal.interfaces import (
    EVENT_DURATION,
    EVENT_OUTCOME,
    Catalogue,
    Compare,
    ContainerRuntime,
    ContainerStats,
    DeleteOp,
    ExecResult,
    ImageInfo,
    KeyValue,
    Leadership,
    ListResult,
    LogLine,
    Metrics,
    NotFound,
    PodSpec,
    PodStatus,
    ProjectedFile,
    PutOp,
    RevisionConflict,
    StateStore,
    TxnResult,
    WatchEvent,
)

from ._tracing import SpanAttributes, error_status, traced

__all__ = ["MeteredRuntime", "MeteredStore"]

T = TypeVar("T")


async def _timed_span(metrics: Metrics, operation: str, call: Awaitable[T]) -> T:
    """Time a runtime call (a child span inside a recorded one); a missing pod is an answer."""
    began = time.perf_counter()
    with traced(f"runtime.{operation}") as recording:
        try:
            return await call
        except NotFound:
            raise
        except Exception as exc:
            metrics.inc(Catalogue.RUNTIME_FAILURES, operation)
            if recording is not None:
                recording.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            took = time.perf_counter() - began
            metrics.observe(Catalogue.RUNTIME_OPERATION_DURATION, took, operation)


async def _timed_event(metrics: Metrics, operation: str, call: Awaitable[T]) -> T:
    """Time a store call (an event of the current span, if it is recorded)."""
    began = time.perf_counter()
    outcome = ""
    try:
        result = await call
    except RevisionConflict:
        outcome = "conflict"
        raise
    except NotFound:
        outcome = "not_found"
        raise
    except Exception as exc:
        outcome = error_status(exc).description or type(exc).__name__
        metrics.inc(Catalogue.STORE_FAILURES, operation)
        raise
    except BaseException:
        outcome = "cancelled"
        raise
    else:
        if isinstance(result, TxnResult) and not result.succeeded:
            outcome = "conflict"  # a compare did not hold: a lost compare-and-swap too
        return result
    finally:
        took = time.perf_counter() - began
        metrics.observe(Catalogue.STORE_OPERATION_DURATION, took, operation)
        current = get_current_span()
        if current.is_recording():
            attributes: SpanAttributes = {EVENT_DURATION: round(took * 1000, 3)}
            if outcome:
                attributes[EVENT_OUTCOME] = outcome
            at = time.time_ns() - int(took * 1e9)
            current.add_event(_store_event(operation), attributes, timestamp=at)


@functools.cache
def _store_event(operation: str) -> str:
    """The event name of a store operation, made once (the span buffer keeps it)."""
    return f"store.{operation}"


class _Wrapper:
    """Opens and closes the wrapped part as it would be opened and closed itself."""

    inner: Any

    async def __aenter__(self) -> _Wrapper:
        if isinstance(self.inner, AbstractAsyncContextManager):
            await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(self.inner, AbstractAsyncContextManager):
            await self.inner.__aexit__(exc_type, exc, tb)
        else:
            await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the class does not define: the wrapped part's extras.
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class MeteredStore(_Wrapper):
    """A :class:`~shoal.interfaces.StateStore` whose calls are timed by operation."""

    inner: StateStore

    def __init__(self, inner: StateStore, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def __repr__(self) -> str:
        return f"MeteredStore({self.inner!r})"

    def _timed(self, operation: str, call: Awaitable[T]) -> Awaitable[T]:
        return _timed_event(self.metrics, operation, call)

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""
        return await self._timed("get", self.inner.get(key))

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key``; see :meth:`StateStore.put`."""
        call = self.inner.put(key, value, expected_revision=expected_revision, lease=lease)
        return await self._timed("put", call)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; see :meth:`StateStore.delete`."""
        return await self._timed(
            "delete", self.inner.delete(key, expected_revision=expected_revision)
        )

    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, and the store revision."""
        return await self._timed("list", self.inner.list(prefix))

    async def revision(self) -> int:
        """Return the current store revision."""
        return await self._timed("revision", self.inner.revision())

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` from ``start_revision`` on (not timed)."""
        return self.inner.watch(prefix, start_revision)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Run a transaction; see :meth:`StateStore.txn`."""
        return await self._timed("txn", self.inner.txn(compares, success, failure))

    async def grant_lease(self, ttl: float) -> int:
        """Create a lease; return its id."""
        return await self._timed("grant_lease", self.inner.grant_lease(ttl))

    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl."""
        await self._timed("keepalive", self.inner.keepalive(lease))

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys."""
        await self._timed("revoke", self.inner.revoke(lease))

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Block until ``candidate`` leads ``election`` (not timed: it waits on purpose)."""
        return await self.inner.campaign(election, candidate, lease)

    async def resign(self, leadership: Leadership) -> None:
        """Give up leadership."""
        await self._timed("resign", self.inner.resign(leadership))

    async def leader(self, election: str) -> str | None:
        """Return the current leader's candidate name, or None."""
        return await self._timed("leader", self.inner.leader(election))

    async def aclose(self) -> None:
        """Close the wrapped store."""
        await self.inner.aclose()


class MeteredRuntime(_Wrapper):
    """A :class:`~shoal.interfaces.ContainerRuntime` whose calls are timed by operation.

    ``ensure_image`` is the ``pull`` operation (a check when the image is
    there already); ``run`` creates and starts a pod in one call.
    """

    inner: ContainerRuntime

    def __init__(self, inner: ContainerRuntime, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = inner.name
        """The wrapped runtime's short name."""

    def __repr__(self) -> str:
        return f"MeteredRuntime({self.inner!r})"

    def _timed(self, operation: str, call: Awaitable[T]) -> Awaitable[T]:
        return _timed_span(self.metrics, operation, call)

    def logs(
        self,
        uid: str,
        container: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        previous: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Yield a container's log lines (not timed: a stream)."""
        return self.inner.logs(
            uid, container, follow=follow, tail=tail, since=since, previous=previous
        )

    async def exec(
        self, uid: str, container: str, command: Sequence[str], time_limit: float = 30
    ) -> ExecResult:
        """Run ``command`` in a running container."""
        return await self._timed(
            "exec", self.inner.exec(uid, container, command, time_limit=time_limit)
        )

    async def stats(self, uid: str) -> Sequence[ContainerStats]:
        """Return resource use of the pod's containers."""
        return await self._timed("stats", self.inner.stats(uid))

    async def ensure_image(
        self, image: str, credentials: Mapping[str, tuple[str, str]] | None = None
    ) -> ImageInfo:
        """Make ``image`` available locally (the ``pull`` operation)."""
        return await self._timed("pull", self.inner.ensure_image(image, credentials))

    async def create(self, pod: PodSpec) -> PodStatus:
        """Create a pod without starting it."""
        return await self._timed("create", self.inner.create(pod))

    async def start(self, uid: str) -> PodStatus:
        """Start a created pod."""
        return await self._timed("start", self.inner.start(uid))

    async def run(self, pod: PodSpec) -> PodStatus:
        """Create and start a pod in one call."""
        return await self._timed("run", self.inner.run(pod))

    async def update_files(self, uid: str, volume: str, files: Sequence[ProjectedFile]) -> None:
        """Replace the files of a pod's file volume."""
        await self._timed("update_files", self.inner.update_files(uid, volume, files))

    async def stop(self, uid: str, grace: float) -> PodStatus:
        """Stop a pod's containers, killing them after ``grace`` seconds."""
        return await self._timed("stop", self.inner.stop(uid, grace))

    async def remove(self, uid: str, *, keep_logs: bool = False) -> None:
        """Remove a pod and what it holds (but its logs, with ``keep_logs``)."""
        await self._timed("remove", self.inner.remove(uid, keep_logs=keep_logs))

    async def prune_logs(self, keep: Collection[str]) -> Sequence[str]:
        """Remove the logs kept of pods that are gone, but those of ``keep`` (not timed)."""
        return await self.inner.prune_logs(keep)

    async def inspect(self, uid: str) -> PodStatus:
        """Return a pod's status."""
        return await self._timed("inspect", self.inner.inspect(uid))

    async def list(self) -> Sequence[PodStatus]:
        """Return every pod this node owns."""
        return await self._timed("list", self.inner.list())

    async def aclose(self) -> None:
        """Close the wrapped runtime."""
        await self.inner.aclose()


def _conforms(store: MeteredStore, runtime: MeteredRuntime) -> tuple[StateStore, ContainerRuntime]:
    return store, runtime  # mypy checks that both satisfy their protocol
