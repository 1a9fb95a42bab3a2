"""ShoalClient: the Service protocol over signed HTTP, for the CLI and remote front doors.

Every request is signed with the caller's ed25519 key (:class:`SignedAuth`);
every error the server returns becomes the same :class:`ShoalError` subclass
the in-process service would have raised, so callers cannot tell the two
apart. A server that cannot be reached is :class:`Unavailable` with a hint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from shoal import interfaces
from shoal.interfaces import (
    APPLY_PATH,
    IF_MATCH_HEADER,
    TRACEPARENT_HEADER,
    TRACERESPONSE_HEADER,
    VIA_HEADER,
    AsyncClosing,
    InternalError,
    Unavailable,
    Via,
    error_from_body,
)

from ._config import ConfigCalls
from ._defaults import DEFAULT_SERVER
from ._keys import KeyPair
from ._signer import SignedAuth

if TYPE_CHECKING:
    from pydantic import TypeAdapter

    from shoal.interfaces import (
        ApplyResult,
        ContainerStats,
        Event,
        EventType,
        ExecResult,
        Expected,
        Explanation,
        ImageInfo,
        ImageProgress,
        Instance,
        LogLine,
        ManifestSource,
        Member,
        Node,
        ObjectRef,
        ObjectSpec,
        TraceView,
        UsageKind,
        UsageSeries,
        Workload,
    )

__all__ = ["DEFAULT_SERVER", "ShoalClient"]

USER_AGENT = "shoal-cli/0.1"

T = TypeVar("T")


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    # A ValidationError is a ValueError: no need to import pydantic for it here.
    try:
        body = interfaces.ErrorBody.model_validate(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        raise InternalError(
            f"server answered {response.status_code} without a Shoal error body: "
            f"{response.text[:200]!r}",
            status=response.status_code,
        ) from None
    raise error_from_body(body)


class ShoalClient(ConfigCalls, AsyncClosing):
    """A remote :class:`~shoal.interfaces.Service` reached over the signed REST API."""

    def __init__(
        self,
        server: str,
        keypair: KeyPair,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = USER_AGENT,
        via: Via = Via.CLI,
        traceparent: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"user-agent": user_agent, VIA_HEADER: via.value}
        if traceparent:  # signed too: an admin's calls then join the caller's trace
            headers[TRACEPARENT_HEADER] = traceparent
        self.last_trace_id: str | None = None
        """The trace the server recorded the last call in (its ``traceresponse``)."""
        self._http = httpx.AsyncClient(
            base_url=self.server,
            auth=SignedAuth(keypair),
            timeout=timeout,
            transport=transport,
            # Signed with the request: the API records the change as made via it.
            headers=headers,
            # Plain http needs no TLS: skip loading the CA bundle (a tenth of a
            # second of every `shoal` command); https verifies as usual.
            verify=not self.server.startswith("http://"),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        expected: Expected | None = None,
    ) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        headers = None if expected is None else {IF_MATCH_HEADER: expected.etag()}
        try:
            response = await self._http.request(
                method, path, json=json_body, params=clean, headers=headers
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        traced = response.headers.get(TRACERESPONSE_HEADER, "").split("-")
        self.last_trace_id = traced[1] if len(traced) == 4 else None
        _raise_for(response)
        return response

    async def _call(
        self,
        method: str,
        path: str,
        model: type[T],
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        expected: Expected | None = None,
    ) -> T:
        response = await self._send(
            method, path, json_body=json_body, params=params, expected=expected
        )
        adapter: TypeAdapter[T] = _adapter(model)
        return adapter.validate_json(response.content)

    async def _json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` and return its JSON as sent: no model is imported or built."""
        return json.loads((await self._send("GET", path, params=params)).content)

    def _unreachable(self, exc: Exception) -> Unavailable:
        return Unavailable(
            f"cannot reach the shoal server at {self.server} ({type(exc).__name__}): is "
            "`shoal agent` running there? Point at another with --server or SHOAL_SERVER",
            server=self.server,
        )

    async def apply_documents(
        self,
        documents: Sequence[Any],
        *,
        dry_run: bool = False,
        source: str = "request",
        strict: bool = False,
    ) -> ApplyResult:
        """Apply raw documents of either dialect; the server translates and validates them.

        All or nothing; with ``strict`` what Shoal would ignore is refused, not a warning.
        """
        body = {"documents": list(documents), "dry_run": dry_run, "source": source}
        if strict:
            body["strict"] = True
        return await self._call("POST", APPLY_PATH, interfaces.ApplyResult, json_body=body)

    async def apply(self, specs: Sequence[ObjectSpec], *, dry_run: bool = False) -> ApplyResult:
        """Create or update workloads, ConfigMaps, Secrets and Namespaces, all or nothing.

        With ``dry_run`` only plan. The specs travel in Shoal's dialect (a
        translated Kubernetes document keeps its manifest in ``origin``). No specs
        (a manifest of kinds Shoal ignores only) change nothing, as in process.
        """
        if not specs:
            empty = interfaces.Plan(id="", changes=[])
            return interfaces.ApplyResult(plan=empty, applied=not dry_run)
        # Only what was set (and the kind, which tells the documents apart): the server
        # tells a field not said from one set to its default (``paused``).
        documents = [
            {"kind": spec.kind, **spec.model_dump(mode="json", exclude_unset=True)}
            for spec in specs
        ]
        return await self.apply_documents(documents, dry_run=dry_run)

    async def list_workloads(self, namespace: str | None = None) -> list[Workload]:
        """Return workloads, of one namespace or all."""
        workloads = await self.list_workloads_json(namespace)
        return _adapter(list[interfaces.Workload]).validate_python(workloads)

    async def list_workloads_json(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Return workloads as the server sent them (JSON objects), for a caller that prints them.

        It builds no model: `shoal get workloads` imports no pydantic.
        """
        data: list[dict[str, Any]] = await self._json("/v1/workloads", {"namespace": namespace})
        return data

    async def get_workload(self, name: str, namespace: str = "default") -> Workload:
        """Return one workload."""
        return await self._call("GET", f"/v1/workloads/{namespace}/{name}", interfaces.Workload)

    async def scale(
        self,
        name: str,
        replicas: int,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Set a workload's replica count (if it is ``expected``, when given)."""
        path = f"/v1/workloads/{namespace}/{name}/scale"
        body = {"replicas": replicas}
        return await self._call(
            "POST", path, interfaces.Workload, json_body=body, expected=expected
        )

    async def rollout_undo(
        self,
        name: str,
        revision: int | None = None,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Roll back to a kept revision (the one before the current by default)."""
        path = f"/v1/workloads/{namespace}/{name}/rollout/undo"
        body = {"revision": revision}
        return await self._call(
            "POST", path, interfaces.Workload, json_body=body, expected=expected
        )

    async def promote_rollout(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        """Promote the current revision's canaries: the rollout replaces the rest."""
        path = f"/v1/workloads/{namespace}/{name}/rollout/promote"
        return await self._call("POST", path, interfaces.Workload, expected=expected)

    async def pause_rollout(
        self,
        name: str,
        paused: bool = True,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> Workload:
        """Pause a workload's rollouts, or resume them with ``paused=False``."""
        verb = "pause" if paused else "resume"
        path = f"/v1/workloads/{namespace}/{name}/rollout/{verb}"
        return await self._call("POST", path, interfaces.Workload, expected=expected)

    async def delete_workload(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        """Mark a workload for deletion (if it is ``expected``, when given)."""
        path = f"/v1/workloads/{namespace}/{name}"
        return await self._call("DELETE", path, interfaces.Workload, expected=expected)

    async def list_instances(
        self, namespace: str | None = None, workload: str | None = None, node: str | None = None
    ) -> list[Instance]:
        """Return instances, filtered by namespace, workload and node."""
        instances = await self.list_instances_json(namespace, workload, node)
        return _adapter(list[interfaces.Instance]).validate_python(instances)

    async def list_instances_json(
        self, namespace: str | None = None, workload: str | None = None, node: str | None = None
    ) -> list[dict[str, Any]]:
        """Return instances as the server sent them (JSON objects): no model is built."""
        params = {"namespace": namespace, "workload": workload, "node": node}
        data: list[dict[str, Any]] = await self._json("/v1/instances", params)
        return data

    async def get_instance(self, name: str, namespace: str = "default") -> Instance:
        """Return one instance."""
        return await self._call("GET", f"/v1/instances/{namespace}/{name}", interfaces.Instance)

    async def explain(self, name: str, namespace: str = "default") -> Explanation:
        """Say why an instance is where it is."""
        path = f"/v1/instances/{namespace}/{name}/explain"
        return await self._call("GET", path, interfaces.Explanation)

    async def get_trace(self, trace_id: str) -> TraceView:
        """Return the spans of one trace and of the traces linked to it, from every node."""
        return await self._call("GET", f"/v1/traces/{trace_id}", interfaces.TraceView)

    async def logs(
        self,
        name: str,
        namespace: str = "default",
        *,
        container: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        previous: bool = False,
    ) -> AsyncIterator[LogLine]:
        """Yield an instance's log lines; with ``follow``, until cancelled or the container ends."""
        params = {
            "container": container,
            "tail": tail,
            "since": None if since is None else since.isoformat(),
            "follow": follow or None,
            "previous": previous or None,
        }
        clean = {k: v for k, v in params.items() if v is not None}
        path = f"/v1/instances/{namespace}/{name}/logs"
        try:
            async with self._http.stream("GET", path, params=clean, timeout=None) as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    if line:
                        yield interfaces.LogLine.model_validate_json(line)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    async def exec(
        self,
        name: str,
        command: Sequence[str],
        namespace: str = "default",
        *,
        container: str | None = None,
        time_limit: float = 30,
    ) -> ExecResult:
        """Run a command in a running instance's container."""
        body = {"command": list(command), "container": container, "time_limit": time_limit}
        path = f"/v1/instances/{namespace}/{name}/exec"
        return await self._call("POST", path, interfaces.ExecResult, json_body=body)

    async def stats(self, name: str, namespace: str = "default") -> list[ContainerStats]:
        """Return the resource use of a running instance's containers."""
        return await self._call(
            "GET", f"/v1/instances/{namespace}/{name}/stats", list[interfaces.ContainerStats]
        )

    async def usage(
        self, kind: UsageKind, name: str, namespace: str = "default", *, range: str | None = None
    ) -> UsageSeries:
        """Return the usage history of an instance or a node over ``range`` (default: 1 h)."""
        if range is None:  # the name, not its value: importing it at start costs the usage models
            range = interfaces.USAGE_DEFAULT_RANGE
        path = (
            f"/v1/nodes/{name}/stats"
            if kind == "node"
            else f"/v1/instances/{namespace}/{name}/stats"
        )
        return await self._call("GET", path, interfaces.UsageSeries, params={"range": range})

    async def record_event(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        *,
        event_type: EventType | None = None,
        details: dict[str, str] | None = None,
    ) -> Event:
        """Record an event as the caller (a Normal one unless ``event_type`` says otherwise)."""
        body = {
            "object": obj.model_dump(mode="json"),
            "reason": reason,
            "message": message,
            "type": (event_type or interfaces.EventType.NORMAL).value,
            "details": details or {},
        }
        return await self._call("POST", "/v1/events", interfaces.Event, json_body=body)

    async def list_images(self, node: str | None = None) -> list[ImageInfo]:
        """Return the images on ``node`` (the server's own by default)."""
        return await self._call(
            "GET", "/v1/images", list[interfaces.ImageInfo], params={"node": node}
        )

    async def pull_image(
        self, reference: str, *, progress: Callable[[ImageProgress], object] | None = None
    ) -> ImageInfo:
        """Pull an image onto the server's node, reporting each step to ``progress``."""
        try:
            async with self._http.stream(
                "POST", "/v1/images/pull", json={"reference": reference}, timeout=None
            ) as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    item = json.loads(line)
                    if "progress" in item and progress is not None:
                        progress(interfaces.ImageProgress.model_validate(item["progress"]))
                    elif "image" in item:
                        return interfaces.ImageInfo.model_validate(item["image"])
                    elif "error" in item:
                        raise error_from_body(interfaces.ErrorBody.model_validate(item["error"]))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        raise InternalError(f"the server ended the pull of {reference} without a result")

    async def import_image(self, path: str, reference: str | None = None) -> list[ImageInfo]:
        """Import an image from a path on the server's node."""
        body = {"path": path, "reference": reference}
        return await self._call(
            "POST", "/v1/images/import", list[interfaces.ImageInfo], json_body=body
        )

    async def remove_image(self, reference: str) -> list[ImageInfo]:
        """Forget an image reference."""
        return await self._call(
            "DELETE", "/v1/images", list[interfaces.ImageInfo], params={"reference": reference}
        )

    async def gc_images(self) -> int:
        """Free the space no image needs; return the bytes freed."""
        result = await self._call("POST", "/v1/images/gc", dict[str, int])
        return result["freed_bytes"]

    async def list_nodes(self) -> list[Node]:
        """Return every node."""
        return await self._call("GET", "/v1/nodes", list[interfaces.Node])

    async def get_node(self, name: str) -> Node:
        """Return one node."""
        return await self._call("GET", f"/v1/nodes/{name}", interfaces.Node)

    async def audit_entries(self, limit: int = 100) -> list[interfaces.AuditEntry]:
        """Return the last ``limit`` entries of the audit trail, oldest first (admin)."""
        return await self._call(
            "GET", "/v1/audit", list[interfaces.AuditEntry], params={"limit": limit}
        )

    async def verify_audit(self) -> interfaces.AuditReport:
        """Check the audit trail's hash chain on the server (admin)."""
        return await self._call("GET", "/v1/audit/verify", interfaces.AuditReport)

    async def list_members(self) -> list[Member]:
        """Return the gossip members the server's node knows, sorted by name."""
        return await self._call("GET", "/v1/members", list[interfaces.Member])

    async def list_manifests(self) -> list[ManifestSource]:
        """Return the files of the server's node's watched manifests directories."""
        return await self._call("GET", "/v1/manifests", list[interfaces.ManifestSource])

    async def cordon(self, name: str) -> Node:
        """Stop placing new instances on a node."""
        return await self._call("POST", f"/v1/nodes/{name}/cordon", interfaces.Node)

    async def uncordon(self, name: str) -> Node:
        """Allow placements on a node again."""
        return await self._call("POST", f"/v1/nodes/{name}/uncordon", interfaces.Node)

    async def drain(self, name: str) -> Node:
        """Cordon a node and move its instances elsewhere."""
        return await self._call("POST", f"/v1/nodes/{name}/drain", interfaces.Node)

    async def delete_node(self, name: str) -> Node:
        """Forget a node that failed or left: its record, and the instances lost with it."""
        return await self._call("DELETE", f"/v1/nodes/{name}", interfaces.Node)

    async def list_events(
        self,
        *,
        limit: int = 100,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        actor: str | None = None,
        via: Via | None = None,
        trace_id: str | None = None,
    ) -> list[Event]:
        """Return the latest events, oldest first (filtered as :class:`Service` says)."""
        params = {
            "limit": limit,
            "kind": kind,
            "name": name,
            "namespace": namespace,
            "actor": actor,
            "via": None if via is None else via.value,
            "trace_id": trace_id,
        }
        return await self._call("GET", "/v1/events", list[interfaces.Event], params=params)

    async def watch_events(
        self, *, opened: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[Event]:
        """Yield events from the server-sent event stream until cancelled.

        ``opened`` is awaited once the server has answered, before the first
        event: what happened before then, a listing shows (a follower catches up).
        """
        try:
            async with self._http.stream("GET", "/v1/events/stream", timeout=None) as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for(response)
                if opened is not None:
                    await opened()
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield interfaces.Event.model_validate(json.loads("\n".join(data)))
                        data = []
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: type[T]) -> TypeAdapter[T]:
    """Return the validator of ``model``, built on first use: one command needs one."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        from pydantic import TypeAdapter  # not at import: a raw read needs no pydantic

        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter
