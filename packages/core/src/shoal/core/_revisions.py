"""A workload's revisions: every template it has had, numbered, for rollout history and undo.

A revision is made whenever the template changes (an apply, an undo, an
auto-revert); scaling or pausing makes none. The workload keeps the last
``revision_history_limit`` of them in its own record, so history and undo
need no second read and a revision never outlives its workload.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from shoal.interfaces import Conflict, NotFound, PodTemplate, Revision, Workload, WorkloadSpec

__all__ = ["first_revision", "revision_of", "template_hash", "with_template"]


def template_hash(template: PodTemplate) -> str:
    """Return a short hash of ``template``: equal templates, equal hashes."""
    canonical = json.dumps(template.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def first_revision(spec: WorkloadSpec, now: datetime, cause: str) -> list[Revision]:
    """Return the history of a new workload: its template as revision 1."""
    return [
        Revision(
            number=1,
            template_hash=template_hash(spec.template),
            template=spec.template,
            created_at=now,
            cause=cause,
        )
    ]


def _history(workload: Workload) -> list[Revision]:
    """Return the kept revisions; a workload stored before revisions existed gets its first."""
    if workload.revisions:
        return list(workload.revisions)
    return [
        Revision(
            number=workload.revision,
            template_hash=template_hash(workload.spec.template),
            template=workload.spec.template,
            created_at=workload.updated_at,
            cause="the template it had when revisions began",
        )
    ]


def with_template(workload: Workload, spec: WorkloadSpec, now: datetime, cause: str) -> Workload:
    """Return ``workload`` with ``spec``, and a new revision if the template changed.

    Keeps the last ``spec.revision_history_limit`` revisions; the generation
    goes up if anything changed.
    """
    history = _history(workload)
    revision = workload.revision
    digest = template_hash(spec.template)
    if digest != history[-1].template_hash:
        revision = max(r.number for r in history) + 1
        history.append(
            Revision(
                number=revision,
                template_hash=digest,
                template=spec.template,
                created_at=now,
                cause=cause,
            )
        )
    history = history[-spec.revision_history_limit :]
    return workload.model_copy(
        update={
            "spec": spec,
            "generation": workload.generation + 1,
            "updated_at": now,
            "revision": revision,
            "revisions": history,
        }
    )


def revision_of(workload: Workload, number: int | None) -> Revision:
    """Return revision ``number`` of ``workload``, or the one before the current if None.

    Raises:
        NotFound: it is not kept (the message lists those that are).
        Conflict: ``number`` is None and only the current revision is kept.

    """
    history = _history(workload)
    kept = ", ".join(str(r.number) for r in history)
    if number is None:
        earlier = [r for r in history if r.number != workload.revision]
        if not earlier:
            raise Conflict(
                f"workload {workload.key} has no earlier revision to go back to: only revision "
                f"{kept} is kept; apply the template you want, or roll back after a change",
                workload=workload.key,
            )
        return earlier[-1]
    for revision in history:
        if revision.number == number:
            return revision
    raise NotFound(
        f"workload {workload.key} keeps no revision {number}: kept are {kept} "
        "(see `shoal rollout history`)",
        workload=workload.key,
        revision=number,
    )
