"""Every tool through the SDK's in-memory client, against a live in-process cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from mcp import Client
from mcp_types import ElicitRequestParams, ElicitResult

from shoal.interfaces import (
    Actor,
    ConfigMapSpec,
    Expected,
    NotFound,
    Service,
    Via,
    Workload,
)
from shoal.mcp import AUDIT_REASON, CHANGE_TOOLS, REDACTED, Caller, McpSettings, build_server
from tests.mcp.support import HELLO, OPERATOR, VIEWER, Live, call, eventually, refused

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parents[2] / "examples" / "hello.yaml"
READ_TOOLS = {
    "cluster_status",
    "list_nodes",
    "get_node",
    "list_members",
    "list_workloads",
    "get_workload",
    "list_instances",
    "list_events",
    "get_logs",
    "explain_instance",
    "instance_stats",
    "query_usage",
    "get_trace",
    "plan_workload",
    "plan_drain",
    "get_rollout",
    "list_config_maps",
    "list_secrets",
    "list_namespaces",
    "plan_delete_config",
}


async def running(client: Client, workload: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``workload`` has ``count`` running instances; return them."""

    async def check() -> list[dict[str, Any]] | None:
        found = (await call(client, "list_instances", workload=workload))["instances"]
        ok = len(found) == count and all(i["state"] == "running" for i in found)
        return found if ok else None

    return await eventually(check)


async def test_lists_every_tool_with_schemas_and_annotations(live: Live) -> None:
    async with Client(live.server()) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == READ_TOOLS | CHANGE_TOOLS
    for name in READ_TOOLS:
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint, name
    for name in (
        "delete_workload",
        "drain_node",
        "scale_workload",
        "apply_workload",
        "undo_rollout",
        "promote_rollout",
    ):
        annotations = tools[name].annotations
        assert annotations is not None
        assert (annotations.read_only_hint, annotations.destructive_hint) == (False, True)
    cordon = tools["cordon_node"].annotations
    assert cordon is not None and cordon.destructive_hint is False and cordon.idempotent_hint
    assert all(tool.output_schema for tool in tools.values())
    # Self-contained output schemas: clients validate results without resolving references.
    assert all("$ref" not in json.dumps(tool.output_schema) for tool in tools.values())
    assert all(tool.description for tool in tools.values())
    logs = tools["get_logs"].input_schema["properties"]
    assert "case-insensitive" in logs["grep"]["description"]
    assert logs["max_bytes"]["maximum"] == 262_144
    assert "previous run" in logs["previous"]["description"]
    # The resolver-filled confirmation is not an argument an agent can pass.
    assert "confirmation" not in tools["delete_workload"].input_schema["properties"]


async def test_deploys_an_example_and_reads_it_back(live: Live) -> None:
    async with Client(live.server()) as client:
        applied = await call(client, "apply_workload", manifest=EXAMPLE.read_text())
        assert applied["summary"] == "apply: create default/hello"
        assert applied["confirmed"] == "not destructive"
        instances = await running(client, "hello", 3)

        workloads = (await call(client, "list_workloads"))["workloads"]
        assert [(w["name"], w["replicas"], w["images"]) for w in workloads] == [
            ("hello", 3, ["busybox:1.36"])
        ]
        detail = await call(client, "get_workload", name="hello")
        assert detail["workload"]["spec"]["template"]["containers"][0]["ports"][0] == {
            "container_port": 8080,
            "host_port": None,
            "protocol": "tcp",
            "name": None,
        }
        assert {i["name"] for i in detail["instances"]} == {i["name"] for i in instances}
        node = await call(client, "get_node", name="n1")
        assert node["usage"]["instances"] == 3
        assert node["usage"]["cpu"] == "300m / 4"
        nodes = (await call(client, "list_nodes"))["nodes"]
        assert [(n["name"], n["schedulable"]) for n in nodes] == [("n1", True)]
        only = await call(client, "list_instances", state="running", namespace="default")
        assert only["by_state"] == {"running": 3}
        # A filter naming what does not exist is no empty success.
        assert "not_found" in await refused(client, "list_instances", node="nosuch")
        missing = await refused(client, "list_instances", workload="nosuch", namespace="default")
        assert "not_found" in missing
        anywhere = await call(client, "list_instances", workload="nosuch")  # every namespace
        assert anywhere["instances"] == []
        empty = await call(client, "list_instances", workload="hello", state="failed")
        assert empty["instances"] == [] and empty["total"] == 0

        async def healthy() -> dict[str, Any] | None:
            status = await call(client, "cluster_status")
            return status if status["healthy"] else None

        status = await eventually(healthy)
        assert status["workloads_by_phase"] == {"running": 1}
        stats = await call(client, "instance_stats", name=instances[0]["name"])
        assert [s["name"] for s in stats["containers"]] == ["web"]


