"""From an instance to its pod: variables, $(NAME) expansion, file volumes, missing config."""

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shoal.core._podspec import (
    Configs,
    MissingConfig,
    PodFacts,
    build_pod,
    expand,
    files_digest,
    pull_credentials,
)
from shoal.interfaces import ConfigMapSpec, Instance, PodTemplate, RestartPolicy, SecretSpec

FACTS = PodFacts(host_ip="198.18.0.1", node_cpu=2000, node_memory=4 << 30)
SETTINGS = ConfigMapSpec(name="settings", data={"mode": "fast", "level": "3"})
CREDS = SecretSpec.model_validate({"name": "creds", "string_data": {"password": "pw"}})
ALL: Configs = {("ConfigMap", "settings"): SETTINGS, ("Secret", "creds"): CREDS}


def instance(**template: Any) -> Instance:
    template.setdefault("containers", [{"name": "c", "image": "busybox"}])
    return Instance(
        name="web-abcde",
        namespace="shop",
        uid="u1",
        workload="web",
        workload_uid="w1",
        generation=1,
        template=PodTemplate.model_validate(template),
        restart_policy=RestartPolicy.ALWAYS,
        node="node-1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def env_of(container: dict[str, Any], configs: Configs = ALL) -> dict[str, str]:
    pod = build_pod(instance(containers=[{"name": "c", "image": "b", **container}]), configs, FACTS)
    return pod.containers[0].env


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("$(A)-$(B)", {"A": "1", "B": "2"}, "1-2"),
        ("$(MISSING) stays", {}, "$(MISSING) stays"),
        ("$$(A) is escaped", {"A": "1"}, "$(A) is escaped"),
        ("$(date) in a shell", {}, "$(date) in a shell"),
        ("price: $$5", {}, "price: $5"),
    ],
)
def test_expansion_follows_kubernetes(text: str, env: dict[str, str], expected: str) -> None:
    assert expand(text, env) == expected


def test_env_from_then_env_then_refs_with_prefix_and_expansion() -> None:
    env = env_of(
        {
            "env_from": [{"config_map": "settings", "prefix": "CFG_"}],
            "env": {"GREETING": "mode=$(CFG_mode)"},
            "env_refs": {
                "PASSWORD": {"secret_key_ref": {"name": "creds", "key": "password"}},
                "POD": {"field_path": "metadata.name"},
                "NS": {"field_path": "metadata.namespace"},
                "NODE": {"field_path": "spec.nodeName"},
                "HOST": {"field_path": "status.hostIP"},
            },
        }
    )
    assert env == {
        "CFG_mode": "fast",
        "CFG_level": "3",
        "GREETING": "mode=fast",
        "PASSWORD": "pw",
        "POD": "web-abcde",
        "NS": "shop",
        "NODE": "node-1",
        "HOST": "198.18.0.1",
    }


def test_command_and_args_expand_against_the_final_environment() -> None:
    template = {
        "name": "c",
        "image": "b",
        "command": ["/bin/echo", "$(LEVEL) $(MODE)"],
        "args": ["$$(LITERAL)"],
        "env_refs": {
            "LEVEL": {"config_map_key_ref": {"name": "settings", "key": "level"}},
            "MODE": {"config_map_key_ref": {"name": "settings", "key": "mode"}},
        },
    }
    pod = build_pod(instance(containers=[template]), ALL, FACTS)
    assert pod.containers[0].command == ["/bin/echo", "3 fast"]
    assert pod.containers[0].args == ["$(LITERAL)"]
    assert pod.containers[0].env_refs == {}


def test_resource_refs_read_limits_requests_and_the_node_when_unset() -> None:
    env = env_of(
        {
            "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
            "env_refs": {
                "MEM_MI": {"resource_field_ref": {"resource": "limits.memory", "divisor": 1 << 20}},
                "CPU_M": {"resource_field_ref": {"resource": "requests.cpu"}},
                "CPU_LIMIT_CORES": {
                    "resource_field_ref": {"resource": "limits.cpu", "divisor": 1000}
                },
            },
        }
    )
    assert env == {"MEM_MI": "64", "CPU_M": "250", "CPU_LIMIT_CORES": "2"}


@pytest.mark.parametrize(
    ("container", "configs", "message"),
    [
        ({"env_from": [{"config_map": "nope"}]}, ALL, "ConfigMap 'nope' does not exist"),
        (
            {"env_refs": {"X": {"secret_key_ref": {"name": "creds", "key": "user"}}}},
            ALL,
            "Secret 'creds' has no key 'user'",
        ),
        (
            {"env_refs": {"X": {"config_map_key_ref": {"name": "settings", "key": "mode"}}}},
            {("ConfigMap", "settings"): None},
            "ConfigMap 'settings' does not exist",
        ),
    ],
)
def test_a_missing_reference_makes_the_pod_wait(
    container: dict[str, Any], configs: Configs, message: str
) -> None:
    with pytest.raises(MissingConfig, match=message):
        env_of(container, configs)


