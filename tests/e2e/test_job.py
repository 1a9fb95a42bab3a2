"""A job on real runc: busybox runs to completion, the job completes, its output stays readable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Agent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]

JOB = """\
name: count
mode: job
restart_policy: Never
job: {{completions: 3, parallelism: 2, backoff_limit: 0}}
template:
  containers:
    - name: main
      image: {image}
      command: [sh, -c, 'echo counted by $(hostname); exit 0']
"""


def test_a_job_runs_to_completion_on_runc(agent: Agent, registry: str, tmp_path: Path) -> None:
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "pull", registry)
    document = tmp_path / "job.yaml"
    document.write_text(JOB.format(image=registry))
    agent.cli("apply", "-f", str(document))

    def complete(items: list[Any]) -> Any:
        (job,) = items
        return job if job["status"]["phase"] in ("complete", "failed") else None

    job = agent.wait_for("workloads", complete, timeout=120)
    status = job["status"]
    assert status["phase"] == "complete", status
    assert (status["succeeded"], status["failed"]) == (3, 0)
    assert status["finished_at"]
    instances = agent.read("instances")
    assert len(instances) == 3
    assert {(i["state"], i["exit_code"]) for i in instances} == {("stopped", 0)}
    logs = agent.cli("logs", instances[0]["name"])
    assert "counted by" in logs.stdout, logs
    events = agent.cli("events").stdout
    assert "Completed" in events

    agent.cli("delete", "count")
    agent.wait_for("workloads", lambda items: items == [] or None, timeout=60)
