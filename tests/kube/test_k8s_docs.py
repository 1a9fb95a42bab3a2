"""The Kubernetes documentation's own examples translate unmodified, and mean the same."""

from __future__ import annotations

import base64

import pytest

from shoal.interfaces import (
    ConfigMapSpec,
    EnvVarSource,
    ExecAction,
    HttpGetAction,
    KeyRef,
    RestartPolicy,
    SecretSpec,
    TcpSocketAction,
    UpdateType,
    WorkloadMode,
    WorkloadSpec,
)
from tests.kube.support import DOCS, load


def only_workload(name: str) -> WorkloadSpec:
    translation = load(name)
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec)
    return spec


@pytest.mark.parametrize("path", sorted(p.name for p in DOCS.glob("*.yaml")))
def test_every_example_translates_and_keeps_its_manifest(path: str) -> None:
    translation = load(path)
    assert translation.objects
    for spec in translation.objects:
        assert spec.origin is not None
        assert spec.origin.manifest["kind"] == spec.origin.kind


def test_configmaps_in_flow_style_with_trailing_commas() -> None:
    first, second = load("configmaps.yaml").objects
    assert isinstance(first, ConfigMapSpec)
    assert isinstance(second, ConfigMapSpec)
    assert (first.name, first.namespace, first.data) == (
        "special-config",
        "default",
        {"special.how": "very"},
    )
    assert second.data == {"log_level": "INFO"}


def test_game_demo_configmap_keeps_file_like_keys() -> None:
    [spec] = load("configmap-game-demo.yaml").objects
    assert isinstance(spec, ConfigMapSpec)
    assert spec.data["player_initial_lives"] == "3"
    assert spec.data["game.properties"].startswith("enemy.types=aliens,monsters\n")


def test_configure_pod_reads_env_and_files_from_game_demo() -> None:
    spec = only_workload("configure-pod.yaml")
    [container] = spec.template.containers
    assert container.command == ["sleep", "3600"]
    assert container.env_refs["PLAYER_INITIAL_LIVES"].config_map_key_ref == KeyRef(
        name="game-demo", key="player_initial_lives"
    )
    [volume] = spec.template.volumes
    assert volume.config_map is not None
    assert [(i.key, i.path) for i in volume.config_map.items or []] == [
        ("game.properties", "game.properties"),
        ("user-interface.properties", "user-interface.properties"),
    ]
    assert container.volume_mounts[0].read_only


def test_configmap_env_var_value_from_keeps_variable_references() -> None:
    spec = only_workload("pod-configmap-env-var-valueFrom.yaml")
    [container] = spec.template.containers
    assert container.command == ["/bin/echo", "$(SPECIAL_LEVEL_KEY) $(SPECIAL_TYPE_KEY)"]
    assert set(container.env_refs) == {"SPECIAL_LEVEL_KEY", "SPECIAL_TYPE_KEY"}
    assert spec.restart_policy == RestartPolicy.NEVER
    assert spec.replicas == 1


def test_configmap_env_from_and_volumes() -> None:
    [container] = only_workload("pod-configmap-envFrom.yaml").template.containers
    assert container.env_from[0].config_map == "special-config"
    volume = only_workload("pod-configmap-volume.yaml").template.volumes[0]
    assert volume.config_map is not None and volume.config_map.items is None
    keyed = only_workload("pod-configmap-volume-specific-key.yaml").template.volumes[0]
    assert keyed.config_map is not None
    assert keyed.config_map.items is not None
    assert keyed.config_map.items[0].path == "keys"


def test_secret_and_its_consumers() -> None:
    [spec] = load("secret.yaml").objects
    assert isinstance(spec, SecretSpec)
    assert spec.values() == {"username": b"my-app", "password": b"39528$vdg7Jb"}
    assert spec.origin is not None and "data" not in spec.origin.manifest
    volume = only_workload("secret-pod.yaml").template.volumes[0]
    assert volume.secret is not None and volume.secret.name == "test-secret"
    [container] = only_workload("secret-envars-pod.yaml").template.containers
    assert container.env_refs["SECRET_PASSWORD"] == EnvVarSource(
        secret_key_ref=KeyRef(name="test-secret", key="password")
    )
    [container] = only_workload("pod-secret-envFrom.yaml").template.containers
    assert container.env_from[0].secret == "test-secret"