async def test_list_members_shows_the_gossip_view_and_is_audited(live: Live) -> None:
    async with Client(live.server(VIEWER)) as client:
        members = (await call(client, "list_members"))["members"]
    assert [(m["name"], m["address"], m["state"]) for m in members] == [
        ("n1", "127.0.0.1:7946", "alive")
    ]
    assert (members[0]["tags"]["role"], members[0]["tags"]["mem"]) == ("both", str(8 << 30))
    (audit,) = await live.service.list_events(kind="Key", name="viewer@test")
    assert (audit.reason, audit.details["tool"], audit.details["outcome"]) == (
        AUDIT_REASON,
        "list_members",
        "ok",
    )


async def test_cluster_status_names_problems(live: Live) -> None:
    big = {
        "name": "big",
        "template": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "64"}}}
            ]
        },
    }
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=big)
        await call(client, "cordon_node", name="n1")

        async def pending() -> dict[str, Any] | None:
            status = await call(client, "cluster_status")
            return status if any("pending" in p for p in status["problems"]) else None

        status = await eventually(pending)
    assert not status["healthy"]
    assert any(p.startswith("node n1 is cordoned: ") for p in status["problems"])
    assert any(p.startswith("instance default/big-") for p in status["problems"])


async def test_explains_a_pending_instance_with_the_schedulers_reasons(live: Live) -> None:
    big = {
        "name": "big",
        "template": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "64"}}}
            ]
        },
    }
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=big)

        async def placed() -> str | None:
            found = (await call(client, "list_instances", workload="big"))["instances"]
            return found[0]["name"] if found else None

        name = await eventually(placed)

        async def explained() -> dict[str, Any] | None:
            diagnosis = await call(client, "explain_instance", name=name)
            return diagnosis if diagnosis["schedule_failure"] else None

        diagnosis = await eventually(explained)
    assert diagnosis["summary"].startswith("pending: no node can run it")
    assert "cpu" in diagnosis["schedule_failure"]["nodes"]["n1"]
    assert diagnosis["logs_note"].startswith("no logs:")
    assert diagnosis["log_tail"] == []


