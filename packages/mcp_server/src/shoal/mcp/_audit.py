"""The gate every tool call passes: caller, role check, audit event, error translation.

A tool body runs inside ``async with gate.call(ctx, Role.OPERATOR, target) as
call:`` and talks to ``call.service`` only. The gate

1. finds the caller (:mod:`shoal.mcp._caller`) and refuses a role below the
   tool's, before anything else happens;
2. hands the body the service bound to that caller;
3. records one ``McpToolCall`` event per call about the caller's key (object
   kind ``Key``, so ``list_events(kind="Key", name=KEY-ID)`` is one caller's
   trail, and the events of workloads and instances stay about them), with
   the object the tool touched, the tool's arguments as sent (secrets
   redacted), the outcome (ok, error or refused) and how a destructive change
   was confirmed;
4. records the call as a span ``tools/call <tool>`` — a child of the trace an
   admin caller names in ``params._meta.traceparent``, else of the request
   it came in — and gives its trace id to the tool's result;
5. turns a :class:`ShoalError` into a tool error whose text starts with the
   error code and says what to change, so the agent can correct the call.

Every tools/call is also counted in the node's metrics by tool and outcome
(``shoal_mcp_tool_calls_total``) and timed (``shoal_mcp_tool_call_duration_seconds``);
a tool name the server does not know is counted as ``unknown``.

Auditing happens after the call, so the event says how it ended. Calls that
never reach a tool body — arguments that fail the input schema, an unknown
tool — are audited by :meth:`Gate.middleware`, which also drops pydantic's
documentation links from argument errors. A call that cannot be audited (a
viewer key reading over REST may not write events) still returns its result;
changes are recorded by the service layer itself anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shoal.interfaces import (
    MCP_TRACEPARENT_META,
    NO_METRICS,
    TRACEPARENT_HEADER,
    Catalogue,
    EventType,
    InvalidSpec,
    Metrics,
    NotFound,
    ObjectRef,
    Role,
    Service,
    ShoalError,
    load_yaml_documents,
)

from ._caller import Caller, ServiceFactory, caller_from_request, caller_of
from ._hints import as_tool_calls
from ._redact import REDACTED, is_secret_name, json_secret_values, redact_json, scrub
from ._seal import PlanSeal

__all__ = ["AUDIT_KIND", "AUDIT_REASON", "CLUSTER", "Call", "Gate", "Refused", "render_error"]

log = logging.getLogger("shoal.mcp")
TRACER = trace.get_tracer("shoal.mcp")
_PROPAGATOR = TraceContextTextMapPropagator()

AUDIT_REASON = "McpToolCall"
"""The reason of the event recorded for every tool call."""
CLUSTER = ObjectRef(kind="Cluster", name="cluster")
"""The target of calls that are about no one object."""
AUDIT_KIND = "Key"
"""Audit events are about the caller's key: ObjectRef(kind="Key", name=KEY-ID)."""
_MAX_ARGUMENTS = 2000

_LIST_HINTS = {
    "workload": "call list_workloads to see which exist",
    "instance": "call list_instances to see which exist",
    "configmap": "call list_config_maps to see which exist",
    "secret": "call list_secrets to see which exist",
}


@dataclass
class _Reached:
    """Set by the gate when a tools/call reached a tool body (which audits it)."""

    reached: bool = False
    outcome: str = "ok"
    """How the tool body ended: ok, error or refused (for the metrics)."""


_REACHED: ContextVar[_Reached | None] = ContextVar("shoal_mcp_reached", default=None)
_DOCS_LINK = "For further information visit https://errors.pydantic.dev"


class Refused(ToolError):
    """The gate refused a call on policy: a role too low, or a destructive change unconfirmed."""


@dataclass
class Call:
    """One tool call in progress."""

    caller: Caller
    """Who is calling."""
    service: Service
    """The service, acting as the caller."""
    notes: dict[str, str] = field(default_factory=dict)
    """Extra facts for the audit event (e.g. how a change was confirmed)."""
    trace_id: str | None = None
    """The trace this call is recorded in (None without tracing)."""