def test_dapi_envars_pod_fields() -> None:
    [container] = only_workload("dapi-envars-pod.yaml").template.containers
    assert {name: ref.field_path for name, ref in container.env_refs.items()} == {
        "MY_NODE_NAME": "spec.nodeName",
        "MY_POD_NAME": "metadata.name",
        "MY_POD_NAMESPACE": "metadata.namespace",
        "MY_POD_IP": "status.podIP",
        "MY_POD_SERVICE_ACCOUNT": "spec.serviceAccountName",
    }


def test_dapi_envars_container_resources_in_cores_and_bytes() -> None:
    [container] = only_workload("dapi-envars-container.yaml").template.containers
    assert container.resources.requests.cpu == 125
    assert container.resources.limits.memory == 64 * 2**20
    cpu = container.env_refs["MY_CPU_LIMIT"].resource_field_ref
    memory = container.env_refs["MY_MEM_LIMIT"].resource_field_ref
    assert cpu is not None and memory is not None
    # No divisor: Kubernetes' default of 1 means whole cores and bytes.
    assert (cpu.resource, cpu.divisor) == ("limits.cpu", 1000)
    assert (memory.resource, memory.divisor) == ("limits.memory", 1)


def test_dapi_volume_labels_and_annotations() -> None:
    spec = only_workload("dapi-volume.yaml")
    assert spec.template.labels == {
        "zone": "us-est-coast",
        "cluster": "test-cluster1",
        "rack": "rack-22",
    }
    assert spec.template.annotations == {"build": "two", "builder": "john-doe"}
    volume = spec.template.volumes[0].downward_api
    assert volume is not None
    assert [(f.path, f.field_path) for f in volume.items] == [
        ("labels", "metadata.labels"),
        ("annotations", "metadata.annotations"),
    ]


def test_dapi_volume_resources_divisors() -> None:
    volume = only_workload("dapi-volume-resources.yaml").template.volumes[0].downward_api
    assert volume is not None
    divisors = {f.path: f.resource_field_ref.divisor for f in volume.items if f.resource_field_ref}
    assert divisors == {
        "cpu_limit": 1,
        "cpu_request": 1,
        "mem_limit": 2**20,
        "mem_request": 2**20,
    }


def test_nginx_deployment() -> None:
    spec = only_workload("nginx-deployment.yaml")
    assert (spec.name, spec.namespace, spec.replicas) == ("nginx-deployment", "default", 3)
    assert spec.mode == WorkloadMode.REPLICAS
    assert spec.update.type == UpdateType.ROLLING
    assert spec.template.labels == {"app.kubernetes.io/name": "nginx"}
    assert spec.labels == {"app.kubernetes.io/name": "nginx"}
    assert spec.template.containers[0].ports[0].container_port == 80
    assert load("nginx-deployment.yaml").warnings == []


@pytest.mark.parametrize("path", ["fluentd-daemonset.yaml", "daemonset.yaml"])
def test_fluentd_daemonset(path: str) -> None:
    translation = load(path)
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec)
    assert (spec.mode, spec.namespace) == (WorkloadMode.DAEMON, "kube-system")
    assert spec.update.max_unavailable == 1
    assert spec.template.termination_grace_period_seconds == 30
    assert [v.host_path.path for v in spec.template.volumes if v.host_path] == [
        "/var/log",
        "/var/lib/docker/containers",
    ]
    assert translation.warnings == [
        "DaemonSet kube-system/fluentd-elasticsearch: spec.template.spec.tolerations: "
        "ignored: Shoal's nodes have no taints"
    ]
    assert spec.origin is not None
    assert spec.origin.ignored == ["spec.template.spec.tolerations: Shoal's nodes have no taints"]