async def test_bad_arguments_say_what_to_change_and_change_nothing(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=HELLO)
        wrong_type = await refused(client, "scale_workload", name="hello", replicas="many")
        assert "replicas" in wrong_type and "valid integer" in wrong_type
        assert "errors.pydantic.dev" not in wrong_type
        negative = await refused(client, "scale_workload", name="hello", replicas=-1)
        assert "replicas" in negative and "greater than or equal to 0" in negative
        missing = await refused(client, "get_workload")
        assert "name" in missing and "required" in missing.lower()
        unknown = await refused(client, "get_workload", name="ghost")
        # The CLI's command, as the tool an agent has.
        assert unknown.endswith(
            "not_found: workload default/ghost not found: list them with list_workloads"
        )
        assert "not_found" in await refused(client, "scale_workload", name="ghost", replicas=2)
        assert "call list_instances" in await refused(client, "explain_instance", name="nope")
        assert "list nodes with list_nodes" in await refused(client, "cordon_node", name="nope")

        malformed = dict(HELLO, name="other", replicas=1, colour="blue")
        text = await refused(client, "apply_workload", workload=malformed)
        assert "colour" in text and "Extra inputs are not permitted" in text
        no_containers = {"name": "empty", "template": {"containers": []}}
        assert "containers" in await refused(client, "apply_workload", workload=no_containers)
        both = await refused(client, "apply_workload", workload=HELLO, manifest="name: x")
        assert "pass exactly one of workload" in both
        assert "pass exactly one" in await refused(client, "plan_workload")
        bad_yaml = await refused(client, "apply_workload", manifest="name: [unclosed")
        assert "invalid_spec: manifest: line 1, column 16: invalid YAML" in bad_yaml
        second_bad = EXAMPLE.read_text() + "\n---\nname: second\nreplicas: -3\n"
        half = await refused(client, "apply_workload", manifest=second_bad)
        assert "manifest: document 2 (workload 'second'): field replicas" in half.replace(
            "Workload", "workload"
        )
        assert "plan_workload(action='scale') needs replicas" in await refused(
            client, "plan_workload", action="scale", name="hello"
        )
        since = await refused(client, "get_logs", instance="x", since="yesterday")
        assert "not_found" in since  # the instance is checked first
        unknown_tool = await refused(client, "launch_missiles")
        assert "Unknown tool" in unknown_tool

        # The server still answers, and nothing of the refused calls was applied.
        names = [w["name"] for w in (await call(client, "list_workloads"))["workloads"]]
        assert names == ["hello"]
    with pytest.raises(NotFound):
        await live.service.get_workload("other")
    assert (await live.service.get_workload("hello")).spec.replicas == 2


async def test_log_since_must_be_a_duration_or_time(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=dict(HELLO, replicas=1))
        (instance,) = await running(client, "hello", 1)
        text = await refused(client, "get_logs", instance=instance["name"], since="yesterday")
    assert "invalid_input: since 'yesterday' is neither a duration" in text


async def test_get_logs_filters_caps_and_scrubs(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=dict(HELLO, replicas=1))
        (instance,) = await running(client, "hello", 1)
        stored = await live.service.get_instance(instance["name"])
        for n in range(300):
            level = "ERROR" if n % 10 == 0 else "info"
            live.runtime.write_log(stored.uid, "web", f"{level} request {n:03d} " + "x" * 50)
        live.runtime.write_log(stored.uid, "web", "panic: login failed for hunter2-secret")
        live.runtime.write_log(stored.uid, "web", "dial postgres://app:s3cr3t-pw@db:5432/app")

        tail = await call(client, "get_logs", instance=instance["name"], tail=5)
        assert [line["line"] for line in tail["lines"]][-2:] == [
            "panic: login failed for <redacted>",
            "dial postgres://app:<redacted>@db:5432/app",
        ]
        grep = await call(client, "get_logs", instance=instance["name"], grep="error|PANIC")
        assert len(grep["lines"]) == 31
        assert grep["note"] == "31 line(s) matched 'error|PANIC'"
        capped = await call(
            client, "get_logs", instance=instance["name"], grep="error", max_bytes=500
        )
        assert capped["truncated"]
        assert sum(len(line["line"]) + 1 for line in capped["lines"]) <= 500
        assert capped["lines"][-1]["line"].startswith("ERROR request 290")
        assert "raise tail or max_bytes" in capped["note"]
        # A grep cannot probe a secret's value: lines are matched as they are shown.
        probe = await call(client, "get_logs", instance=instance["name"], grep="hunter2-s")
        assert (probe["lines"], probe["note"]) == ([], "0 line(s) matched 'hunter2-s'")
        shown = await call(client, "get_logs", instance=instance["name"], grep="<redacted>")
        assert len(shown["lines"]) == 2
        recent = await call(client, "get_logs", instance=instance["name"], since="1h", tail=2)
        assert len(recent["lines"]) == 2
        rendered = json.dumps([tail, grep, capped, recent])
    assert "hunter2-secret" not in rendered and "s3cr3t-pw" not in rendered


