"""Redaction: which values are secret, and how they are hidden and restored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shoal.interfaces import (
    ChangeAction,
    FieldChange,
    InvalidInput,
    Plan,
    PlannedChange,
    Workload,
    WorkloadSpec,
)
from shoal.mcp import REDACTED
from shoal.mcp._audit import _argument_error
from shoal.mcp._hints import as_tool_calls
from shoal.mcp._redact import (
    is_secret_name,
    json_secret_values,
    redact_json,
    redact_model,
    redact_plan,
    restore_secrets,
    scrub,
    secret_values,
)
from tests.mcp.support import HELLO

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stored(spec: WorkloadSpec) -> Workload:
    return Workload(spec=spec, uid="u1", created_at=NOW, updated_at=NOW)


@pytest.mark.parametrize(
    "name",
    ["DB_PASSWORD", "api_key", "GITHUB_TOKEN", "SECRET", "AWS_ACCESS_KEY_ID", "SESSION_COOKIE"],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["GREETING", "PORT", "LOG_LEVEL", "DATABASE_URL"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_env_maps_are_redacted_anywhere_in_a_document() -> None:
    document = {"spec": HELLO, "env": {"TOKEN": "t0k3n"}, "labels": {"TOKEN": "kept"}}
    redacted = redact_json(document)
    env = redacted["spec"]["template"]["containers"][0]["env"]
    assert env == {
        "GREETING": "hi",
        "DB_PASSWORD": REDACTED,
        "DATABASE_URL": f"postgres://app:{REDACTED}@db:5432/app",
    }
    assert redacted["env"] == {"TOKEN": REDACTED}
    assert redacted["labels"] == {"TOKEN": "kept"}  # only env maps hold secrets
    workload = redact_model(stored(WorkloadSpec.model_validate(HELLO)))
    assert workload.spec.template.containers[0].env["DB_PASSWORD"] == REDACTED


def test_plans_redact_changed_secret_fields() -> None:
    changes = [
        FieldChange(path="template.containers[0].env.DB_PASSWORD", old="a-secret", new="b-sec"),
        FieldChange(path="template.containers[0].env", old={}, new={"API_KEY": "k-secret"}),
        FieldChange(path="template.containers", old=[], new=[{"env": {"TOKEN": "t-secret"}}]),
        FieldChange(path="replicas", old=1, new=2),
    ]
    plan = Plan(
        id="p",
        changes=[
            PlannedChange(action=ChangeAction.UPDATE, namespace="d", name="w", changes=changes)
        ],
    )
    rendered = redact_plan(plan).model_dump_json()
    assert "secret" not in rendered
    assert '"old":1,"new":2' in rendered


def test_secret_values_are_scrubbed_from_text() -> None:
    workload = stored(WorkloadSpec.model_validate(HELLO))
    secrets = secret_values([workload])
    assert secrets == {"hunter2-secret", "s3cr3t-pw"}
    line = "login hunter2-secret to postgres://app:s3cr3t-pw@db and mysql://u:other@x"
    assert scrub(line, secrets) == (
        f"login {REDACTED} to postgres://app:{REDACTED}@db and mysql://u:{REDACTED}@x"
    )


def test_restore_puts_stored_values_back() -> None:
    spec = WorkloadSpec.model_validate(HELLO)
    current = stored(spec)
    edited = WorkloadSpec.model_validate(
        redact_json(spec.model_dump(mode="json")) | {"replicas": 5}
    )
    restored = restore_secrets(edited, current)
    assert restored.template.containers[0].env == spec.template.containers[0].env
    assert restored.replicas == 5
    assert restore_secrets(spec, None) is spec  # nothing redacted: unchanged
    with pytest.raises(InvalidInput, match="no stored value to keep"):
        restore_secrets(edited, None)
    moved = edited.model_dump(mode="json")
    moved["template"]["containers"][0]["env"]["DATABASE_URL"] = f"postgres://app:{REDACTED}@new"
    with pytest.raises(InvalidInput, match="env DATABASE_URL of container 'web'"):
        restore_secrets(WorkloadSpec.model_validate(moved), current)


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "leaky",
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": '{"env": "k8s-literal-secret"}',
            "team": "payments",
        },
    },
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "env": [
                            {"name": "DB_PASSWORD", "value": "k8s-literal-secret"},
                            {"name": "REDIS_URL", "value": "redis://:redispw-555@cache:6379"},
                            {"name": "MODE", "value": "fast"},
                            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s"}}},
                        ],
                    }
                ]
            }
        }
    },
}


def test_kubernetes_env_lists_and_kubectls_copy_are_redacted() -> None:
    redacted = redact_json({"origin": {"manifest": DEPLOYMENT}})
    rendered = str(redacted)
    assert "k8s-literal-secret" not in rendered and "redispw-555" not in rendered
    manifest = redacted["origin"]["manifest"]
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "DB_PASSWORD", "value": REDACTED},
        {"name": "REDIS_URL", "value": f"redis://:{REDACTED}@cache:6379"},
        {"name": "MODE", "value": "fast"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s"}}},
    ]
    annotations = manifest["metadata"]["annotations"]
    assert annotations == {
        "kubectl.kubernetes.io/last-applied-configuration": REDACTED,
        "team": "payments",
    }


def test_a_secret_sent_as_another_type_is_redacted_and_found() -> None:
    arguments = {"workload": {"env": {"DB_PASSWORD": ["hunter3-listval"], "PORT": 8080}}}
    assert redact_json(arguments)["workload"]["env"] == {"DB_PASSWORD": REDACTED, "PORT": 8080}
    found = json_secret_values({**arguments, "manifest": DEPLOYMENT})
    assert found >= {"hunter3-listval", "k8s-literal-secret", "redispw-555"}
    assert "fast" not in found and "8080" not in found


def test_a_manifests_copy_in_a_plan_hides_what_the_workloads_env_names_secret() -> None:
    origin = "origin.manifest.spec.template.spec.containers[0].env"
    changes = [
        FieldChange(path=f"{origin}[0].value", old="old-secret-1", new="new-secret-2"),
        FieldChange(path=f"{origin}[1]", old=None, new={"name": "API_TOKEN", "value": "tok-777"}),
        FieldChange(path=f"{origin}[2].value", old="slow", new="fast"),
        FieldChange(
            path="origin.manifest.metadata.annotations.kubectl.kubernetes.io/"
            "last-applied-configuration",
            old='{"value": "old-secret-1"}',
            new='{"value": "new-secret-2"}',
        ),
        FieldChange(
            path="template.containers[0].env.DB_PASSWORD", old="old-secret-1", new="new-secret-2"
        ),
        FieldChange(path="template.containers[0].env.MODE", old="slow", new="fast"),
    ]
    plan = Plan(
        id="p",
        changes=[
            PlannedChange(action=ChangeAction.UPDATE, namespace="d", name="w", changes=changes)
        ],
    )
    rendered = redact_plan(plan).model_dump_json()
    for secret in ("old-secret-1", "new-secret-2", "tok-777"):
        assert secret not in rendered
    assert rendered.count('"old":"slow","new":"fast"') == 2  # what is not secret stays


def test_an_argument_error_is_said_plainly_and_quotes_no_secret() -> None:
    text = (
        "Error executing tool apply_workload: 3 validation errors for apply_workloadArguments\n"
        "replicas\n  Input should be greater than or equal to 0 "
        "[type=greater_than_equal, input_value=-1, input_type=int]\n"
        "workload.env.DB_PASSWORD\n  Input should be a valid string "
        "[type=string_type, input_value=12345678, input_type=int]\n"
        "workload.template\n  Input should be a valid dictionary "
        "[type=dict_type, input_value=['hunter3-x-very-long'], input_type=list]\n"
        "For further information visit https://errors.pydantic.dev/2.14/v/dict_type"
    )
    result = {"isError": True, "content": [{"type": "text", "text": text}]}
    said = _argument_error(result, {"hunter3-x-very-long"})["content"][0]["text"]
    assert said == (
        "invalid_input: apply_workload: replicas: Input should be greater than or equal to 0 "
        "(got -1); workload.env.DB_PASSWORD: Input should be a valid string; "
        "workload.template: Input should be a valid dictionary: fix the argument "
        "(the tool's input schema says what it takes)"
    )
    other = {"isError": True, "content": [{"type": "text", "text": "not_found: no such x"}]}
    assert _argument_error(other, set()) == other


def test_a_messages_cli_commands_become_the_tool_calls_an_agent_has() -> None:
    said = (
        "3 canaries wait: `shoal rollout promote web` replaces the rest; paused until "
        "`shoal rollout resume`; see `shoal explain web-1a2b3` and `shoal node reset`"
    )
    assert as_tool_calls(said, "default") == (
        "3 canaries wait: plan_workload(action='promote', name='web') then promote_rollout "
        "replaces the rest; paused until resume_rollout; see explain_instance(name='web-1a2b3') "
        "and `shoal node reset`"  # no tool for it: left as it is
    )
    assert "explain_instance(name='web-1a2b3', namespace='prod')" in as_tool_calls(said, "prod")
    unknown = as_tool_calls(said)  # which namespace is not known: the object's call is not made
    assert "`shoal explain web-1a2b3`" in unknown and "resume_rollout" in unknown


def test_init_containers_secrets_are_scrubbed_and_restored_like_the_others() -> None:
    document = dict(
        HELLO,
        template={
            "init_containers": [
                {"name": "migrate", "image": "busybox", "env": {"DB_PASSWORD": "hunter2hunter2"}}
            ],
            "containers": [{"name": "web", "image": "busybox"}],
        },
    )
    spec = WorkloadSpec.model_validate(document)
    current = stored(spec)
    assert scrub("migrate: with hunter2hunter2", secret_values([current])) == (
        f"migrate: with {REDACTED}"
    )
    round_trip = WorkloadSpec.model_validate(redact_json(spec.model_dump(mode="json")))
    assert round_trip.template.init_containers[0].env["DB_PASSWORD"] == REDACTED
    restored = restore_secrets(round_trip, current)
    assert restored.template.init_containers[0].env == {"DB_PASSWORD": "hunter2hunter2"}


def test_a_urls_password_is_redacted_wherever_it_is() -> None:
    redacted = redact_json({"args": ["--dsn", "postgres://app:pw123456@db/app"]})
    assert redacted == {"args": ["--dsn", f"postgres://app:{REDACTED}@db/app"]}
