"""The write side: signed actions under ``/ui/f/``, for operators only.

Changes that stop or replace instances (rollout undo, pause, resume and
promote, delete, drain, scaling to zero) take two steps, as MCP's tools do:
the first POST returns a plan with a ``plan_id`` derived from the object as
it is now; the confirming POST sends that id back, and is refused if the
object changed in between (checked again as the change is written, for a
workload). Scaling to more than zero and cordoning act at once. Applying
YAML shows the dry run's plan first and applies only when the confirming
request's plan id is the one a fresh dry run yields.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.routing import Route

from shoal.interfaces import (
    Conflict,
    Expected,
    InvalidInput,
    Node,
    Role,
    Service,
    ShoalError,
    Workload,
    load_yaml_documents,
)
from shoal.kube import parse_documents

from ._auth import ActsAs, Authenticate, Call, signed
from ._render import fragment
from ._yamllines import line_of

__all__ = ["WORKLOAD_ACTIONS", "action_routes", "plan_id"]

APPLY_SOURCE = "dashboard"
"""The source name apply errors mention (the CLI names the file)."""
_LINE = re.compile(r"\bline (\d+)\b")


def plan_id(*parts: object) -> str:
    """A short digest of what a plan was made for: it stops matching once any part changes."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:16]


WorkloadAction = Callable[[Service, Workload], Awaitable[object]]
"""An action on the workload as its confirmed plan saw it: made only if it is still that
version (:class:`~shoal.interfaces.Expected`), checked as the change is written."""

WORKLOAD_ACTIONS: dict[str, tuple[str, WorkloadAction]] = {
    "undo": (
        "roll back to the previous revision: its instances replace the current ones",
        lambda svc, w: svc.rollout_undo(w.name, None, w.namespace, expected=Expected.of(w)),
    ),
    "pause": (
        "pause rollouts: a template change waits until resumed",
        lambda svc, w: svc.pause_rollout(w.name, True, w.namespace, expected=Expected.of(w)),
    ),
    "resume": (
        "resume rollouts: a waiting template change starts replacing instances",
        lambda svc, w: svc.pause_rollout(w.name, False, w.namespace, expected=Expected.of(w)),
    ),
    "promote": (
        "promote the canaries: the rollout replaces the remaining instances",
        lambda svc, w: svc.promote_rollout(w.name, w.namespace, expected=Expected.of(w)),
    ),
    "delete": (
        "delete the workload: every instance stops and nothing replaces it",
        lambda svc, w: svc.delete_workload(w.name, w.namespace, expected=Expected.of(w)),
    ),
}


def _workload_plan(action: str, workload: Workload) -> str:
    return plan_id(
        action,
        workload.namespace,
        workload.name,
        workload.uid,
        workload.generation,
        workload.revision,
        workload.spec.paused,
    )


MAX_NAMED = 10
"""Instances a plan names; it counts the rest."""


async def _what_happens(service: Service, action: str, workload: Workload) -> str:
    """Say what ``action`` would do to ``workload``'s instances as they are now."""
    if action not in ("delete", "promote"):
        return ""
    instances = [
        i for i in await service.list_instances(workload.namespace, workload.name) if not i.deleting
    ]
    if action == "delete":
        names = sorted(i.name for i in instances)
        named = ", ".join(names[:MAX_NAMED]) + (
            f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
        )
        return f" ({len(names)} instance(s) stop{': ' + named if names else ''})"
    canaries = [i for i in instances if i.template == workload.spec.template]
    ready = sum(1 for i in canaries if i.ready)
    old = len(instances) - len(canaries)
    return (
        f" (revision {workload.revision}: {ready} of {len(canaries)} canaries ready, "
        f"{workload.spec.update.canary} wanted; {old} old instance(s) to replace)"
    )


def _drain_plan(node: Node, uids: list[str]) -> str:
    return plan_id("drain", node.name, node.node_id, node.cordoned, node.draining, *sorted(uids))


def _check_plan(given: str, current: str, what: str) -> None:
    if given != current:
        raise Conflict(
            f"{what} changed since plan {given} was made; review the new plan and confirm again",
            plan_id=current,
        )


def _error_line(text: str, error: ShoalError) -> int | None:
    match = _LINE.search(error.message)
    if match:
        return int(match.group(1))
    document, problems = error.details.get("document"), error.details.get("errors")
    if isinstance(document, int) and isinstance(problems, list) and problems:
        field = problems[0].get("field") if isinstance(problems[0], dict) else None
        if isinstance(field, str):
            return line_of(text, document, field)
    return None


def _yaml_error(call: Call, text: str, error: ShoalError) -> Response:
    line = _error_line(text, error)
    return fragment(
        call.request,
        "apply_error.html",
        422,
        error=error,
        line=line,
        lines=list(enumerate(text.splitlines(), start=1)),
    )