def _arguments_text(arguments: Mapping[str, Any]) -> str:
    clean = dict(redact_json(dict(arguments)))
    manifest = clean.get("manifest")
    if isinstance(manifest, str):  # YAML text: redact its parsed documents instead
        try:  # as strictly as the tool reads it: aliases must not expand here either
            clean["manifest"] = redact_json(load_yaml_documents(manifest, "manifest"))
        except InvalidSpec:
            clean["manifest"] = f"{REDACTED} (unreadable YAML, {len(manifest)} characters)"
    text = json.dumps(clean, sort_keys=True, default=str)
    return text if len(text) <= _MAX_ARGUMENTS else text[: _MAX_ARGUMENTS - 3] + "..."


def render_error(exc: ShoalError, namespace: str | None = None) -> str:
    """Return the tool-error text for ``exc``: its code, its message and a hint.

    ``namespace`` is that of the object the call was about (None: none, or unknown).
    """
    message = as_tool_calls(exc.message, namespace)
    text = f"{exc.code}: {message}"
    if isinstance(exc, NotFound) and message == exc.message:  # else it names its tool already
        kind = str(exc.details.get("kind", ""))
        hint = _LIST_HINTS.get(
            kind, "call list_nodes to see which exist" if "node" in exc.details else ""
        )
        if hint:
            text += f" ({hint})"
    return text


