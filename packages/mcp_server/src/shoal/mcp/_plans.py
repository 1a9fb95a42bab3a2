"""Plans for changes, and the rule that destructive changes need one.

Deleting a workload, draining a node and scaling a workload to zero (by
``scale_workload`` or by applying ``replicas: 0``) stop instances that nothing
replaces; deleting a ConfigMap or a Secret leaves the pods that use it unable
to start again. Such a call goes through only with

* the ``plan_id`` of a plan made for *that exact change* by ``plan_workload``
  (or ``plan_drain``, ``plan_delete_config``), or
* the user's explicit yes to an elicitation, when the client supports it.

Plan ids are digests of the action, its parameters and the identity and
version of the object as it is now (a workload's uid and generation; a
node's id, flags and the instances on it; a ConfigMap's or Secret's uid,
generation and the workloads that use it). No plan is stored anywhere: the
destructive tool recomputes the id and refuses a mismatch, so a plan goes
stale the moment its object changes, and a plan for one change cannot
authorise another. Apply plans use the service's own dry-run plan id, which
digests the field changes and the state they start from. The planning tools
hand the digest out sealed (:mod:`._seal`): for the caller who asked, by
this server process, for 15 to 30 minutes; a digest computed by hand is no plan.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    Resolve,
)
from pydantic import BaseModel, Field

from shoal.core import revision_of
from shoal.interfaces import (
    PLACED_STATES,
    ApplyResult,
    Caller,
    ChangeAction,
    Expected,
    ObjectSpec,
    PlannedChange,
    Role,
    Service,
    ShoalError,
    WorkloadSpec,
)
from shoal.kube import merge_warnings

from ._audit import Call, Gate, Refused
from ._hints import as_tool_calls
from ._redact import redact_plan
from ._seal import PLAN_ID, PlanSeal
from ._views import Model

__all__ = [
    "ChangePlan",
    "Confirm",
    "apply_plan",
    "check_confirmed",
    "config_delete_plan",
    "confirmer",
    "delete_plan",
    "drain_plan",
    "plan_to_ask",
    "question",
    "record_confirmation",
    "scale_plan",
    "sealed",
    "supports_elicitation",
]

Action = Literal["apply", "scale", "delete", "drain", "undo", "promote", "delete_config"]


class ChangePlan(Model):
    """What a change would do, and the id that authorises exactly that change."""

    plan_id: str
    """Pass this as plan_id to the tool in next_step. It stops matching once the object changes."""
    action: Action
    """apply, scale, delete, drain, undo, promote or delete_config (a ConfigMap or Secret)."""
    target: str
    """What changes, e.g. 'workload default/web' or 'node n1'."""
    summary: str
    """One sentence: what happens."""
    destructive: bool
    """True when instances stop without replacement; the change then needs this plan_id."""
    instances_stopped: list[str] = Field(default_factory=list)
    """Instances that stop (for delete, drain and scale to zero)."""
    changes: list[PlannedChange] = Field(default_factory=list)
    """For apply: the field-by-field diff per object (secret values redacted; a manifest's
    `origin` copy only when it is all that changes)."""
    warnings: list[str] = Field(default_factory=list)
    """For apply: what Shoal will not honour in the documents (kinds, fields), per object;
    for drain: instances that no other node can take."""
    next_step: str
    """The call that makes this change."""
    expected: Expected | None = None
    """For a change to one workload, or the deletion of a ConfigMap or Secret: its uid and
    generation as planned. The change is made only if it is still that version (checked as
    it is written)."""


class Confirm(BaseModel):
    """The user's answer to a destructive change."""

    confirm: bool = Field(description="Yes: make this change now. It cannot be undone.")


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def _live_instances(service: Service, name: str, namespace: str) -> list[str]:
    instances = await service.list_instances(namespace, name)
    return sorted(i.name for i in instances if not i.deleting)


async def delete_plan(service: Service, name: str, namespace: str) -> ChangePlan:
    """Plan deleting a workload. Raises NotFound."""
    workload = await service.get_workload(name, namespace)
    stopped = await _live_instances(service, name, namespace)
    return ChangePlan(
        plan_id=_digest("delete", namespace, name, workload.uid, workload.generation),
        action="delete",
        target=f"workload {namespace}/{name}",
        summary=f"delete workload {namespace}/{name}: its {len(stopped)} instance(s) stop and "
        "are removed, then the workload is gone",
        destructive=True,
        instances_stopped=stopped,
        next_step=f"delete_workload(name={name!r}, namespace={namespace!r}, plan_id=<plan_id>)",
        expected=Expected.of(workload),
    )