def test_optional_references_are_left_out() -> None:
    env = env_of(
        {
            "env_from": [{"secret": "nope", "optional": True}],
            "env_refs": {
                "X": {"config_map_key_ref": {"name": "settings", "key": "no", "optional": True}},
                "Y": {"secret_key_ref": {"name": "gone", "key": "k", "optional": True}},
            },
        },
        {**ALL, ("Secret", "nope"): None, ("Secret", "gone"): None},
    )
    assert env == {}


def test_file_volumes_items_modes_and_downward_api() -> None:
    inst = instance(
        labels={"app": "web", "tier": 'front "end"'},
        volumes=[
            {"name": "all", "config_map": {"name": "settings"}},
            {
                "name": "some",
                "secret": {
                    "name": "creds",
                    "default_mode": 0o400,
                    "items": [{"key": "password", "path": "db/password"}],
                },
            },
            {
                "name": "info",
                "downward_api": {
                    "items": [
                        {"path": "labels", "field_path": "metadata.labels"},
                        {"path": "name", "field_path": "metadata.name", "mode": 0o600},
                    ]
                },
            },
            {"name": "scratch", "empty_dir": {}},
        ],
    )
    files = build_pod(inst, ALL, FACTS).files
    shown = {v: [(f.path, f.data, oct(f.mode)) for f in fs] for v, fs in files.items()}
    assert shown == {
        "all": [("level", b"3", "0o644"), ("mode", b"fast", "0o644")],
        "some": [("db/password", b"pw", "0o400")],
        "info": [
            ("labels", b'app="web"\ntier="front \\"end\\""\n', "0o644"),
            ("name", b"web-abcde", "0o600"),
        ],
    }


def test_projected_volumes_merge_sources_and_digests_follow_content() -> None:
    volume = {
        "name": "all",
        "projected": {
            "sources": [
                {"config_map": {"name": "settings", "items": [{"key": "mode", "path": "m"}]}},
                {"secret": {"name": "creds"}},
                {"downward_api": {"items": [{"path": "ns", "field_path": "metadata.namespace"}]}},
            ]
        },
    }
    pod = build_pod(instance(volumes=[volume]), ALL, FACTS)
    assert [(f.path, f.data) for f in pod.files["all"]] == [
        ("m", b"fast"),
        ("password", b"pw"),
        ("ns", b"shop"),
    ]
    changed: Configs = {
        **ALL,
        ("ConfigMap", "settings"): ConfigMapSpec(name="settings", data={"mode": "slow"}),
    }
    again = build_pod(instance(volumes=[volume]), ALL, FACTS)
    assert files_digest(again.files) == files_digest(pod.files)
    assert files_digest(
        build_pod(instance(volumes=[volume]), changed, FACTS).files
    ) != files_digest(pod.files)


def test_a_missing_key_of_a_listed_item_waits_unless_optional() -> None:
    volume = {"name": "v", "config_map": {"name": "settings", "items": [{"key": "x", "path": "x"}]}}
    with pytest.raises(MissingConfig, match="has no key 'x'"):
        build_pod(instance(volumes=[volume]), ALL, FACTS)
    volume["config_map"]["optional"] = True  # type: ignore[index]
    assert build_pod(instance(volumes=[volume]), ALL, FACTS).files == {"v": []}


def test_the_pod_ip_is_left_to_the_runtime_which_alone_knows_it() -> None:
    template = {
        "name": "c",
        "image": "b",
        "env_refs": {
            "MY_POD_IP": {"field_path": "status.podIP"},
            "MY_NAME": {"field_path": "metadata.name"},
        },
    }
    pod = build_pod(instance(containers=[template]), ALL, FACTS)
    assert pod.pod_ip_env == {"c": ["MY_POD_IP"]}
    assert pod.with_pod_ip("198.18.0.7").containers[0].env == {
        "MY_POD_IP": "198.18.0.7",
        "MY_NAME": "web-abcde",
    }


def test_image_pull_secrets_become_credentials_by_registry() -> None:
    config = {
        "auths": {
            "198.18.0.9:5000": {"auth": base64.b64encode(b"ada:pw1").decode()},
            "https://registry.test/v1/": {"username": "bob", "password": "pw2"},
        }
    }
    pull = SecretSpec.model_validate(
        {
            "name": "pull",
            "type": "kubernetes.io/dockerconfigjson",
            "string_data": {".dockerconfigjson": json.dumps(config)},
        }
    )
    inst = instance(image_pull_secrets=["pull", "missing"])
    configs: Configs = {("Secret", "pull"): pull, ("Secret", "missing"): None}
    assert pull_credentials(inst, configs) == {
        "198.18.0.9:5000": ("ada", "pw1"),
        "registry.test": ("bob", "pw2"),
    }


def test_the_pod_ip_reaches_args_that_name_it() -> None:
    template = {
        "name": "c",
        "image": "b",
        "args": ["--bind=$(POD_IP):8080"],
        "env": {"URL": "http://$(POD_IP)/"},
        "env_refs": {"POD_IP": {"field_path": "status.podIP"}},
    }
    pod = build_pod(instance(containers=[template]), ALL, FACTS).with_pod_ip("198.18.0.7")
    assert pod.containers[0].args == ["--bind=198.18.0.7:8080"]
    assert pod.containers[0].env == {"URL": "http://198.18.0.7/", "POD_IP": "198.18.0.7"}