async def test_secrets_never_appear_and_survive_a_round_trip(live: Live) -> None:
    async with Client(live.server()) as client:
        plan = await call(client, "plan_workload", workload=HELLO)
        await call(client, "apply_workload", workload=HELLO, plan_id=plan["plan_id"])
        (instance, _) = await running(client, "hello", 2)
        outputs = [
            plan,
            await call(client, "get_workload", name="hello"),
            await call(client, "explain_instance", name=instance["name"]),
            await call(client, "list_events", include_audit=True, limit=500),
        ]
        # An agent edits what it read and applies it back, placeholders and all.
        spec = outputs[1]["workload"]["spec"]
        env = spec["template"]["containers"][0]["env"]
        assert env == {
            "GREETING": "hi",
            "DB_PASSWORD": "<redacted>",
            "DATABASE_URL": "postgres://app:<redacted>@db:5432/app",
        }
        spec["replicas"] = 3
        replan = await call(client, "plan_workload", workload=spec)
        assert [c["path"] for c in replan["changes"][0]["changes"]] == ["replicas"]
        outputs.append(await call(client, "apply_workload", workload=spec))
        # A placeholder with nothing stored behind it is refused, not stored.
        fresh = dict(spec, name="fresh")
        text = await refused(client, "apply_workload", workload=fresh)
        assert "env DB_PASSWORD of container 'web' in workload default/fresh" in text
    rendered = json.dumps(outputs)
    assert "hunter2-secret" not in rendered and "s3cr3t-pw" not in rendered
    stored = await live.service.get_workload("hello")
    assert stored.spec.replicas == 3
    assert stored.spec.template.containers[0].env["DB_PASSWORD"] == "hunter2-secret"
    assert "s3cr3t-pw" in stored.spec.template.containers[0].env["DATABASE_URL"]


async def test_destructive_calls_need_a_plan_for_exactly_that_change(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=HELLO)
        text = await refused(client, "delete_workload", name="hello")
        assert "plan_required" in text and "plan_workload(action='delete')" in text
        assert "plan_id" in text
        assert not (await live.service.get_workload("hello")).deleting

        to_zero = await call(client, "plan_workload", action="scale", name="hello", replicas=0)
        assert to_zero["destructive"] and len(to_zero["instances_stopped"]) == 2
        assert "plan_required" in await refused(client, "scale_workload", name="hello", replicas=0)
        wrong = await refused(
            client, "scale_workload", name="hello", replicas=0, plan_id="0123456789abcdef"
        )
        assert "stale_plan" in wrong
        up = await call(client, "scale_workload", name="hello", replicas=3)
        assert up["confirmed"] == "not destructive" and up["workload"]["replicas"] == 3
        # The workload changed since the plan: the old plan no longer authorises anything.
        stale = await refused(
            client, "scale_workload", name="hello", replicas=0, plan_id=to_zero["plan_id"]
        )
        assert "stale_plan" in stale
        assert "as it is now, the change would scale workload default/hello from 3 to 0" in stale
        assert (await live.service.get_workload("hello")).spec.replicas == 3
        malformed = await refused(
            client, "scale_workload", name="hello", replicas=0, plan_id="not-a-plan"
        )
        assert "invalid_input: 'not-a-plan' is no plan id (a plan tool returns 16" in malformed

        zero_spec = dict(HELLO, replicas=0)
        assert "plan_required" in await refused(client, "apply_workload", workload=zero_spec)
        planned = await call(client, "plan_workload", workload=zero_spec)
        assert planned["destructive"] and "to zero" in planned["summary"]
        delete = await call(client, "plan_workload", action="delete", name="hello")
        # A plan for one change does not authorise another.
        assert "stale_plan" in await refused(
            client, "apply_workload", workload=zero_spec, plan_id=delete["plan_id"]
        )
        done = await call(client, "apply_workload", workload=zero_spec, plan_id=planned["plan_id"])
        assert done["confirmed"] == "plan"

        delete = await call(client, "plan_workload", action="delete", name="hello")
        assert delete["next_step"].startswith("delete_workload(name='hello'")
        deleted = await call(client, "delete_workload", name="hello", plan_id=delete["plan_id"])
        assert deleted["workload"]["deleting"] and deleted["confirmed"] == "plan"

        async def gone() -> bool | None:
            names = [w["name"] for w in (await call(client, "list_workloads"))["workloads"]]
            return True if not names else None

        await eventually(gone)


