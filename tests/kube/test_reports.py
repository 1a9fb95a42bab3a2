"""What Shoal ignores is reported with its Kubernetes path; bad values name path and fix."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shoal.interfaces import InvalidSpec
from shoal.kube import parse_documents
from tests.kube.support import deployment, pod, translate, workload

FULL_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "0b5d0e6a",
        "resourceVersion": "42",
        "creationTimestamp": "2024-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {
        "securityContext": {"runAsUser": 1000},
        "affinity": {"nodeAffinity": {}},
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "app",
                "image": "busybox",
                "imagePullPolicy": "Always",
                "securityContext": {"privileged": True},
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": 1}},
                "ports": [{"containerPort": 80, "hostIP": "127.0.0.1"}],
            }
        ],
    },
    "status": {"phase": "Running"},
}


def test_every_ignored_field_is_one_warning_with_its_path() -> None:
    translation = translate(FULL_POD)
    prefix = "Pod shop/web: "
    paths = [w.removeprefix(prefix).split(": ignored: ")[0] for w in translation.warnings]
    assert all(w.startswith(prefix) for w in translation.warnings)
    assert paths == [
        "metadata.uid",
        "metadata.resourceVersion",
        "metadata.creationTimestamp",
        "metadata.managedFields",
        "spec.containers[0].ports[0].hostIP",
        "spec.containers[0].resources.limits[nvidia.com/gpu]",
        "spec.containers[0].imagePullPolicy",
        "spec.containers[0].securityContext",
        "spec.containers[0].lifecycle",
        "spec.securityContext",
        "spec.affinity",
        "spec.tolerations",
        "spec.automountServiceAccountToken",
        "status",
    ]
    [spec] = translation.objects
    assert spec.origin is not None
    assert len(spec.origin.ignored) == len(paths)
    assert spec.origin.ignored[-1] == "status: written by the cluster, never applied"


def test_strict_refuses_and_lists_every_ignored_field() -> None:
    with pytest.raises(InvalidSpec) as caught:
        translate(FULL_POD, strict=True)
    message = str(caught.value)
    assert message.startswith("test.yaml: strict: 14 field(s) or object(s) Shoal would ignore")
    assert "spec.containers[0].securityContext: ignored" in message
    assert "status: ignored" in message
    assert len(caught.value.details["ignored"]) == 14


def test_strict_accepts_what_it_fully_honours() -> None:
    assert translate(deployment(), strict=True).warnings == []


def test_unknown_kind_is_skipped_with_a_warning_or_refused_when_strict() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    documents = [service, deployment()]
    translation = parse_documents(documents, "app.yaml")
    assert [o.name for o in translation.objects] == ["web"]
    assert translation.warnings[0].startswith(
        "Service default/web: kind: ignored: Shoal does not run Service objects"
    )
    with pytest.raises(InvalidSpec, match="strict: 1 field"):
        parse_documents(documents, "app.yaml", strict=True)


def test_service_account_token_source_is_reported() -> None:
    volume = {
        "name": "token",
        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
    }
    translation = translate(
        pod({"volumeMounts": [{"name": "token", "mountPath": "/t"}]}, volumes=[volume])
    )
    assert translation.warnings == [
        "Pod default/web: spec.volumes[0].projected.sources[0].serviceAccountToken: ignored: "
        "Shoal has no API server, so no service account tokens"
    ]


def in_template(
    document: dict[str, Any], container: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """Return ``document`` with ``container`` merged into its template's first container."""
    pod_spec = document["spec"]["template"]["spec"]
    pod_spec["containers"][0].update(container or {})
    pod_spec.update(spec)
    return document


