"""A scripted agent session: deploy, scale, diagnose a crashing workload, delete with a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from shoal.mcp import AUDIT_REASON
from shoal.runtime import Fault
from tests.mcp.support import Live, call, eventually, refused

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parents[2] / "examples" / "hello.yaml"
CRASHING = """\
name: billing
replicas: 1
restart_policy: Always
template:
  containers:
    - name: app
      image: billing:2.0
      env:
        STRIPE_API_KEY: sk-live-do-not-leak
"""


async def test_an_agent_deploys_scales_diagnoses_and_cleans_up(live: Live) -> None:
    live.runtime.faults.add(Fault.exits(after=0, exit_code=3, image="billing:2.0"))
    async with Client(live.server()) as agent:
        # Look around, then deploy the example after reviewing its plan.
        assert (await call(agent, "cluster_status"))["nodes"][0]["name"] == "n1"
        manifest = EXAMPLE.read_text()
        plan = await call(agent, "plan_workload", manifest=manifest)
        assert plan["summary"] == "apply: create default/hello" and not plan["destructive"]
        await call(agent, "apply_workload", manifest=manifest, plan_id=plan["plan_id"])
        scaled = await call(agent, "scale_workload", name="hello", replicas=5)
        assert scaled["workload"]["replicas"] == 5

        async def five_running() -> bool | None:
            found = await call(agent, "list_instances", workload="hello", state="running")
            return True if len(found["instances"]) == 5 else None

        await eventually(five_running)

        # A second workload crashes; the agent finds out why.
        await call(agent, "apply_workload", manifest=CRASHING)

        async def restarting() -> dict[str, Any] | None:
            # Flagged from its first exit on; restarted (what the diagnosis below
            # reads) once the control loop has acted on that exit.
            status = await call(agent, "cluster_status")
            flagged = [p for p in status["problems"] if p.startswith("instance default/billing-")]
            listed = (await call(agent, "list_instances", workload="billing"))["instances"]
            restarted = any(i["restart_count"] >= 1 for i in listed)
            return status if flagged and restarted else None

        status = await eventually(restarting)
        assert not status["healthy"]
        (crashing,) = (await call(agent, "list_instances", workload="billing"))["instances"]
        uid = (await live.service.get_instance(crashing["name"])).uid
        live.runtime.write_log(uid, "app", "connecting with key sk-live-do-not-leak")
        live.runtime.write_log(uid, "app", "fatal: payment provider rejected the key")

        diagnosis = await call(agent, "explain_instance", name=crashing["name"])
        assert diagnosis["instance"]["exit_code"] == 3
        assert diagnosis["instance"]["restart_count"] >= 1
        assert "the container keeps exiting" in " ".join(diagnosis["details"]) or (
            "restart policy Always" in " ".join(diagnosis["details"])
        )
        assert any(e["reason"] == "Error" for e in diagnosis["events"])
        assert "fatal: payment provider rejected the key" in diagnosis["log_tail"]
        logs = await call(agent, "get_logs", instance=crashing["name"], grep="fatal|key")
        assert [line["line"] for line in logs["lines"]] == [
            "connecting with key <redacted>",
            "fatal: payment provider rejected the key",
        ]

        # What the run before the last restart said, kept by its node when it started again.
        async def previous_kept() -> dict[str, Any] | None:
            diagnosis = await call(agent, "explain_instance", name=crashing["name"])
            return diagnosis if diagnosis["previous_log_tail"] else None

        assert "started app" in (await eventually(previous_kept))["previous_log_tail"]
        previous = await call(agent, "get_logs", instance=crashing["name"], previous=True)
        assert previous["previous"] and "started app" in [x["line"] for x in previous["lines"]]
        warnings = await call(agent, "list_events", name=crashing["name"], warnings_only=True)
        assert warnings["events"] and warnings["events"][-1]["message"] == "app exited 3"
        prompt = await agent.get_prompt("diagnose-workload", {"name": "billing"})
        assert "explain_instance" in prompt.messages[0].content.text  # type: ignore[union-attr]

        # It removes the broken workload: refused without a plan, done with one.
        refusal = await refused(agent, "delete_workload", name="billing")
        assert "plan_required" in refusal
        plan = await call(agent, "plan_workload", action="delete", name="billing")
        assert plan["instances_stopped"] == [crashing["name"]]
        await call(agent, "delete_workload", name="billing", plan_id=plan["plan_id"])

        async def billing_gone() -> bool | None:
            names = {w["name"] for w in (await call(agent, "list_workloads"))["workloads"]}
            return True if names == {"hello"} else None

        await eventually(billing_gone)

    trail = await live.service.list_events(kind="Key", name="operator@test", limit=1000)
    tools = [e.details["tool"] for e in trail if e.reason == AUDIT_REASON]
    assert tools[:4] == ["cluster_status", "plan_workload", "apply_workload", "scale_workload"]
    assert ("delete_workload", "refused") in [
        (e.details["tool"], e.details["outcome"]) for e in trail
    ]
    everything = " ".join(e.model_dump_json() for e in await live.service.list_events(limit=5000))
    assert "sk-live-do-not-leak" not in everything