async def test_lists_are_bounded_and_say_what_they_left_out(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shoal.mcp._views.DETAIL_INSTANCES", 2)
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=dict(HELLO, replicas=3))
        await call(client, "apply_workload", workload=dict(HELLO, name="other", replicas=1))
        await running(client, "hello", 3)
        some = await call(client, "list_instances", workload="hello", limit=2)
        assert (len(some["instances"]), some["total"], some["truncated"]) == (2, 3, True)
        assert some["by_state"] == {"running": 3}
        every = await call(client, "list_instances", workload="hello")
        assert (len(every["instances"]), every["total"], every["truncated"]) == (3, 3, False)
        one = await call(client, "list_workloads", limit=1)
        assert ([w["name"] for w in one["workloads"]], one["total"]) == (["hello"], 2)
        assert one["truncated"]
        nodes = await call(client, "list_nodes", limit=1)
        assert (len(nodes["nodes"]), nodes["truncated"]) == (1, nodes["total"] > 1)
        detail = await call(client, "get_workload", name="hello")
        assert (len(detail["instances"]), detail["instances_total"]) == (2, 3)
        assert "less than or equal to 1000" in await refused(client, "list_instances", limit=1001)


async def test_promoting_canaries_needs_a_plan_of_the_workload_as_it_is(live: Live) -> None:
    update = {"canary": 1, "max_surge": 1, "max_unavailable": 0}
    canaried = dict(HELLO, update=update)
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=canaried)
        await running(client, "hello", 2)
        template = {"containers": [dict(HELLO["template"]["containers"][0], image="busybox:2")]}
        await call(client, "apply_workload", workload=dict(canaried, template=template))
        await running(client, "hello", 3)  # one canary beside the two old instances
        plan = await call(client, "plan_workload", action="promote", name="hello")
        assert plan["destructive"] and len(plan["instances_stopped"]) == 2
        await call(client, "scale_workload", name="hello", replicas=3)
        # Promoting now would replace more old instances than the plan showed.
        stale = await refused(client, "promote_rollout", name="hello", plan_id=plan["plan_id"])
        assert "stale_plan" in stale
        assert (await live.service.get_workload("hello")).promoted_revision == 1
        plan = await call(client, "plan_workload", action="promote", name="hello")
        done = await call(client, "promote_rollout", name="hello", plan_id=plan["plan_id"])
        assert done["confirmed"] == "plan"
        assert (await live.service.get_workload("hello")).promoted_revision == 2
        # No plan is offered for a promotion that would be refused.
        again = await refused(client, "plan_workload", action="promote", name="hello")
        assert "revision 2 of default/hello is promoted already" in again
        await call(client, "apply_workload", workload=dict(HELLO, name="plain"))
        none = await refused(client, "plan_workload", action="promote", name="plain")
        assert "has no canaries to promote" in none