def job() -> dict[str, Any]:
    """Return a batch/v1 Job of busybox."""
    template = deployment()["spec"]["template"]
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {"template": template},
    }


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        (
            pod({"ports": [{"containerPort": 70000}]}),
            "spec.containers[0].ports[0].containerPort",
            "less than or equal to 65535",
        ),
        (
            pod({"ports": [{"containerPort": 80, "protocol": "SCTP"}]}),
            "spec.containers[0].ports[0].protocol",
            "'SCTP' is not supported by Shoal; use TCP or UDP",
        ),
        (
            pod({"resources": {"limits": {"memory": "64MB"}}}),
            "spec.containers[0].resources.limits.memory",
            "unknown unit 'MB'",
        ),
        (
            pod({"resources": {"limits": {"cpu": "1Gi"}}}),
            "spec.containers[0].resources.limits.cpu",
            "has unit 'Gi'",
        ),
        (
            pod({"livenessProbe": {"httpGet": {"port": "http"}}}),
            "spec.containers[0].livenessProbe.httpGet.port",
            "no port of the container is named 'http'",
        ),
        (
            pod({"livenessProbe": {"grpc": {"port": 9000}}}),
            "spec.containers[0].livenessProbe.grpc",
            "gRPC probes are not supported",
        ),
        (
            pod({"readinessProbe": {"periodSeconds": 5}}),
            "spec.containers[0].readinessProbe",
            "a probe needs exactly one action, it has 0; give one of httpGet, tcpSocket or exec",
        ),
        (
            pod({"livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}}),
            "spec.containers[0].livenessProbe",
            "it has 2",
        ),
        (pod(volumes=[{"name": "v"}]), "spec.volumes[0]", "the volume has no source"),
        (
            pod(initContainers=[{"name": "i", "image": "busybox", "readinessProbe": {}}]),
            "spec.initContainers[0].readinessProbe",
            "cannot have probes",
        ),
        (
            pod(volumes=[{"name": "v", "emptyDir": {"medium": "HugePages"}}]),
            "spec.volumes[0].emptyDir.medium",
            "medium 'HugePages' is not supported",
        ),
        (
            pod({"livenessProbe": {"httpGet": {"port": 80, "scheme": "HTTPS"}}}),
            "spec.containers[0].livenessProbe.httpGet.scheme",
            "plain HTTP",
        ),
        (
            pod({"env": [{"name": "A", "valueFrom": {}}]}),
            "spec.containers[0].env[0].valueFrom",
            "valueFrom is empty",
        ),
        (pod({"ports": "80"}), "spec.containers[0].ports", "expected a list, got a string"),
        (pod({"env": [{"value": "x"}]}), "spec.containers[0].env[0].name", "required value"),
        (
            {**deployment(selector=None), "kind": "DaemonSet"},
            "spec.selector",
            "required value is missing",
        ),
        (
            {**pod(), "metadata": {"generateName": "web-"}},
            "metadata.name",
            "generateName is not supported",
        ),
        (
            pod({"env": [{"name": "A", "value": 5}]}),
            "spec.containers[0].env[0].value",
            "valid string",
        ),
        (
            pod(
                {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]}
            ),
            "spec.containers[0].env[0].valueFrom",
            "fieldPath 'spec.hostname' is not a pod field",
        ),
        (
            pod(
                {
                    "env": [
                        {
                            "name": "A",
                            "valueFrom": {
                                "resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}
                            },
                        }
                    ]
                }
            ),
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor",
            "has unit 'Mi'",
        ),
        (
            pod({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
            "spec",
            "mounts volume 'data', which the pod does not define",
        ),
        (
            pod(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}}]),
            "spec.volumes[0].persistentVolumeClaim",
            "volume type 'persistentVolumeClaim' is not supported",
        ),
        (
            pod(
                volumes=[
                    {
                        "name": "v",
                        "configMap": {"name": "c", "items": [{"key": "a", "path": "../a"}]},
                    }
                ]
            ),
            "spec.volumes[0].configMap.items[0].path",
            "must be relative",
        ),
        (
            pod({"image": None}),
            "spec.containers[0].image",
            "Field required",
        ),
        (pod(name="Web"), "metadata.name", "should match pattern"),
        (pod(name="a" * 51), "metadata.name", "more than Shoal's limit of 50"),
        (
            pod(initContainers=[{"name": "side", "image": "busybox", "restartPolicy": "Always"}]),
            "spec.initContainers[0].restartPolicy",
            "sidecar init containers",
        ),
        (
            deployment(replicas=-1),
            "spec.replicas",
            "greater than or equal to 0",
        ),
        # A controller's pod spec is named by its own path, as a Pod's is.
        (
            in_template(deployment(), {"ports": [{"containerPort": 80000}]}),
            "spec.template.spec.containers[0].ports[0].containerPort",
            "less than or equal to 65535",
        ),
        (
            {
                **in_template(deployment(), {"env": [{"name": "A", "value": 1}]}),
                "kind": "DaemonSet",
            },
            "spec.template.spec.containers[0].env[0].value",
            "valid string",
        ),
        (
            in_template(job(), {"resources": {"limits": {"memory": "64MB"}}}),
            "spec.template.spec.containers[0].resources.limits.memory",
            "unknown unit 'MB'",
        ),
        (
            in_template(deployment(), terminationGracePeriodSeconds=-1),
            "spec.template.spec.terminationGracePeriodSeconds",
            "greater than or equal to 0",
        ),
        (
            deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "150%"}}),
            "spec.strategy.rollingUpdate.maxSurge",
            "neither a count",
        ),
        (
            deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
            "spec.strategy.rollingUpdate",
            "may not be set when the strategy type is Recreate",
        ),
        (
            deployment(progressDeadlineSeconds=0),
            "spec.progressDeadlineSeconds",
            "greater than or equal to 1",
        ),
        (
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {},
            },
            "spec.template",
            "required value is missing; add template",
        ),
        (
            {"apiVersion": "v1", "kind": "Pod", "spec": {}},
            "metadata",
            "required value is missing",
        ),
    ],
)
def test_invalid_values_name_their_kubernetes_path(
    document: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        translate(document)
    message = str(caught.value)
    assert message.startswith("test.yaml: document 1 (")
    assert f"): {path}: " in message
    assert words in message
    assert caught.value.details["path"] == path


def test_the_fix_is_part_of_the_message() -> None:
    with pytest.raises(InvalidSpec) as caught:
        translate(pod({"ports": [{"containerPort": 0}]}))
    assert str(caught.value) == (
        "test.yaml: document 1 (Pod default/web): spec.containers[0].ports[0].containerPort: "
        "Input should be greater than or equal to 1; use a larger value"
    )


def test_every_pydantic_error_is_listed_with_its_path() -> None:
    document = pod({"ports": [{"containerPort": 0}, {"containerPort": 70000}]})
    with pytest.raises(InvalidSpec) as caught:
        translate(document)
    assert "(and 1 more)" in str(caught.value)
    assert [e["field"] for e in caught.value.details["errors"]] == [
        "spec.containers[0].ports[0].containerPort",
        "spec.containers[0].ports[1].containerPort",
    ]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"data": {"key": "not base64!"}}, "data[key]", "plain text in stringData"),
        ({"stringData": {"bad key": "x"}}, "stringData[bad key]", "is not valid"),
        ({"type": "kubernetes.io/tls", "data": {"tls.crt": b64("x")}}, "data[tls.key]", "tls.key"),
        ({"type": "kubernetes.io/service-account-token"}, "type", "does not support"),
        ({"data": {"big": b64("x" * (1024 * 1024 + 1))}}, "data", "more than the limit"),
        (
            {"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{}"}},
            "stringData[.dockerconfigjson]",
            "not a Docker config",
        ),
    ],
)
def test_secret_errors_name_their_kubernetes_path(
    fields: dict[str, Any], path: str, words: str
) -> None:
    document = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, **fields}
    with pytest.raises(InvalidSpec) as caught:
        translate(document)
    message = str(caught.value)
    assert f"(Secret default/creds): {path}: " in message
    assert words in message