async def scale_plan(service: Service, name: str, namespace: str, replicas: int) -> ChangePlan:
    """Plan scaling a workload. Raises NotFound."""
    workload = await service.get_workload(name, namespace)
    current = workload.spec.replicas
    destructive = replicas == 0 and current > 0
    stopped = await _live_instances(service, name, namespace) if destructive else []
    return ChangePlan(
        plan_id=_digest("scale", namespace, name, workload.uid, workload.generation, replicas),
        action="scale",
        target=f"workload {namespace}/{name}",
        summary=f"scale workload {namespace}/{name} from {current} to {replicas} replica(s)"
        + (": every instance stops" if destructive else ""),
        destructive=destructive,
        instances_stopped=stopped,
        next_step=f"scale_workload(name={name!r}, namespace={namespace!r}, "
        f"replicas={replicas}, plan_id=<plan_id>)",
        expected=Expected.of(workload),
    )


async def undo_plan(
    service: Service, name: str, namespace: str, revision: int | None
) -> ChangePlan:
    """Plan rolling a workload back to a kept revision.

    Raises:
        NotFound: the revision is not kept (the message, the service's own, lists those that are).
        Conflict: no revision is named and only the current one is kept.

    """
    workload = await service.get_workload(name, namespace)
    target = revision_of(workload, revision)
    number = target.number
    images = ", ".join(c.image for c in target.template.containers)
    replaced = await _live_instances(service, name, namespace)
    return ChangePlan(
        plan_id=_digest("undo", namespace, name, workload.uid, workload.generation, number),
        action="undo",
        target=f"workload {namespace}/{name}",
        summary=f"roll workload {namespace}/{name} back from revision {workload.revision} to "
        f"the template of revision {number} ({images}): its {len(replaced)} instance(s) are "
        f"replaced under its update strategy ({workload.spec.update.type.value})",
        destructive=True,
        instances_stopped=replaced,
        next_step=f"undo_rollout(name={name!r}, namespace={namespace!r}, revision={number}, "
        "plan_id=<plan_id>)",
        expected=Expected.of(workload),
    )


async def promote_plan(service: Service, name: str, namespace: str) -> ChangePlan:
    """Plan promoting a workload's canaries. Raises NotFound, or Conflict (nothing to promote)."""
    workload = await service.get_workload(name, namespace)
    workload.check_promotable()
    old = [
        i.name
        for i in await service.list_instances(namespace, name)
        if not i.deleting and i.template != workload.spec.template
    ]
    return ChangePlan(
        plan_id=_digest(
            "promote", namespace, name, workload.uid, workload.generation, workload.revision
        ),
        action="promote",
        target=f"workload {namespace}/{name}",
        summary=f"promote the canaries of revision {workload.revision} of {namespace}/{name}: "
        f"its {len(old)} old instance(s) are replaced under its update strategy",
        destructive=True,
        instances_stopped=sorted(old),
        next_step=f"promote_rollout(name={name!r}, namespace={namespace!r}, plan_id=<plan_id>)",
        expected=Expected.of(workload),
    )


async def drain_plan(service: Service, node_name: str) -> ChangePlan:
    """Plan draining a node. Raises NotFound."""
    node = await service.get_node(node_name)
    placed = [i for i in await service.list_instances(node=node_name) if i.state in PLACED_STATES]
    moved = sorted(f"{i.namespace}/{i.name}" for i in placed)
    uids = sorted(i.uid for i in placed)
    others = [n.name for n in await service.list_nodes() if n.name != node.name and n.schedulable]
    warnings = []
    if moved and not others:
        warnings.append(
            f"no other node takes instances (none is alive, uncordoned and a worker): its "
            f"{len(moved)} instance(s) stop and stay pending until a node joins or is uncordoned"
        )
    return ChangePlan(
        plan_id=_digest("drain", node.name, node.node_id, node.cordoned, node.draining, uids),
        action="drain",
        target=f"node {node.name}",
        summary=f"drain node {node.name}: it is cordoned and its {len(moved)} instance(s) stop "
        "there and are re-created elsewhere, replacement first, where capacity allows",
        destructive=True,
        instances_stopped=moved,
        warnings=warnings,
        next_step=f"drain_node(name={node.name!r}, plan_id=<plan_id>)",
    )