async def test_nodes_cordon_uncordon_and_drain_with_a_plan(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=HELLO)
        await running(client, "hello", 2)
        cordoned = await call(client, "cordon_node", name="n1")
        assert cordoned["node"]["cordoned"] and not cordoned["node"]["schedulable"]
        uncordoned = await call(client, "uncordon_node", name="n1")
        assert not uncordoned["node"]["cordoned"]
        assert "plan_required" in await refused(client, "drain_node", name="n1")
        plan = await call(client, "plan_drain", name="n1")
        assert len(plan["instances_stopped"]) == 2
        # The one node: nothing can take its instances, and the plan says so.
        (warning,) = plan["warnings"]
        assert warning.startswith("no other node takes instances") and "pending" in warning
        drained = await call(client, "drain_node", name="n1", plan_id=plan["plan_id"])
        assert drained["node"]["draining"] and drained["confirmed"] == "plan"
        again = await refused(client, "drain_node", name="n1", plan_id=plan["plan_id"])
        assert "stale_plan" in again  # the node changed: draining now
        status = await call(client, "cluster_status")
        assert "node n1 is draining: nothing new is placed there (uncordon_node(name='n1')" in (
            " ".join(status["problems"])
        )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_user_can_confirm_or_decline_by_elicitation(live: Live, mode: str) -> None:
    answers: list[str] = []
    questions: list[str] = []

    async def answer(context: Any, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params.message)
        action = answers.pop(0)
        content = {"confirm": True} if action == "accept" else None
        return ElicitResult(action=action, content=content)

    async with Client(live.server(), mode=mode, elicitation_callback=answer) as client:
        await call(client, "apply_workload", workload=HELLO)
        await running(client, "hello", 2)  # a question that changes between rounds is re-asked
        answers.append("decline")
        text = await refused(client, "delete_workload", name="hello")
        assert "not_confirmed: the user declined" in text
        assert not (await live.service.get_workload("hello")).deleting
        answers.append("accept")
        deleted = await call(client, "delete_workload", name="hello")
    assert deleted["confirmed"] == "elicitation"
    assert questions[0].startswith("Shoal will delete workload default/hello: its 2 instance(s)")
    assert (await live.service.get_workload("hello")).deleting


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_yes_confirms_only_the_change_the_user_was_shown(live: Live, mode: str) -> None:
    questions: list[str] = []

    async def answer(context: Any, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params.message)
        if len(questions) == 1:  # while the question is open, another writer scales up
            await live.service.scale("hello", 3)
        return ElicitResult(action="accept", content={"confirm": True})

    async with Client(live.server(), mode=mode, elicitation_callback=answer) as client:
        await call(client, "apply_workload", workload=HELLO)
        await running(client, "hello", 2)
        zero = dict(HELLO, replicas=0)
        if mode == "legacy":  # asked once, mid-call: the body refuses the stale yes
            text = await refused(client, "apply_workload", workload=zero)
            assert "stale_plan: the user confirmed" in text
            assert "Nothing changed: call again" in text
            assert (await live.service.get_workload("hello")).spec.replicas == 3
        else:  # asked again on the next round, about the change as it is then
            done = await call(client, "apply_workload", workload=zero)
            assert done["confirmed"] == "elicitation"
            assert len(questions) == 2 and questions[0] != questions[1]
            assert (await live.service.get_workload("hello")).spec.replicas == 0


