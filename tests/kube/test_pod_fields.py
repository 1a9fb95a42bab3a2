"""The fields of a Kubernetes pod spec map onto Shoal's template, container and volumes."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.interfaces import (
    EmptyDirVolume,
    EnvFromSource,
    EnvVarSource,
    ExecAction,
    HttpGetAction,
    KeyRef,
    KeyToPath,
    Port,
    ResourceFieldRef,
    TcpSocketAction,
    Volume,
    VolumeMount,
    WorkloadSpec,
)
from tests.kube.support import container_of, pod, translate, workload


def test_command_args_and_working_dir() -> None:
    container = container_of(pod({"command": ["sh"], "args": ["-c", "true"], "workingDir": "/w"}))
    assert (container.command, container.args, container.working_dir) == (
        ["sh"],
        ["-c", "true"],
        "/w",
    )


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ([{"containerPort": 80}], [Port(container_port=80)]),
        (
            [{"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "name": "dns"}],
            [Port(container_port=53, host_port=5353, protocol="udp", name="dns")],
        ),
        ([{"containerPort": 8080, "protocol": "TCP"}], [Port(container_port=8080)]),
    ],
)
def test_ports(ports: list[dict[str, Any]], expected: list[Port]) -> None:
    assert container_of(pod({"ports": ports})).ports == expected


@pytest.mark.parametrize(
    ("env", "plain", "refs"),
    [
        ([{"name": "A", "value": "1"}], {"A": "1"}, {}),
        ([{"name": "EMPTY"}], {"EMPTY": ""}, {}),
        (
            [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
            {"A": "2"},
            {},
        ),
        (
            [
                {
                    "name": "C",
                    "valueFrom": {
                        "configMapKeyRef": {"name": "conf", "key": "k", "optional": True}
                    },
                }
            ],
            {},
            {"C": EnvVarSource(config_map_key_ref=KeyRef(name="conf", key="k", optional=True))},
        ),
        (
            [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}}],
            {},
            {"S": EnvVarSource(secret_key_ref=KeyRef(name="creds", key="pw"))},
        ),
        (
            [
                {
                    "name": "APP",
                    "valueFrom": {
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['app']"}
                    },
                }
            ],
            {},
            {"APP": EnvVarSource(field_path="metadata.labels['app']")},
        ),
        (
            [
                {
                    "name": "MEM",
                    "valueFrom": {
                        "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}
                    },
                }
            ],
            {},
            {
                "MEM": EnvVarSource(
                    resource_field_ref=ResourceFieldRef(resource="limits.memory", divisor=2**20)
                )
            },
        ),
        (
            [
                {
                    "name": "CPU",
                    "valueFrom": {
                        "resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}
                    },
                }
            ],
            {},
            {
                "CPU": EnvVarSource(
                    resource_field_ref=ResourceFieldRef(resource="requests.cpu", divisor=1)
                )
            },
        ),
        (
            [
                {"name": "X", "value": "plain"},
                {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
            {},
            {"X": EnvVarSource(field_path="status.podIP")},
        ),
    ],
)
def test_env(
    env: list[dict[str, Any]], plain: dict[str, str], refs: dict[str, EnvVarSource]
) -> None:
    container = container_of(pod({"env": env}))
    assert (container.env, container.env_refs) == (plain, refs)


def test_env_from() -> None:
    container = container_of(
        pod(
            {
                "envFrom": [
                    {"configMapRef": {"name": "conf"}, "prefix": "CONF_"},
                    {"secretRef": {"name": "creds", "optional": True}},
                ]
            }
        )
    )
    assert container.env_from == [
        EnvFromSource(config_map="conf", prefix="CONF_"),
        EnvFromSource(secret="creds", optional=True),
    ]


def test_resources_and_a_limit_without_request() -> None:
    container = container_of(
        pod(
            {
                "resources": {
                    "requests": {"cpu": "100m"},
                    "limits": {"cpu": "500m", "memory": "64Mi"},
                }
            }
        )
    )
    resources = container.resources
    # Kubernetes: a limit without a request is also the request.
    assert (resources.requests.cpu, resources.requests.memory) == (100, 64 * 2**20)
    assert (resources.limits.cpu, resources.limits.memory) == (500, 64 * 2**20)


def test_probes_with_named_ports() -> None:
    container = container_of(
        pod(
            {
                "ports": [{"containerPort": 8080, "name": "http"}],
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "initialDelaySeconds": 3,
                    "periodSeconds": 5,
                    "timeoutSeconds": 2,
                    "failureThreshold": 4,
                },
                "readinessProbe": {"tcpSocket": {"port": 8080}, "successThreshold": 2},
                "startupProbe": {"exec": {"command": ["cat", "/ready"]}},
            }
        )
    )
    assert container.liveness_probe is not None
    assert container.liveness_probe.http_get == HttpGetAction(port=8080, path="/healthz")
    assert container.liveness_probe.initial_delay_seconds == 3
    assert container.liveness_probe.period_seconds == 5
    assert container.liveness_probe.timeout_seconds == 2
    assert container.liveness_probe.failure_threshold == 4
    assert container.readiness_probe is not None
    assert container.readiness_probe.tcp_socket == TcpSocketAction(port=8080)
    assert container.readiness_probe.success_threshold == 2
    assert container.startup_probe is not None
    assert container.startup_probe.exec == ExecAction(command=["cat", "/ready"])


def test_volume_mounts() -> None:
    spec = workload(
        pod(
            {
                "volumeMounts": [
                    {"name": "conf", "mountPath": "/etc/app", "readOnly": True},
                    {"name": "conf", "mountPath": "/etc/one.conf", "subPath": "one.conf"},
                    {"name": "conf", "mountPath": "/etc/all", "subPath": ""},
                ]
            },
            volumes=[{"name": "conf", "configMap": {"name": "conf"}}],
        )
    )
    assert spec.template.containers[0].volume_mounts == [
        VolumeMount(name="conf", mount_path="/etc/app", read_only=True),
        VolumeMount(name="conf", mount_path="/etc/one.conf", sub_path="one.conf"),
        VolumeMount(name="conf", mount_path="/etc/all"),
    ]


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        ({"emptyDir": {}}, {"empty_dir": {}}),
        ({"emptyDir": {"sizeLimit": "64Mi"}}, {"empty_dir": {"size_limit": 64 * 2**20}}),
        (
            {"emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"empty_dir": {"size_limit": 2**30}},
        ),
        ({"hostPath": {"path": "/var/log"}}, {"host_path": {"path": "/var/log"}}),
        (
            {
                "configMap": {
                    "name": "conf",
                    "items": [{"key": "a", "path": "dir/a.conf", "mode": 0o600}],
                    "defaultMode": 0o640,
                    "optional": True,
                }
            },
            {
                "config_map": {
                    "name": "conf",
                    "items": [KeyToPath(key="a", path="dir/a.conf", mode=0o600)],
                    "default_mode": 0o640,
                    "optional": True,
                }
            },
        ),
        (
            {"secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"secret": {"name": "creds", "default_mode": 0o400}},
        ),
        (
            {
                "downwardAPI": {
                    "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}],
                    "defaultMode": 0o444,
                }
            },
            {
                "downward_api": {
                    "items": [{"path": "name", "field_path": "metadata.name"}],
                    "default_mode": 0o444,
                }
            },
        ),
        (
            {
                "projected": {
                    "sources": [
                        {"configMap": {"name": "conf"}},
                        {"serviceAccountToken": {"path": "token"}},
                        {"secret": {"name": "creds", "items": [{"key": "k", "path": "k"}]}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                                ]
                            }
                        },
                    ],
                    "defaultMode": 0o440,
                }
            },
            {
                "projected": {
                    "sources": [
                        {"config_map": {"name": "conf"}},
                        {"secret": {"name": "creds", "items": [{"key": "k", "path": "k"}]}},
                        {
                            "downward_api": {
                                "items": [{"path": "labels", "field_path": "metadata.labels"}]
                            }
                        },
                    ],
                    "default_mode": 0o440,
                }
            },
        ),
    ],
)
def test_volumes(volume: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = workload(pod(volumes=[{"name": "v", **volume}]))
    assert spec.template.volumes == [Volume.model_validate({"name": "v", **expected})]


def test_pod_level_fields() -> None:
    spec = workload(
        pod(
            initContainers=[{"name": "setup", "image": "busybox", "command": ["true"]}],
            terminationGracePeriodSeconds=5,
            serviceAccountName="robot",
            imagePullSecrets=[{"name": "regcred"}],
            nodeSelector={"zone": "a"},
        )
    )
    assert [c.name for c in spec.template.init_containers] == ["setup"]
    assert spec.template.termination_grace_period_seconds == 5
    assert spec.template.service_account_name == "robot"
    assert spec.template.image_pull_secrets == ["regcred"]
    assert spec.placement.constraints == {"zone": "a"}


def test_memory_medium_without_size_limit_is_disk_with_a_warning() -> None:
    translation = translate(pod(volumes=[{"name": "v", "emptyDir": {"medium": "Memory"}}]))
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec)
    assert spec.template.volumes[0].empty_dir == EmptyDirVolume()
    [warning] = translation.warnings
    assert warning.startswith("Pod default/web: spec.volumes[0].emptyDir.medium: ignored: ")
    assert "add sizeLimit" in warning


def test_host_path_type_is_ignored_with_a_warning() -> None:
    translation = translate(
        pod(volumes=[{"name": "v", "hostPath": {"path": "/data", "type": "DirectoryOrCreate"}}])
    )
    assert translation.warnings == [
        "Pod default/web: spec.volumes[0].hostPath.type: ignored: Shoal mounts the path as it "
        "is, without checking or creating it"
    ]