class Gate:
    """Runs tool calls for one MCP server.

    Args:
        services: Returns the service acting as a caller.
        default_caller: The caller when the transport carries no token (stdio, in-process).
        metrics: Where tool calls are counted and timed.
        seal: Seals plan ids (a fresh key unless given).
    """

    def __init__(
        self,
        services: ServiceFactory,
        default_caller: Caller,
        metrics: Metrics = NO_METRICS,
        seal: PlanSeal | None = None,
    ) -> None:
        self.services = services
        self.default_caller = default_caller
        self.metrics = metrics
        self.seal = PlanSeal() if seal is None else seal
        """Seals the ids of the plans this server makes (see :mod:`._seal`)."""
        self.tools: frozenset[str] = frozenset()
        """The registered tools' names (set once the server has them): others are ``unknown``."""

    def caller(self, ctx: Context[Any, Any]) -> Caller:
        """Return who is calling in ``ctx``."""
        return caller_of(ctx, self.default_caller)

    @asynccontextmanager
    async def call(
        self, ctx: Context[Any, Any], required: Role, target: ObjectRef = CLUSTER
    ) -> AsyncIterator[Call]:
        """Run one tool call about ``target`` that needs ``required``; see the module docs.

        Raises:
            Refused: the caller's role is below ``required``.
            ToolError: the service raised a :class:`ShoalError` (rendered for the agent).
        """
        params = _request_params(ctx)
        tool = str(params.get("name", "tool"))
        arguments = params.get("arguments")
        caller = self.caller(ctx)
        # Started and made current by hand, not with start_as_current_span: its three
        # nested context managers (the proxy tracer's, the SDK's, use_span) would be paid
        # on every tool call for nothing.
        span = TRACER.start_span(
            f"tools/call {tool}",
            context=_parent(params, caller),
            kind=SpanKind.SERVER,
            attributes={
                "mcp.method.name": "tools/call",
                "gen_ai.tool.name": tool,
                "shoal.actor": caller.key_id,
            },
            record_exception=False,
            set_status_on_exception=False,  # an error's message may quote the arguments
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            context = span.get_span_context()
            call = Call(caller, self.services(caller))
            if context.is_valid:
                call.trace_id = format_trace_id(context.trace_id)
            async with self._gated(call, tool, arguments, required, target):
                yield call
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, ShoalError) else exc
            code = cause.code if isinstance(cause, ShoalError) else type(cause).__name__
            span.set_status(Status(StatusCode.ERROR, code))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    @asynccontextmanager
    async def _gated(
        self, call: Call, tool: str, arguments: Any, required: Role, target: ObjectRef
    ) -> AsyncIterator[None]:
        caller = call.caller
        marker = _REACHED.get()
        if marker is not None:
            marker.reached = True
        if not caller.allows(required):
            _ended("refused")
            await self._audit(call, tool, arguments, target, "refused", "forbidden")
            raise Refused(
                f"forbidden: {tool} changes the cluster and needs role {required.value}; key "
                f"{caller.key_id!r} is a {caller.role.value} here. Use the read tools, or ask "
                "an admin for a token with --role operator"
            )
        try:
            yield
        except ShoalError as exc:
            _ended("error")
            await self._audit(call, tool, arguments, target, "error", exc.code)
            raise ToolError(render_error(exc, target.namespace or None)) from exc
        except Refused as exc:
            _ended("refused")
            await self._audit(call, tool, arguments, target, "refused", str(exc)[:200])
            raise
        except ToolError as exc:
            await self._audit(call, tool, arguments, target, "error", str(exc)[:200])
            raise
        except Exception:  # a bug: the SDK reports a generic error and logs it
            await self._audit(call, tool, arguments, target, "error", "internal error")
            raise
        await self._audit(call, tool, arguments, target, "ok", "")

    def middleware(self) -> ServerMiddleware[Any]:
        """Return the server middleware that audits tools/call requests no tool body saw."""

        async def audit_unreached(
            ctx: ServerRequestContext[Any, Any], call_next: CallNext
        ) -> HandlerResult:
            if ctx.method != "tools/call":
                return await call_next(ctx)
            marker = _Reached()
            token = _REACHED.set(marker)
            began = time.perf_counter()
            try:
                result = await call_next(ctx)
            except BaseException:
                self._count(ctx, "error", began)
                raise
            finally:
                _REACHED.reset(token)
            failed = isinstance(result, dict) and bool(result.get("isError"))
            refused = failed and marker.outcome == "refused"
            self._count(ctx, "refused" if refused else "error" if failed else "ok", began)
            if marker.reached or not isinstance(result, dict) or not result.get("isError"):
                return result  # audited by the gate, or an input_required round
            params = ctx.params or {}
            # An argument error may quote the argument: a secret the agent sent must not
            # come back, nor stay in the audit trail.
            result = _argument_error(result, _argument_secrets(params.get("arguments")))
            caller = caller_from_request(ctx.request, self.default_caller)
            text = " ".join(
                str(block.get("text", ""))
                for block in result.get("content", [])
                if isinstance(block, dict)
            )
            await self._audit(
                Call(caller, self.services(caller)),
                str(params.get("name", "tool")),
                params.get("arguments"),
                CLUSTER,
                "error",
                text[:200],
            )
            return result

        return audit_unreached

    def _count(self, ctx: ServerRequestContext[Any, Any], outcome: str, began: float) -> None:
        """Count and time one tools/call by tool (``unknown`` if not registered) and outcome."""
        name = str((ctx.params or {}).get("name", ""))
        tool = name if name in self.tools else "unknown"
        self.metrics.inc(Catalogue.MCP_TOOL_CALLS, tool, outcome)
        self.metrics.observe(Catalogue.MCP_TOOL_DURATION, time.perf_counter() - began, tool)

    async def _audit(
        self,
        call: Call,
        tool: str,
        arguments: Any,
        target: ObjectRef,
        outcome: str,
        error: str,
    ) -> None:
        details = {
            "tool": tool,
            "target": str(target),
            "arguments": _arguments_text(arguments if isinstance(arguments, Mapping) else {}),
            "outcome": outcome,
            "role": call.caller.role.value,
            **call.notes,
        }
        if error:
            details["error"] = error
        about = "" if target == CLUSTER else f" on {target}"
        message = f"{tool}{about} by {call.caller.key_id} over MCP: {outcome}"
        kind = EventType.WARNING if outcome == "refused" else EventType.NORMAL
        key = ObjectRef(kind=AUDIT_KIND, name=call.caller.key_id)
        try:
            await call.service.record_event(
                key, AUDIT_REASON, message, event_type=kind, details=details
            )
        except ShoalError as exc:
            log.warning("could not record the audit event of %s: %s", tool, exc)


