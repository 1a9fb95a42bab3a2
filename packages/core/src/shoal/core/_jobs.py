"""What the service refuses of job workloads: a job's template does not change.

Kubernetes makes a Job's pod template immutable: its instances run to
completion, and a new template would leave a job whose runs differ. Shoal
refuses the change on apply with a message that says how to run the new
template (delete the job, or apply it under another name), and the rollout
commands (undo, pause, resume, promote), which a job has nothing to act on.
"""

from __future__ import annotations

from shoal.interfaces import InvalidSpec, Workload, WorkloadMode, WorkloadSpec

__all__ = ["refuse_job_template_change"]


def refuse_job_template_change(spec: WorkloadSpec, current: Workload | None) -> None:
    """Raise if applying ``spec`` would change the template (or mode) of an existing job.

    Raises:
        InvalidSpec: ``current`` is a job and ``spec`` changes its template or its mode,
            or ``spec`` turns an existing workload of another mode into a job.

    """
    if current is None:
        return
    was_job = current.spec.mode == WorkloadMode.JOB
    if was_job == (spec.mode == WorkloadMode.JOB) and (
        not was_job or spec.template == current.spec.template
    ):
        return
    if was_job and spec.mode == WorkloadMode.JOB:
        what = "the template of a job cannot change (its runs would differ)"
    else:
        what = f"mode cannot change between {current.spec.mode.value} and {spec.mode.value}"
    raise InvalidSpec(
        f"workload {spec.key}: {what}; delete it (`shoal delete {spec.name}`) and apply "
        "it again, or apply it under another name",
        workload=spec.key,
        field="template" if was_job and spec.mode == WorkloadMode.JOB else "mode",
    )