async def test_read_only_mode_exposes_only_read_tools(live: Live) -> None:
    async with Client(live.server(read_only=True)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == READ_TOOLS
        assert "Unknown tool" in await refused(client, "apply_workload", workload=HELLO)
        plan = await call(client, "plan_workload", workload=HELLO)
    assert plan["action"] == "apply"
    assert await live.service.list_workloads() == []


async def test_a_viewer_sees_read_tools_only_and_is_refused_changes(live: Live) -> None:
    async with Client(live.server(OPERATOR)) as operator:
        await call(operator, "apply_workload", workload=HELLO)
    async with Client(live.server(VIEWER)) as viewer:
        names = {tool.name for tool in (await viewer.list_tools()).tools}
        assert names == READ_TOOLS
        text = await refused(viewer, "delete_workload", name="hello", plan_id="whatever")
        assert text.endswith(
            "forbidden: delete_workload changes the cluster and needs role operator; key "
            "'viewer@test' is a viewer here. Use the read tools, or ask an admin for a token "
            "with --role operator"
        )
        assert (await call(viewer, "get_workload", name="hello"))["workload"]["spec"]
    assert not (await live.service.get_workload("hello")).deleting


async def test_every_call_is_audited_with_caller_and_redacted_arguments(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=HELLO)
        await refused(client, "get_workload", name="ghost")
        await refused(client, "delete_workload", name="hello")
        await refused(client, "scale_workload", name="hello", replicas=-1)
        await call(client, "list_workloads")
        quoted = await refused(
            client, "apply_workload", workload={"name": "x", "env": {"DB_PASSWORD": ["hunter3-x"]}}
        )
    events = await live.service.list_events(kind="Key", name="operator@test")
    assert all(e.reason == AUDIT_REASON and e.actor.id == "operator@test" for e in events)
    assert all(e.actor.via == "mcp" for e in events)
    seen = [(e.details["tool"], e.details["outcome"]) for e in events]
    assert seen == [
        ("apply_workload", "ok"),
        ("get_workload", "error"),
        ("delete_workload", "refused"),
        ("scale_workload", "error"),
        ("list_workloads", "ok"),
        ("apply_workload", "error"),
    ]
    apply, missing, delete, negative, _, invalid = events
    # An argument error quotes the argument: not its secret, to the agent or in the trail.
    assert quoted.startswith("invalid_input: apply_workload: ")
    assert "hunter3-x" not in quoted and "hunter3-x" not in invalid.model_dump_json()
    assert "hunter2-secret" not in apply.details["arguments"]
    assert (
        json.loads(apply.details["arguments"])["workload"]["template"]["containers"][0]["env"][
            "DB_PASSWORD"
        ]
        == "<redacted>"
    )
    assert missing.details["error"] == "not_found"
    assert missing.details["target"] == "workload/default/ghost"
    assert delete.type.value == "Warning" and delete.details["error"].startswith("plan_required")
    assert "greater than or equal to 0" in negative.details["error"]
    audit_free = await live.service.list_events(kind="Workload", name="hello")
    assert AUDIT_REASON not in {e.reason for e in audit_free}


async def test_an_agent_follows_a_rollout_and_undoes_it_with_a_plan(live: Live) -> None:
    async with Client(live.server()) as client:
        await call(client, "apply_workload", workload=dict(HELLO, replicas=2))
        await running(client, "hello", 2)
        changed = dict(
            HELLO, replicas=2, template={"containers": [{"name": "web", "image": "busybox:2"}]}
        )
        await call(client, "apply_workload", workload=changed)

        async def rolled() -> dict[str, Any] | None:
            view = await call(client, "get_rollout", name="hello")
            return view if view["state"] == "RolloutComplete" and view["revision"] == 2 else None

        view = await eventually(rolled)
        assert [r["number"] for r in view["revisions"]] == [1, 2]
        assert [r["current"] for r in view["revisions"]] == [False, True]

        refused_text = await refused(client, "undo_rollout", name="hello")
        assert "plan_id" in refused_text  # destructive: it needs a plan (or the user's yes)
        plan = await call(client, "plan_workload", action="undo", name="hello")
        assert plan["action"] == "undo" and plan["destructive"]
        assert "back from revision 2 to the template of revision 1" in plan["summary"]
        undone = await call(client, "undo_rollout", name="hello", plan_id=plan["plan_id"])
        assert undone["confirmed"] == "plan"
        missing = await refused(client, "plan_workload", action="undo", name="hello", revision=9)
        assert "keeps no revision 9: kept are 1, 2, 3 (see get_rollout)" in missing

        paused = await call(client, "pause_rollout", name="hello")
        assert paused["confirmed"] == "not destructive" and "paused" in paused["summary"]
        assert (await live.service.get_workload("hello")).spec.paused
        newer = {"containers": [{"name": "web", "image": "busybox:3"}]}
        await call(client, "apply_workload", workload=dict(changed, template=newer, paused=True))

        async def waiting() -> str | None:
            problems = (await call(client, "cluster_status"))["problems"]
            return next((p for p in problems if "rollout paused" in p), None)

        said = await eventually(waiting)
        assert said.startswith("workload default/hello is progressing with its rollout paused")
        assert said.endswith("(get_rollout; resume_rollout goes on)")
        resumed = await call(client, "resume_rollout", name="hello")
        assert "resumed" in resumed["summary"]
        assert not (await live.service.get_workload("hello")).spec.paused


class _WriterBetween:
    """The service as a tool sees it, but another writer scales the workload first.

    That is, between the tool's check of its plan and its change: what the
    service's check of the plan's version, made as it writes, is there for.
    """

    def __init__(self, inner: Service, other: Service) -> None:
        self.inner, self.other = inner, other

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete_workload(
        self, name: str, namespace: str = "default", *, expected: Expected | None = None
    ) -> Workload:
        await self.other.scale(name, 3, namespace)
        return await self.inner.delete_workload(name, namespace, expected=expected)

    async def delete_config(
        self,
        kind: Literal["ConfigMap", "Secret", "Namespace"],
        name: str,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> None:
        changed = ConfigMapSpec(name=name, namespace=namespace, data={"mode": "changed"})
        await self.other.apply([changed])
        await self.inner.delete_config(kind, name, namespace, expected=expected)


async def test_a_plan_confirms_no_change_made_after_it_was_checked(live: Live) -> None:
    def between(caller: Caller) -> Service:
        inner = live.service.with_actor(Actor(id=caller.key_id, via=Via.MCP))
        return cast(Service, _WriterBetween(inner, live.service))

    async with Client(build_server(between, McpSettings(default_caller=OPERATOR))) as client:
        await call(client, "apply_workload", workload=HELLO)
        plan = await call(client, "plan_workload", action="delete", name="hello")
        assert plan["expected"]["generation"] == 1
        text = await refused(client, "delete_workload", name="hello", plan_id=plan["plan_id"])
    assert "workload default/hello changed since this change was planned" in text
    assert "generation 1, now 2" in text
    workload = await live.service.get_workload("hello")
    assert not workload.deleting and workload.spec.replicas == 3

    await live.service.apply([ConfigMapSpec(name="settings", data={"mode": "planned"})])
    async with Client(build_server(between, McpSettings(default_caller=OPERATOR))) as client:
        plan = await call(client, "plan_delete_config", kind="ConfigMap", name="settings")
        assert plan["expected"]["generation"] == 1
        text = await refused(client, "delete_config_map", name="settings", plan_id=plan["plan_id"])
    assert "ConfigMap default/settings changed since this change was planned" in text
    assert (await live.service.get_config_map("settings")).spec.data == {"mode": "changed"}


LEAKY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: leaky
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"kind":"Deployment","env":"k8s-secret-777"}'
spec:
  selector: {matchLabels: {app: leaky}}
  template:
    metadata: {labels: {app: leaky}}
    spec:
      containers:
        - name: app
          image: busybox
          env:
            - {name: DB_PASSWORD, value: k8s-secret-777}
            - {name: REDIS_URL, value: "redis://:redispw-555@cache:6379"}
"""


async def test_a_kubernetes_manifests_secrets_reach_no_result_resource_or_audit(
    live: Live,
) -> None:
    async with Client(live.server()) as client:
        planned = await call(client, "plan_workload", action="apply", manifest=LEAKY)
        applied = await call(client, "apply_workload", manifest=LEAKY)
        changed = LEAKY.replace("k8s-secret-777", "k8s-secret-888")
        replanned = await call(client, "plan_workload", action="apply", manifest=changed)
        workload = await call(client, "get_workload", name="leaky")
        resource = await client.read_resource("shoal://workloads/default/leaky")
    audit = await live.service.list_events(kind="Key", name="operator@test", limit=100)
    seen = json.dumps([planned, applied, replanned, workload]) + str(resource)
    seen += "".join(e.model_dump_json() for e in audit)
    for secret in ("k8s-secret-777", "k8s-secret-888", "redispw-555"):
        assert secret not in seen
    assert REDACTED in json.dumps(workload)
    # The manifest sent comes back once, in the workload, not again field by field in plans.
    paths = [
        f["path"] for plan in (planned, replanned) for c in plan["changes"] for f in c["changes"]
    ]
    assert paths and not [p for p in paths if p.startswith("origin.")]