def test_daemonset_resources() -> None:
    spec = only_workload("daemonset.yaml")
    resources = spec.template.containers[0].resources
    assert (resources.requests.cpu, resources.requests.memory) == (100, 200 * 2**20)
    assert resources.limits.memory == 200 * 2**20


def test_pi_job() -> None:
    spec = only_workload("job.yaml")
    assert spec.mode == WorkloadMode.JOB
    assert spec.restart_policy == RestartPolicy.NEVER
    assert spec.job is not None and spec.job.backoff_limit == 4
    assert spec.job.completions == 1
    assert spec.template.containers[0].command == [
        "perl",
        "-Mbignum=bpi",
        "-wle",
        "print bpi(1000)",
    ]


def test_the_examples_are_unmodified_flow_style() -> None:
    """The fixtures use the flow style with trailing commas the docs use today."""
    text = (DOCS / "secret.yaml").read_text()
    assert text.startswith("---\n{\n") and '"Mzk1MjgkdmRnN0pi",\n  },' in text
    assert base64.b64decode("bXktYXBw") == b"my-app"


def test_probe_examples() -> None:
    [exec_probe] = only_workload("exec-liveness.yaml").template.containers
    assert exec_probe.liveness_probe is not None
    assert exec_probe.liveness_probe.exec == ExecAction(command=["cat", "/tmp/healthy"])
    assert exec_probe.liveness_probe.initial_delay_seconds == 5
    [http] = only_workload("http-liveness.yaml").template.containers
    assert http.liveness_probe is not None
    assert http.liveness_probe.http_get == HttpGetAction(port=8080, path="/healthz")
    assert load("http-liveness.yaml").warnings == [
        "Pod default/liveness-http: spec.containers[0].livenessProbe.httpGet.httpHeaders: "
        "ignored: Shoal's probes send no extra headers"
    ]
    [tcp] = only_workload("tcp-liveness-readiness.yaml").template.containers
    assert tcp.readiness_probe is not None and tcp.liveness_probe is not None
    assert tcp.readiness_probe.tcp_socket == TcpSocketAction(port=8080)
    assert tcp.readiness_probe.period_seconds == 10


def test_init_containers_example() -> None:
    translation = load("init-containers.yaml")
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec)
    [install] = spec.template.init_containers
    assert install.command == ["wget", "-O", "/work-dir/index.html", "http://info.cern.ch"]
    assert spec.template.volumes[0].empty_dir is not None
    assert translation.warnings == [
        "Pod default/init-demo: spec.dnsPolicy: ignored: Shoal configures DNS itself"
    ]


def test_dependent_envars_keep_their_order_and_references() -> None:
    [container] = only_workload("dependent-envars.yaml").template.containers
    assert list(container.env) == [
        "SERVICE_PORT",
        "SERVICE_IP",
        "UNCHANGED_REFERENCE",
        "PROTOCOL",
        "SERVICE_ADDRESS",
        "ESCAPED_REFERENCE",
    ]
    assert container.env["ESCAPED_REFERENCE"] == "$$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"


def test_private_registry_pull_secret() -> None:
    assert only_workload("private-reg-pod.yaml").template.image_pull_secrets == ["regcred"]


def test_node_selector_example() -> None:
    translation = load("pod-nginx.yaml")
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec)
    assert spec.placement.constraints == {"disktype": "ssd"}
    assert [w.split(": ")[1] for w in translation.warnings] == [
        "spec.containers[0].imagePullPolicy"
    ]


def test_projected_service_account_token_is_an_empty_mount_with_a_warning() -> None:
    translation = load("pod-projected-svc-token.yaml")
    [spec] = translation.objects
    assert isinstance(spec, WorkloadSpec)
    assert spec.template.volumes[0].empty_dir is not None
    assert spec.template.containers[0].volume_mounts[0].mount_path == "/var/run/secrets/tokens"
    assert translation.warnings == [
        "Pod default/nginx: spec.volumes[0].projected.sources[0].serviceAccountToken: ignored: "
        "Shoal has no API server, so no service account tokens"
    ]