def action_routes(service: ActsAs, authenticate: Authenticate) -> list[Route]:
    """The actions, each answering signed POSTs of operators and up."""
    operator = signed(service, authenticate, Role.OPERATOR)

    @operator
    async def scale(call: Call) -> Response:
        namespace, name = call.request.path_params["namespace"], call.request.path_params["name"]
        text = call.form().get("replicas", "")
        try:
            replicas = int(text)
        except ValueError:
            raise InvalidInput(
                f"replicas must be a whole number, got {text!r}", field="replicas"
            ) from None
        expected = None
        if replicas == 0:  # every instance stops and nothing replaces it: a plan first
            current = await call.service.get_workload(name, namespace)
            if current.spec.replicas > 0:
                planned = _workload_plan("scale-to-zero", current)
                given = call.form().get("plan_id")
                if not given:
                    return fragment(
                        call.request,
                        "plan.html",
                        title=f"scale {current.key} to 0",
                        what="every instance stops and nothing replaces it",
                        plan_id=planned,
                        confirm=f"/ui/f/workloads/{namespace}/{name}/scale",
                        values={"replicas": "0"},
                    )
                _check_plan(given, planned, f"workload {current.key}")
                expected = Expected.of(current)  # as planned, when written too
        workload = await call.service.scale(name, replicas, namespace, expected=expected)
        return fragment(
            call.request, "notice.html", message=f"{workload.key} scaled to {replicas} replicas"
        )

    @operator
    async def workload_action(call: Call) -> Response:
        params = call.request.path_params
        namespace, name, action = params["namespace"], params["name"], params["action"]
        if action not in WORKLOAD_ACTIONS:
            raise InvalidInput(f"unknown action {action!r}: use {', '.join(WORKLOAD_ACTIONS)}")
        what, act = WORKLOAD_ACTIONS[action]
        workload = await call.service.get_workload(name, namespace)
        if action == "promote":  # no plan for what would be refused
            workload.check_promotable()
        current = _workload_plan(action, workload)
        given = call.form().get("plan_id")
        if not given:
            return fragment(
                call.request,
                "plan.html",
                title=f"{action} {workload.key}",
                what=what + await _what_happens(call.service, action, workload),
                plan_id=current,
                confirm=f"/ui/f/workloads/{namespace}/{name}/{action}",
            )
        _check_plan(given, current, f"workload {workload.key}")
        await act(call.service, workload)
        return fragment(call.request, "notice.html", message=f"{action}: done for {workload.key}")

    @operator
    async def node_action(call: Call) -> Response:
        name, action = call.request.path_params["name"], call.request.path_params["action"]
        svc = call.service
        if action == "cordon":
            await svc.cordon(name)
        elif action == "uncordon":
            await svc.uncordon(name)
        elif action == "drain":
            node = await svc.get_node(name)
            uids = [i.uid for i in await svc.list_instances(node=name)]
            current = _drain_plan(node, uids)
            given = call.form().get("plan_id")
            if not given:
                return fragment(
                    call.request,
                    "plan.html",
                    title=f"drain {name}",
                    what=f"cordon {name} and move its {len(uids)} instance(s) elsewhere, "
                    "replacement first",
                    plan_id=current,
                    confirm=f"/ui/f/nodes/{name}/drain",
                )
            _check_plan(given, current, f"node {name}")
            await svc.drain(name)
        else:
            raise InvalidInput(f"unknown action {action!r}: use cordon, uncordon or drain")
        return fragment(call.request, "notice.html", message=f"{action}: done for node {name}")

    @operator
    async def apply(call: Call) -> Response:
        form = call.form()
        text = form.get("yaml", "")
        try:
            documents = load_yaml_documents(text, APPLY_SOURCE)
            translation = parse_documents(
                documents, APPLY_SOURCE, strict=form.get("strict") == "on"
            )
            planned = await call.service.apply(translation.objects, dry_run=True)
        except InvalidInput as exc:
            return _yaml_error(call, text, exc)
        given = form.get("plan_id")
        if not given:
            warnings = list(dict.fromkeys([*translation.warnings, *planned.warnings]))
            return fragment(call.request, "apply_plan.html", plan=planned.plan, warnings=warnings)
        _check_plan(given, planned.plan.id, "what these documents would change")
        result = await call.service.apply(translation.objects)
        changed = ", ".join(
            f"{c.action.value} {c.kind} {c.namespace}/{c.name}" for c in result.plan.changes
        )
        return fragment(call.request, "notice.html", message=f"applied: {changed or 'no change'}")

    return [
        Route("/ui/f/workloads/{namespace}/{name}/scale", scale, methods=["POST"]),
        Route("/ui/f/workloads/{namespace}/{name}/{action}", workload_action, methods=["POST"]),
        Route("/ui/f/nodes/{name}/{action}", node_action, methods=["POST"]),
        Route("/ui/f/apply", apply, methods=["POST"]),
    ]
