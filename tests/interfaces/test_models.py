"""Domain models: quantities, workload documents, probes, transitions, errors, schemas."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

import shoal.interfaces
from shoal.interfaces import (
    INSTANCE_TRANSITIONS,
    Container,
    ErrorBody,
    Instance,
    InstanceState,
    InvalidSpec,
    InvalidTransition,
    PodTemplate,
    Probe,
    ResourceList,
    RestartPolicy,
    ShoalError,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
    describe_fields,
    error_from_body,
    fields_described,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
    parse_workload_documents,
)

# --- quantities -------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "millicores"),
    [("500m", 500), ("1.5", 1500), (2, 2000), ("2", 2000), (0.25, 250), ("0", 0), (" 100m ", 100)],
)
def test_parse_cpu(written: Any, millicores: int) -> None:
    assert parse_cpu(written) == millicores


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("256Mi", 256 * 2**20),
        ("1G", 10**9),
        ("1Gi", 2**30),
        ("0.5Gi", 2**29),
        ("1k", 1000),
        (1048576, 2**20),
        ("512", 512),
    ],
)
def test_parse_memory(written: Any, size: int) -> None:
    assert parse_memory(written) == size


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("5x", "cpu quantity '5x' has unit 'x': use 'm' or none"),
        ("-1", "cannot parse cpu quantity '-1': write a number with an optional suffix"),
        ("abc", "cannot parse cpu quantity 'abc'"),
        ("", "cannot parse cpu quantity ''"),
        (True, "cpu must be a quantity, not a boolean"),
        (-1, "cpu must not be negative, got -1"),
        ("1.0005", "cpu quantity '1.0005' is finer than one millicore"),
        ("0.5m", "cpu quantity '0.5m' is finer than one millicore"),
        ([1], "cpu must be a number or a string like '500m' or '256Mi'"),
        ("1Gi", "cpu quantity '1Gi' has unit 'Gi': use 'm' or none, e.g. '500m'"),
    ],
)
def test_parse_cpu_refuses_bad_input_with_a_clear_message(written: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_cpu(written)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("5x", "memory quantity '5x' has unknown unit 'x': use one of Ki, Mi, Gi, Ti"),
        ("-1", "cannot parse memory quantity '-1'"),
        ("abc", "cannot parse memory quantity 'abc'"),
        (True, "memory must be a quantity, not a boolean"),
        (-5, "memory must not be negative, got -5"),
        ("0.5", "memory quantity '0.5' is not a whole number of bytes"),
        ("100m", "memory quantity '100m' has unknown unit 'm'"),
    ],
)
def test_parse_memory_refuses_bad_input_with_a_clear_message(written: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_memory(written)


@pytest.mark.parametrize("parse", [parse_cpu, parse_memory])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_numbers_are_refused_with_a_value_error(parse: Any, value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse(value)


def test_infinite_cpu_in_a_yaml_document_is_an_invalid_spec() -> None:
    document = yaml.safe_load(
        "name: web\ntemplate:\n  containers:\n"
        "  - {name: app, image: 'busybox:1.36', resources: {requests: {cpu: .inf}}}\n"
    )
    with pytest.raises(InvalidSpec, match="cpu"):
        parse_workload_documents([document])


def test_quantities_format_canonically() -> None:
    assert [format_cpu(m) for m in (0, 250, 1500, 2000)] == ["0", "250m", "1500m", "2"]
    assert [format_memory(b) for b in (0, 512, 2**29, 2**30, 10**9)] == [
        "0",
        "512",
        "512Mi",
        "1Gi",
        "1000000000",
    ]


def test_quantities_round_trip_through_workload_json() -> None:
    resources = {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "1.5", "memory": "1G"},
    }
    spec = WorkloadSpec.model_validate(
        {
            "name": "web",
            "template": {
                "containers": [{"name": "app", "image": "busybox:1.36", "resources": resources}]
            },
        }
    )
    written = json.loads(spec.model_dump_json())
    assert written["template"]["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "1500m", "memory": "1000000000"},
    }
    again = WorkloadSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    limits = again.template.containers[0].resources.limits
    assert (limits.cpu, limits.memory) == (1500, 10**9)
    assert again.template.requests() == ResourceList(cpu="500m", memory="256Mi")


def test_a_bare_cpu_number_is_cores_on_input_and_millicores_after() -> None:
    # The Kubernetes-compatible asymmetry: code holding millicores must write "500m".
    assert ResourceList(cpu=2).cpu == 2000
    assert ResourceList(cpu="500m").cpu == 500
    resources = ResourceList(cpu="1500m", memory="1Gi")
    assert ResourceList.model_validate(resources.model_dump()) == resources


def test_pod_requests_sum_the_containers_in_millicores_and_bytes() -> None:
    template = PodTemplate.model_validate(
        {
            "containers": [
                {
                    "name": "a",
                    "image": "x",
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                },
                {"name": "b", "image": "x", "resources": {"requests": {"cpu": 1, "memory": "1Gi"}}},
                {"name": "c", "image": "x"},
            ]
        }
    )
    total = template.requests()
    assert (total.cpu, total.memory) == (1250, 64 * 2**20 + 2**30)


def test_a_bad_quantity_in_a_model_is_a_validation_error_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ResourceList.model_validate({"cpu": "5x"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("cpu",)
    assert "has unit 'x'" in error["msg"]


# --- workload documents -----------------------------------------------------


def workload(name: str = "web", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "template": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
    }
    document.update(fields)
    return document


def invalid_spec(documents: list[Any]) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        parse_workload_documents(documents, source="web.yaml")
    assert caught.value.code == "invalid_spec"
    return caught.value


def test_valid_documents_parse_in_order() -> None:
    specs = parse_workload_documents([workload("web", replicas=3), workload("db")])
    assert [(s.key, s.replicas) for s in specs] == [("default/web", 3), ("default/db", 1)]


def test_a_bad_field_names_document_workload_field_and_fix() -> None:
    bad = workload("api")
    bad["template"]["containers"][0]["resources"] = {"limits": {"memory": "5x"}}
    error = invalid_spec([workload("web"), bad])
    assert error.message.startswith(
        "web.yaml: document 2 (workload 'api'): "
        "field template.containers[0].resources.limits.memory: "
        "memory quantity '5x' has unknown unit 'x'"
    )
    assert error.details["document"] == 2
    assert error.details["errors"][0]["field"] == "template.containers[0].resources.limits.memory"
    assert "unknown unit" in error.details["errors"][0]["problem"]


def test_an_unknown_field_is_refused_with_a_spelling_hint() -> None:
    error = invalid_spec([workload(replcas=2)])
    assert error.message == (
        "web.yaml: document 1 (workload 'web'): field replcas: Extra inputs are not permitted; "
        "remove it (check its spelling against the schema)"
    )


def test_negative_replicas_are_refused() -> None:
    error = invalid_spec([workload(replicas=-1)])
    assert "field replicas: Input should be greater than or equal to 0; use a larger value" in (
        error.message
    )


def test_several_problems_are_all_in_the_details() -> None:
    error = invalid_spec([workload(replicas=-1, namespace="Not A Label")])
    assert "(and 1 more)" in error.message
    assert {e["field"] for e in error.details["errors"]} == {"replicas", "namespace"}


def test_duplicate_container_names_are_refused() -> None:
    containers = [{"name": "app", "image": "a"}, {"name": "app", "image": "b"}]
    error = invalid_spec([workload(template={"containers": containers})])
    assert "field template: container name 'app' is used twice" in error.message


def test_a_workload_defined_twice_across_documents_is_refused() -> None:
    error = invalid_spec([workload("web"), workload("db"), workload("web")])
    assert error.message == (
        "web.yaml: document 3 (workload 'web'): workload default/web is also defined by "
        "document 1; keep one of them"
    )
    assert error.details["document"] == 3


def test_the_same_name_in_two_namespaces_is_two_workloads() -> None:
    specs = parse_workload_documents([workload("web"), workload("web", namespace="prod")])
    assert [s.key for s in specs] == ["default/web", "prod/web"]


@pytest.mark.parametrize(
    ("document", "kind"), [("web", "str"), ([1, 2], "list"), (None, "NoneType")]
)
def test_a_document_that_is_not_a_mapping_is_refused(document: Any, kind: str) -> None:
    error = invalid_spec([workload(), document])
    assert error.message == f"web.yaml: document 2: expected a mapping with a workload, got {kind}"
    assert error.details["document"] == 2


def test_no_documents_is_refused() -> None:
    error = invalid_spec([])
    assert error.message == "web.yaml: no workload documents found: write at least one"


# --- probes -----------------------------------------------------------------

ACTIONS: dict[str, dict[str, Any]] = {
    "exec": {"command": ["true"]},
    "http_get": {"port": 8080},
    "tcp_socket": {"port": 5432},
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_probe_with_exactly_one_action_is_valid(action: str) -> None:
    probe = Probe.model_validate({action: ACTIONS[action]})
    assert getattr(probe, action) is not None


@pytest.mark.parametrize(
    "actions", [(), ("exec", "http_get"), ("http_get", "tcp_socket"), tuple(sorted(ACTIONS))]
)
def test_a_probe_needs_exactly_one_action(actions: tuple[str, ...]) -> None:
    with pytest.raises(
        ValidationError, match="a probe needs exactly one of exec, http_get or tcp_socket"
    ):
        Probe.model_validate({a: ACTIONS[a] for a in actions})


# --- instance transitions ---------------------------------------------------


def instance(state: InstanceState) -> Instance:
    return Instance(
        name="web-abc12",
        namespace="default",
        uid="uid-1",
        workload="web",
        workload_uid="wuid-1",
        generation=1,
        template=PodTemplate(containers=[Container(name="app", image="busybox:1.36")]),
        restart_policy=RestartPolicy.ALWAYS,
        state=state,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


ALLOWED = [(s, t) for s in InstanceState for t in InstanceState if t in INSTANCE_TRANSITIONS[s]]
REFUSED = [
    (s, t)
    for s in InstanceState
    for t in InstanceState
    if t != s and t not in INSTANCE_TRANSITIONS[s]
]


@pytest.mark.parametrize(("start", "to"), ALLOWED, ids=[f"{s}->{t}" for s, t in ALLOWED])
def test_allowed_transitions_return_an_updated_copy(
    start: InstanceState, to: InstanceState
) -> None:
    before = instance(start)
    after = before.transition(to, "Testing", "moved by a test")
    assert (after.state, after.reason, after.message) == (to, "Testing", "moved by a test")
    assert before.state == start


@pytest.mark.parametrize(("start", "to"), REFUSED, ids=[f"{s}->{t}" for s, t in REFUSED])
def test_other_transitions_raise_invalid_transition(
    start: InstanceState, to: InstanceState
) -> None:
    with pytest.raises(InvalidTransition) as caught:
        instance(start).transition(to, "Testing")
    error = caught.value
    assert error.message == f"instance default/web-abc12 cannot go from {start} to {to}"
    assert error.details == {"instance": "default/web-abc12", "current": start, "requested": to}
    assert (error.code, error.http_status) == ("invalid_transition", 400)


@pytest.mark.parametrize("state", list(InstanceState))
def test_staying_in_a_state_only_updates_reason_and_message(state: InstanceState) -> None:
    after = instance(state).transition(state, "Refreshed", "still here")
    assert (after.state, after.reason, after.message) == (state, "Refreshed", "still here")


def test_lost_is_terminal() -> None:
    assert INSTANCE_TRANSITIONS[InstanceState.LOST] == frozenset()


# --- errors -----------------------------------------------------------------


def shoal_errors() -> list[type[ShoalError]]:
    exported = (getattr(shoal.interfaces, name) for name in shoal.interfaces.__all__)
    return [c for c in exported if isinstance(c, type) and issubclass(c, ShoalError)]


def test_every_error_class_is_exported_with_its_own_code() -> None:
    def tree(cls: type[ShoalError]) -> set[type[ShoalError]]:
        return {cls}.union(*(tree(sub) for sub in cls.__subclasses__()))

    ours = {c for c in tree(ShoalError) if c.__module__.startswith("shoal.interfaces")}
    assert ours == set(shoal_errors())
    codes = [cls.code for cls in ours]
    assert len(codes) == len(set(codes)), f"duplicate error codes: {sorted(codes)}"


@pytest.mark.parametrize("cls", shoal_errors(), ids=lambda c: c.__name__)
def test_every_error_round_trips_through_its_wire_body(cls: type[ShoalError]) -> None:
    error = cls("it went wrong; do this instead", field="replicas", document=2)
    wire = ErrorBody.model_validate_json(error.to_body().model_dump_json())
    rebuilt = error_from_body(wire)
    assert type(rebuilt) is cls
    assert rebuilt.message == str(rebuilt) == "it went wrong; do this instead"
    assert rebuilt.details == {"field": "replicas", "document": 2}
    assert 400 <= rebuilt.http_status < 600


def test_an_unknown_error_code_becomes_a_plain_shoal_error() -> None:
    rebuilt = error_from_body(ErrorBody(code="from_the_future", message="new", details={"a": 1}))
    assert type(rebuilt) is ShoalError
    assert (rebuilt.message, rebuilt.details) == ("new", {"a": 1})


def test_a_body_whose_details_contain_message_still_rebuilds() -> None:
    body = ErrorBody(code="not_found", message="no such key", details={"message": "upstream"})
    assert error_from_body(body).details == {"message": "upstream"}


# --- schemas ----------------------------------------------------------------


def public_models() -> list[type[BaseModel]]:
    exported = (getattr(shoal.interfaces, name) for name in shoal.interfaces.__all__)
    return [c for c in exported if isinstance(c, type) and issubclass(c, BaseModel)]


def test_public_models_are_found() -> None:
    names = {cls.__name__ for cls in public_models()}
    assert {"WorkloadSpec", "Workload", "Instance", "Node", "Event", "ErrorBody"} <= names


def test_every_public_model_field_has_a_schema_description() -> None:
    missing: list[str] = []
    for cls in public_models():
        for mode in ("validation", "serialization"):
            schema = cls.model_json_schema(mode=mode)
            for name, definition in [(cls.__name__, schema), *schema.get("$defs", {}).items()]:
                for field, prop in definition.get("properties", {}).items():
                    if not prop.get("description"):
                        missing.append(f"{name}.{field}")
    assert not missing, f"fields without a description: {sorted(set(missing))}"


def test_field_docs_cannot_be_switched_off_once_models_exist() -> None:
    assert fields_described()  # every process but a short-lived client keeps them
    assert WorkloadSpec.model_json_schema()["properties"]["name"]["description"]
    describe_fields(True)  # no change: fine
    with pytest.raises(RuntimeError, match="before any Shoal model is imported"):
        describe_fields(False)
    assert fields_described()


@pytest.mark.parametrize(
    ("fields", "wanted"),
    [
        ({"replicas": 3}, 3),  # replicas says it; the status is not counted yet
        ({"replicas": 3, "mode": "daemon"}, 5),  # one per eligible node, as last counted
        ({"mode": "job", "restart_policy": "Never", "job": {"parallelism": 2}}, 5),
    ],
)
def test_a_workload_wants_replicas_or_what_its_mode_counts(
    fields: dict[str, Any], wanted: int
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    stored = Workload(
        spec=WorkloadSpec.model_validate(workload("web", **fields)),
        uid="u1",
        created_at=now,
        updated_at=now,
        status=WorkloadStatus(desired_replicas=5),
    )
    assert stored.wanted_replicas == wanted
