"""A rolling update on real runc containers whose readiness comes late: nothing drops.

A 3-replica workload (no host ports) whose containers become ready 2 s after
they start changes its template with max_unavailable 0. The API is read the
whole time: ready instances never drop below 3. Then `rollout history`,
`rollout undo` and `rollout status` round-trip through the CLI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
import pytest

from shoal.client import ShoalClient
from tests.e2e.conftest import Agent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(
        shutil.which("runc") is None, reason="runc missing: run scripts/system-deps.sh"
    ),
]

WITHIN = 120.0
"""Upper bound, in seconds, on the rollout."""


def workload_file(tmp_path: Path, image: str, version: str) -> Path:
    path = tmp_path / f"web-{version}.yaml"
    path.write_text(
        f"""name: web
replicas: 3
update: {{max_surge: 1, max_unavailable: 0}}
template:
  containers:
    - name: main
      image: {image}
      env: {{VERSION: "{version}"}}
      command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"]
      readiness_probe:
        exec: {{command: ["test", "-f", "/tmp/ready"]}}
        period_seconds: 0.5
"""
    )
    return path


async def ready(client: ShoalClient) -> int:
    instances = await client.list_instances(workload="web")
    return sum(1 for i in instances if i.state == "running" and i.ready and not i.deleting)


def test_a_rolling_update_keeps_every_replica_ready_then_undoes(
    agent: Agent, registry: str, tmp_path: Path
) -> None:
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "pull", registry)
    agent.cli("apply", "-f", str(workload_file(tmp_path, registry, "1")))
    agent.until("3 ready replicas", lambda client: _at_least(client, 3), timeout=WITHIN)

    agent.cli("apply", "-f", str(workload_file(tmp_path, registry, "2")))

    async def watch(client: ShoalClient) -> list[int]:
        seen: list[int] = []
        with anyio.fail_after(WITHIN):
            while True:
                seen.append(await ready(client))
                workload = await client.get_workload("web")
                status = workload.status
                if (
                    status.revision == 2
                    and status.updated_replicas == 3
                    and status.available_replicas == 3
                    and status.replicas == 3
                ):
                    return seen
                await anyio.sleep(0.05)

    seen = agent.api(watch)
    assert min(seen) >= 3, f"ready replicas dropped to {min(seen)} during the rollout"
    assert _versions(agent) == {"2"}

    history = agent.cli("rollout", "history", "web").stdout
    assert [line.split()[0] for line in history.splitlines()[1:]] == ["1", "2"]
    undone = agent.cli("rollout", "undo", "web").stdout
    assert "rolling back: revision 3 (undo to revision 1)" in undone
    status = agent.cli("rollout", "status", "web", "--watch")
    assert status.returncode == 0
    assert "revision 3: 3/3 updated, 3/3 available" in status.stdout
    assert _versions(agent) == {"1"}


async def _at_least(client: ShoalClient, count: int) -> bool | None:
    return True if await ready(client) >= count else None


def _versions(agent: Agent) -> set[str]:
    """Return the VERSION of the instances that stay (old ones may still be stopping)."""
    instances = agent.read("instances")
    return {
        i["template"]["containers"][0]["env"]["VERSION"] for i in instances if not i["deleting"]
    }


def test_a_rollout_survives_its_agent_being_killed_mid_way(
    agent: Agent, registry: str, tmp_path: Path
) -> None:
    """SIGKILL the only agent while the rollout is half done; a restart finishes it."""
    agent.runtime = "runc"
    agent.start()
    agent.cli("images", "pull", registry)
    agent.cli("apply", "-f", str(workload_file(tmp_path, registry, "1")))
    agent.until("3 ready replicas", lambda client: _at_least(client, 3), timeout=WITHIN)

    agent.cli("apply", "-f", str(workload_file(tmp_path, registry, "2")))

    async def half_done(client: ShoalClient) -> bool | None:
        instances = await client.list_instances(workload="web")
        return True if any(i.revision == 2 for i in instances) else None

    agent.until("a new-revision instance", half_done, timeout=WITHIN)
    agent.kill()
    agent.start()

    async def done(client: ShoalClient) -> bool | None:
        status = (await client.get_workload("web")).status
        finished = (status.revision, status.updated_replicas, status.available_replicas)
        return True if finished == (2, 3, 3) and status.replicas == 3 else None

    agent.until("the rollout to finish after the restart", done, timeout=WITHIN)
    assert _versions(agent) == {"2"}
    events = agent.cli("events").stdout
    assert "Adopted" in events  # the running pods were found again, not started anew