async def config_delete_plan(
    service: Service, kind: Literal["ConfigMap", "Secret"], name: str, namespace: str
) -> ChangePlan:
    """Plan deleting a ConfigMap or a Secret. Raises NotFound."""
    if kind == "ConfigMap":
        stored = await service.get_config_map(name, namespace)
        expected = Expected(uid=stored.uid, generation=stored.generation)
    else:
        secret = await service.get_secret(name, namespace)
        expected = Expected(uid=secret.uid, generation=secret.generation)
    users = sorted(
        w.name
        for w in await service.list_workloads(namespace)
        if (kind, name) in w.spec.template.config_refs()
    )
    if users:
        impact = (
            f"{len(users)} workload(s) use it ({', '.join(users)}): their running pods keep "
            "what they have, but pods started from now on wait (CreateContainerConfigError) "
            "until it exists again"
        )
    else:
        impact = "no workload uses it"
    tool = "delete_config_map" if kind == "ConfigMap" else "delete_secret"
    return ChangePlan(
        plan_id=_digest(
            "delete_config", kind, namespace, name, expected.uid, expected.generation, users
        ),
        action="delete_config",
        target=f"{kind} {namespace}/{name}",
        summary=f"delete {kind} {namespace}/{name}: {impact}",
        destructive=True,
        next_step=f"{tool}(name={name!r}, namespace={namespace!r}, plan_id=<plan_id>)",
        expected=expected,
    )


def _zeroes(change: PlannedChange) -> bool:
    return change.action == ChangeAction.UPDATE and any(
        c.path == "replicas" and c.new == 0 and (c.old or 0) > 0 for c in change.changes
    )


def _named(change: PlannedChange) -> str:
    where = f"{change.namespace}/{change.name}" if change.namespace else change.name
    return where if change.kind == "Workload" else f"{change.kind} {where}"


def _target(spec: ObjectSpec) -> str:
    return f"workload {spec.key}" if isinstance(spec, WorkloadSpec) else f"{spec.kind} {spec.key}"


def apply_plan(
    result: ApplyResult, specs: Sequence[ObjectSpec], warnings: Sequence[str] = ()
) -> ChangePlan:
    """Describe a dry-run apply; it is destructive when it scales a workload to zero.

    ``warnings`` are the translation's (what the documents have that Shoal ignores);
    the service's own come with ``result``.
    """
    plan = redact_plan(result.plan)
    plan = plan.model_copy(
        update={
            "changes": [
                c.model_copy(
                    update={
                        "changes": c.shown_changes(),  # not the manifest sent, again
                        "rollout": [as_tool_calls(step, c.namespace) for step in c.rollout],
                    }
                )
                for c in plan.changes
            ]
        }
    )
    zeroed = [f"{c.namespace}/{c.name}" for c in plan.changes if _zeroes(c)]
    verbs = [f"{c.action.value} {_named(c)}" for c in plan.changes]
    summary = "apply: " + (", ".join(verbs) or "nothing (no document holds an object Shoal runs)")
    if zeroed:
        summary += f"; scales {', '.join(zeroed)} to zero (every instance stops)"
    return ChangePlan(
        plan_id=plan.id,
        action="apply",
        target=", ".join(_target(s) for s in specs),
        summary=summary,
        destructive=bool(zeroed),
        changes=plan.changes,
        warnings=merge_warnings(warnings, result.warnings),
        next_step="apply_workload(<the same workload or manifest>, plan_id=<plan_id>)",
    )


def supports_elicitation(ctx: Context[Any, Any]) -> bool:
    """Return whether the client can answer a form elicitation (to confirm a change)."""
    try:
        capabilities = ctx.client_capabilities
    except ValueError:  # outside a request
        return False
    elicitation = None if capabilities is None else capabilities.elicitation
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def check_confirmed(
    plan: ChangePlan,
    plan_id: str | None,
    outcome: ElicitationResult[Any],
    asked: ChangePlan | None = None,
    opens: Callable[[str, str], bool] = operator.eq,
) -> str:
    """Return how a change is authorised ('plan', 'elicitation' or 'not destructive').

    ``asked`` is the plan the user was asked about (:func:`plan_to_ask`): a
    yes authorises that change only, not one the world turned it into while
    the question was open. ``opens(plan_id, digest)`` says whether a plan id
    given is the one handed out for ``plan``'s digest (see :mod:`._seal`).

    Raises:
        Refused: the plan id does not match the change as it is now, the user
            declined or confirmed another change, or a destructive change came
            with neither plan nor confirmation.
    """
    if plan_id is not None:
        if not PLAN_ID.fullmatch(plan_id):
            raise Refused(
                f"invalid_input: {plan_id!r} is no plan id (a plan tool returns 16 hex digits): "
                "make a plan, review it, and pass its plan_id"
            )
        if not opens(plan_id, plan.plan_id):
            raise Refused(
                f"stale_plan: plan {plan_id!r} does not authorise this change to {plan.target} "
                "as it is now (the plan was for another change, the object changed since, or "
                "the plan is older than 15 minutes, or was made for another key or by another "
                f"server); as it is now, the change would {plan.summary}: make a new plan, "
                "review it, and pass its plan_id"
            )
        return "plan"
    if not plan.destructive:
        return "not destructive"
    data = outcome.data if isinstance(outcome, AcceptedElicitation) else None
    if isinstance(data, Confirm):
        if data.confirm and asked is not None and asked.plan_id == plan.plan_id:
            return "elicitation"
        if data.confirm:
            shown = "another change" if asked is None else repr(asked.summary)
            raise Refused(
                f"stale_plan: the user confirmed {shown}, but the change is now to "
                f"{plan.summary}. Nothing changed: call again to ask about it as it is now"
            )
        raise Refused(f"not_confirmed: the user did not confirm: {plan.summary}. Nothing changed")
    if not isinstance(outcome, AcceptedElicitation):
        answer = "declined" if outcome.action == "decline" else "cancelled"
        raise Refused(
            f"not_confirmed: the user {answer} the confirmation to {plan.summary}. Nothing changed"
        )
    tool = {"drain": "plan_drain", "delete_config": "plan_delete_config"}.get(
        plan.action, f"plan_workload(action={plan.action!r})"
    )
    raise Refused(
        f"plan_required: this would {plan.summary}. It is destructive: call {tool} for exactly "
        "this change, review the plan with the user, then call again with its plan_id"
    )


