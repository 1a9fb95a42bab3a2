"""Each Kubernetes kind becomes the Shoal object it means."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shoal.interfaces import (
    ConfigMapSpec,
    InvalidSpec,
    NamespaceSpec,
    RestartPolicy,
    SecretSpec,
    UpdateType,
    WorkloadMode,
    WorkloadSpec,
)
from shoal.kube import parse_documents
from tests.kube.support import (
    config_map,
    deployment,
    namespace,
    pod,
    secret,
    translate,
    workload,
)


def test_pod_is_one_replica_replaced_as_a_whole() -> None:
    document = pod(restartPolicy="OnFailure")
    document["metadata"] |= {"namespace": "shop", "labels": {"a": "b"}, "annotations": {"x": "y"}}
    spec = workload(document)
    assert (spec.name, spec.namespace, spec.replicas) == ("web", "shop", 1)
    assert spec.mode == WorkloadMode.REPLICAS
    assert spec.restart_policy == RestartPolicy.ON_FAILURE
    assert spec.update.type == UpdateType.RECREATE
    assert spec.labels == spec.template.labels == {"a": "b"}
    assert spec.annotations == spec.template.annotations == {"x": "y"}
    assert spec.origin is not None
    assert (spec.origin.api_version, spec.origin.kind) == ("v1", "Pod")
    assert spec.origin.manifest == document


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (None, (UpdateType.ROLLING, "25%", "25%")),
        ({"type": "Recreate"}, (UpdateType.RECREATE, "25%", "25%")),
        ({"type": "RollingUpdate"}, (UpdateType.ROLLING, "25%", "25%")),
        (
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}},
            (UpdateType.ROLLING, 2, 0),
        ),
        (
            {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "10%"}},
            (UpdateType.ROLLING, "50%", "10%"),
        ),
    ],
)
def test_deployment_strategy(strategy: dict[str, Any] | None, expected: tuple[Any, ...]) -> None:
    extra = {"strategy": strategy} if strategy is not None else {}
    update = workload(deployment(**extra)).update
    assert (update.type, update.max_surge, update.max_unavailable) == expected


def test_deployment_fields() -> None:
    spec = workload(
        deployment(
            replicas=4,
            minReadySeconds=5,
            progressDeadlineSeconds=120,
            revisionHistoryLimit=3,
            paused=True,
        )
    )
    assert (spec.name, spec.namespace, spec.replicas) == ("web", "shop", 4)
    assert spec.update.min_ready_seconds == 5
    assert spec.update.progress_deadline_seconds == 120
    assert spec.revision_history_limit == 3
    assert spec.paused
    assert spec.labels == {"tier": "front"}
    assert spec.template.labels == {"app": "web"}
    assert spec.template.annotations == {"team": "a"}
    assert spec.restart_policy == RestartPolicy.ALWAYS


def test_deployment_revision_history_zero_keeps_one_with_a_warning() -> None:
    translation = translate(deployment(revisionHistoryLimit=0))
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec) and spec.revision_history_limit == 1
    assert translation.warnings == [
        "Deployment shop/web: spec.revisionHistoryLimit: ignored: Shoal keeps at least the "
        "current revision: 1 is used instead of 0"
    ]


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"app": "web"}},
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
        {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]},
    ],
)
def test_selectors_that_match_the_template(selector: dict[str, Any]) -> None:
    assert workload(deployment(selector=selector)).name == "web"


@pytest.mark.parametrize(
    ("selector", "path"),
    [
        ({"matchLabels": {"app": "api"}}, "spec.selector.matchLabels"),
        (
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
            "spec.selector.matchExpressions[0]",
        ),
        ({}, "spec.selector"),
    ],
)
def test_selectors_that_do_not_match_are_refused(selector: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        translate(deployment(selector=selector))
    assert f"(Deployment shop/web): {path}: " in str(caught.value)


def test_daemon_set() -> None:
    document = deployment(
        updateStrategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        minReadySeconds=10,
    )
    document["kind"] = "DaemonSet"
    document["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    spec = workload(document)
    assert spec.mode == WorkloadMode.DAEMON
    assert spec.placement.constraints == {"disk": "ssd"}
    assert (spec.update.max_surge, spec.update.max_unavailable) == (1, 0)
    assert spec.update.min_ready_seconds == 10


def test_daemon_set_defaults_and_on_delete() -> None:
    document = deployment()
    document["kind"] = "DaemonSet"
    spec = workload(document)
    assert (spec.update.max_surge, spec.update.max_unavailable) == (0, 1)
    document["spec"]["updateStrategy"] = {"type": "OnDelete"}
    translation = translate(document)
    assert translation.warnings == [
        "DaemonSet shop/web: spec.updateStrategy.type: ignored: Shoal has no OnDelete updates: a "
        "template change rolls out as a RollingUpdate with maxUnavailable 1"
    ]


def job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "batch"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "work", "image": "busybox"}],
                    "restartPolicy": "OnFailure",
                }
            },
            **spec,
        },
    }


def test_job_fields() -> None:
    spec = workload(
        job(
            completions=5,
            parallelism=2,
            backoffLimit=1,
            activeDeadlineSeconds=60,
            ttlSecondsAfterFinished=30,
        )
    )
    assert spec.mode == WorkloadMode.JOB
    assert spec.restart_policy == RestartPolicy.ON_FAILURE
    assert spec.job is not None
    assert (spec.job.completions, spec.job.parallelism, spec.job.backoff_limit) == (5, 2, 1)
    assert (spec.job.active_deadline_seconds, spec.job.ttl_seconds_after_finished) == (60, 30)


def test_suspended_job_runs_nothing() -> None:
    spec = workload(job(suspend=True, parallelism=3))
    assert spec.job is not None and spec.job.parallelism == 0


@pytest.mark.parametrize("policy", [None, "Always"])
def test_job_restart_policy_must_end(policy: str | None) -> None:
    document = job()
    document["spec"]["template"]["spec"]["restartPolicy"] = policy
    with pytest.raises(InvalidSpec) as caught:
        translate(document)
    assert "spec.template.spec.restartPolicy: restartPolicy" in str(caught.value)
    assert "use OnFailure or Never" in str(caught.value)


def test_deployment_restart_policy_must_be_always() -> None:
    document = deployment()
    document["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    with pytest.raises(InvalidSpec, match=r"spec.template.spec.restartPolicy: .*use Always"):
        translate(document)


def test_config_map() -> None:
    spec = config_map(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "conf", "namespace": "shop"},
            "data": {"a.txt": "hello"},
            "binaryData": {"b.bin": base64.b64encode(b"\x00\x01").decode()},
            "immutable": True,
        }
    )
    assert spec.files() == {"a.txt": b"hello", "b.bin": b"\x00\x01"}
    assert (spec.namespace, spec.immutable) == ("shop", True)


def test_secret_keeps_no_data_in_its_origin() -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": base64.b64encode(b"admin").decode()},
        "stringData": {"password": "s3cret"},
        "immutable": True,
    }
    spec = secret(document)
    assert spec.values() == {"username": b"admin", "password": b"s3cret"}
    assert (spec.type, spec.immutable) == ("kubernetes.io/basic-auth", True)
    assert spec.origin is not None
    assert "data" not in spec.origin.manifest and "stringData" not in spec.origin.manifest
    assert spec.origin.manifest["type"] == "kubernetes.io/basic-auth"


@pytest.mark.parametrize("value", [["x"], 12345, {"a": "b"}])
def test_a_secret_value_in_string_data_must_be_text(value: object) -> None:
    """As kubectl refuses them; they were stored as "['x']" and "12345"."""
    document = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"token": value},
    }
    with pytest.raises(InvalidSpec, match=r"stringData\[token\]: Input should be a valid string"):
        parse_documents([document], "creds.yaml")


def test_namespace() -> None:
    spec = namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"env": "prod"}},
        }
    )
    assert isinstance(spec, NamespaceSpec)
    assert (spec.name, spec.labels) == ("shop", {"env": "prod"})


def test_list_items_are_flattened_in_order() -> None:
    document = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"}},
            deployment(),
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}},
        ],
    }
    translation = translate(document)
    assert [type(o) for o in translation.objects] == [ConfigMapSpec, WorkloadSpec]
    assert translation.warnings == [
        "Service default/web: kind: ignored: Shoal does not run Service objects (it runs Pod, "
        "Deployment, DaemonSet, Job, ConfigMap, Secret, Namespace)"
    ]


def test_list_item_errors_name_the_item() -> None:
    broken = deployment(replicas=-1)
    document = {"apiVersion": "v1", "kind": "List", "items": [broken]}
    with pytest.raises(InvalidSpec) as caught:
        translate(document)
    assert str(caught.value).startswith(
        "test.yaml: document 1, items[0] (Deployment shop/web): spec.replicas: "
    )


def test_both_dialects_in_one_source_and_duplicates_refused() -> None:
    shoal = {"kind": "ConfigMap", "name": "conf", "data": {"a": "b"}}
    kube = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"}}
    with pytest.raises(InvalidSpec, match=r"ConfigMap default/conf is also defined by document 1"):
        parse_documents([shoal, kube], "test.yaml")
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}
    assert [o.name for o in parse_documents([shoal, other], "test.yaml").objects] == [
        "conf",
        "other",
    ]


@pytest.mark.parametrize(
    ("kind", "api_version"),
    [("Deployment", "extensions/v1beta1"), ("Job", "batch/v1beta1"), ("Pod", "apps/v1")],
)
def test_wrong_api_version_is_refused_with_the_right_one(kind: str, api_version: str) -> None:
    document = deployment()
    document |= {"kind": kind, "apiVersion": api_version}
    with pytest.raises(InvalidSpec, match=r": apiVersion: .* use apiVersion: "):
        translate(document)


def test_kubernetes_kind_without_api_version_says_to_add_it() -> None:
    document = deployment()
    del document["apiVersion"]
    with pytest.raises(InvalidSpec, match=r"has no apiVersion: add 'apiVersion: apps/v1'"):
        translate(document)


def test_secret_drops_kubectls_copy_of_its_values() -> None:
    last_applied = "kubectl.kubernetes.io/last-applied-configuration"
    document = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "creds",
            "annotations": {last_applied: '{"stringData":{"pw":"s3cret"}}', "team": "a"},
        },
        "stringData": {"pw": "s3cret"},
    }
    translation = translate(document)
    [spec] = translation.objects
    assert isinstance(spec, SecretSpec)
    assert spec.annotations == {"team": "a"}
    assert spec.origin is not None
    assert "s3cret" not in repr(spec.origin.manifest)
    assert "s3cret" not in repr(translation.warnings)
    assert translation.warnings == [
        f"Secret default/creds: metadata.annotations[{last_applied}]: ignored: it holds the "
        "Secret's values in clear text; Shoal keeps them only sealed"
    ]