def _ended(outcome: str) -> None:
    """Note how the tool body of this tools/call ended, for the metrics."""
    marker = _REACHED.get()
    if marker is not None:
        marker.outcome = outcome


_VALIDATION = re.compile(
    r"^Error executing tool (?P<tool>\S+): \d+ validation errors? for \S+\n(?P<errors>.*)$",
    re.DOTALL,
)
"""The SDK's text for arguments its schema check refused (pydantic's, before any Shoal code)."""
_PROBLEM = re.compile(
    r"^(?P<field>\S[^\n]*)\n  (?P<message>[^\n]*?)"
    r"(?: \[type=[^,\]]+(?:, input_value=(?P<value>.*?), input_type=\w+)?\])?$",
    re.MULTILINE,
)
_MAX_QUOTED = 80
"""The most of a refused value an error quotes back."""


def _argument_error(result: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
    """Say what the schema check refused as Shoal's errors say things, without ``secrets``.

    ``invalid_input: TOOL: FIELD: what is wrong (got VALUE)``, one clause per
    field, rather than pydantic's report (its type codes and documentation
    links are noise in an agent's context). Only a short plain value is
    quoted back, never a structure (pydantic cuts a long one in its middle,
    which could leave part of a secret the scrub no longer recognises) nor
    the value of a field named like a secret; a secret the arguments held is
    scrubbed from the rest.
    """
    content = []
    for block in result.get("content", []):
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            text = "\n".join(ln for ln in block["text"].splitlines() if _DOCS_LINK not in ln)
            block = {**block, "text": scrub(_rephrased(text), secrets)}
        content.append(block)
    return {**result, "content": content}


def _rephrased(text: str) -> str:
    refused = _VALIDATION.match(text)
    if refused is None:
        return text
    clauses = []
    for problem in _PROBLEM.finditer(refused["errors"]):
        field, value = problem["field"], problem["value"]
        clause = f"{field}: {problem['message'].rstrip('.')}"
        if (
            value is not None
            and len(value) <= _MAX_QUOTED
            and not value.startswith(("{", "["))
            and "..." not in value
            and not is_secret_name(field.rsplit(".", 1)[-1])
        ):
            clause += f" (got {value})"
        clauses.append(clause)
    if not clauses:
        return text
    return (
        f"invalid_input: {refused['tool']}: {'; '.join(clauses)}: fix the argument "
        "(the tool's input schema says what it takes)"
    )


def _argument_secrets(arguments: Any) -> set[str]:
    """Return the secret values a tool call's arguments hold (a manifest's text parsed)."""
    if not isinstance(arguments, Mapping):
        return set()
    found = json_secret_values(dict(arguments))
    manifest = arguments.get("manifest")
    if isinstance(manifest, str):
        with contextlib.suppress(InvalidSpec):
            found |= json_secret_values(load_yaml_documents(manifest, "manifest"))
    return found


def _parent(params: Mapping[str, Any], caller: Caller) -> otel_context.Context | None:
    """Return the context a tool call's span starts in (None: the current one).

    An admin's trace when it sends one in ``params._meta`` (OpenTelemetry's
    MCP conventions); anyone else's is ignored.
    """
    meta = params.get("_meta")
    if not isinstance(meta, Mapping) or not caller.allows(Role.ADMIN):
        return None
    traceparent = meta.get(MCP_TRACEPARENT_META)
    if not isinstance(traceparent, str):
        return None
    return _PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent})


def _request_params(ctx: Context[Any, Any]) -> Mapping[str, Any]:
    try:
        params = ctx.request_context.params
    except ValueError:  # outside a request
        return {}
    return params if isinstance(params, Mapping) else {}