async def plan_to_ask(
    gate: Gate,
    ctx: Context[Any, Any],
    plan_id: str | None,
    make: Callable[[Service], Awaitable[ChangePlan]],
) -> ChangePlan | None:
    """Return the plan of a destructive call to ask the user about before its body runs.

    None when there is nothing to ask: the call carries a plan_id (the body
    checks it), the caller is no operator or its client cannot answer (the
    body refuses, saying what to do instead), the change cannot be planned
    (the body reports the error) or is not destructive.
    """
    caller = gate.caller(ctx)
    if plan_id is not None or not caller.allows(Role.OPERATOR) or not supports_elicitation(ctx):
        return None
    try:
        plan = await make(gate.services(caller))
    except ShoalError:
        return None
    return plan if plan.destructive else None


def question(plan: ChangePlan | None) -> Literal["not asked"] | Elicit[Confirm]:
    """Return the question about ``plan`` (from :func:`plan_to_ask`), if there is one.

    It names the plan id, so that a changed plan is a new question: an answer
    carried over between rounds (MCP's ``request_state``) answers only the same one.
    """
    if plan is None:
        return "not asked"
    return Elicit(
        f"Shoal will {plan.summary} (plan {plan.plan_id}). This cannot be undone. Go ahead?",
        Confirm,
    )


def sealed(plan: ChangePlan, seal: PlanSeal, caller: Caller) -> ChangePlan:
    """Return ``plan`` as a planning tool hands it to ``caller``: its id sealed (:mod:`._seal`)."""
    return plan.model_copy(update={"plan_id": seal.seal(plan.plan_id, caller.key_id)})


def confirmer(
    planned: Callable[..., Awaitable[ChangePlan | None]],
) -> Callable[[ChangePlan | None], Awaitable[Literal["not asked"] | Elicit[Confirm]]]:
    """Return a resolver that asks the user about what the resolver ``planned`` planned.

    A destructive tool takes both: its ``confirmation`` from this one, and the
    plan asked about from ``planned`` itself (resolvers run once per call), so
    its body refuses a yes when the change is another by then.
    """

    async def confirm(asked: ChangePlan | None) -> Literal["not asked"] | Elicit[Confirm]:
        return question(asked)

    # Objects, not the strings this module's annotations are: the SDK would look
    # ``planned`` up among this module's globals.
    confirm.__annotations__ = {
        "asked": Annotated[ChangePlan | None, Resolve(planned)],
        "return": Literal["not asked"] | Elicit[Confirm],
    }
    return confirm


def record_confirmation(
    call: Call,
    plan: ChangePlan,
    plan_id: str | None,
    confirmation: ElicitationResult[Any],
    asked: ChangePlan | None,
    seal: PlanSeal,
) -> str:
    """Check that ``plan``'s change is authorised (see :func:`check_confirmed`); note how.

    A plan id is checked against ``seal``, for the caller of ``call``.

    Raises:
        Refused: it is not.
    """

    def opens(given: str, digest: str) -> bool:
        return seal.opens(given, digest, call.caller.key_id)

    how = check_confirmed(plan, plan_id, confirmation, asked, opens)
    call.notes["confirmed"] = how
    call.notes["plan_id"] = plan.plan_id
    return how