def test_config_map_key_error_names_its_path() -> None:
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "conf"},
        "binaryData": {"a/b": b64("x")},
    }
    with pytest.raises(InvalidSpec, match=r"\(ConfigMap default/conf\): binaryData\[a/b\]: "):
        translate(document)


def test_all_or_nothing() -> None:
    documents = [deployment(), pod({"ports": [{"containerPort": 0}]})]
    with pytest.raises(InvalidSpec, match="document 2"):
        parse_documents(documents, "app.yaml")


def test_the_callers_documents_are_not_changed() -> None:
    document = pod({"resources": {"limits": {"cpu": "1"}}})
    before = repr(document)
    workload(document)
    parse_documents([document], "app.yaml")
    assert repr(document) == before


def test_null_and_empty_fields_mean_unset_and_are_not_reported() -> None:
    """What `kubectl create deployment --dry-run=client -o yaml` writes applies cleanly."""
    document = deployment(strategy={})
    document["metadata"]["creationTimestamp"] = None
    document["spec"]["template"]["metadata"]["creationTimestamp"] = None
    document["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    document["status"] = {}
    assert translate(document, strict=True).warnings == []


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (
            {"apiVersion": "v1", "metadata": {"name": "x"}},
            "kind: a Kubernetes document needs a kind",
        ),
        (
            {"apiVersion": "v1", "kind": "Workload", "name": "x"},
            "kind: a Shoal Workload has no apiVersion; remove apiVersion",
        ),
    ],
)
def test_kind_must_be_given(document: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidSpec, match=words):
        translate(document)


def test_a_misspelled_field_is_named_as_the_typo_it_likely_is() -> None:
    manifest = deployment()
    manifest["spec"]["replcas"] = 5
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    manifest["spec"]["template"]["spec"]["frobnicate"] = True
    warnings = translate(manifest).warnings
    assert any(
        w.endswith("spec.replcas: ignored: no such field here: did you mean replicas?")
        for w in warnings
    )
    assert any(
        "imagePullPolicyy: ignored: no such field here: did you mean imagePullPolicy?" in w
        for w in warnings
    )
    assert any(
        w.endswith("frobnicate: ignored: Shoal does not support this field") for w in warnings
    )
