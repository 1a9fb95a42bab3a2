"""The loops and configuration: pods wait for what they use, files follow, pulls get credentials."""

import json

import pytest

from shoal.interfaces import (
    ConfigMapSpec,
    InstanceState,
    SecretSpec,
    WorkloadSpec,
)
from tests.core.support import Cluster

pytestmark = pytest.mark.anyio

IMAGE = "198.18.0.9:5000/app:1"


def web() -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": "web",
            "template": {
                "containers": [
                    {
                        "name": "c",
                        "image": IMAGE,
                        "env_refs": {
                            "MODE": {"config_map_key_ref": {"name": "settings", "key": "mode"}}
                        },
                        "volume_mounts": [{"name": "conf", "mount_path": "/etc/app"}],
                    }
                ],
                "volumes": [{"name": "conf", "config_map": {"name": "settings"}}],
                "image_pull_secrets": ["pull"],
            },
        }
    )


def settings(mode: str) -> ConfigMapSpec:
    return ConfigMapSpec(name="settings", data={"mode": mode})


async def test_a_pod_waits_for_its_configmap_then_starts_and_follows_it(cluster: Cluster) -> None:
    await cluster.add_node("node-1")
    runtime = cluster.runtimes["node-1"]
    await cluster.service.apply([web()])
    await cluster.settle()

    (waiting,) = await cluster.service.list_instances()
    assert waiting.state == InstanceState.SCHEDULED
    assert waiting.reason == "CreateContainerConfigError"
    assert "ConfigMap 'settings' does not exist" in waiting.message
    events = [e for e in await cluster.service.list_events() if e.reason == waiting.reason]
    assert len(events) == 1
    explained = await cluster.service.explain(waiting.name)
    assert explained.summary.startswith("placed on node node-1; not started yet: ")
    assert "ConfigMap 'settings' does not exist" in explained.summary

    await cluster.service.apply([settings("fast")])
    await cluster.settle()
    (running,) = await cluster.service.list_instances()
    assert running.state == InstanceState.RUNNING
    assert runtime.file(running.uid, "c", "/etc/app/mode").data == b"fast"

    await cluster.service.apply([settings("slow")])
    await cluster.settle()
    assert runtime.file(running.uid, "c", "/etc/app/mode").data == b"slow"
    (still,) = await cluster.service.list_instances()
    assert still.uid == running.uid  # files change in place; the pod is not replaced
    reasons = [e.reason for e in await cluster.service.list_events()]
    assert reasons.count("FilesUpdated") == 1


async def test_image_pull_secrets_reach_the_runtimes_pull(cluster: Cluster) -> None:
    await cluster.add_node("node-1")
    config = {"auths": {"198.18.0.9:5000": {"username": "ada", "password": "pw"}}}
    pull = SecretSpec.model_validate(
        {
            "name": "pull",
            "type": "kubernetes.io/dockerconfigjson",
            "string_data": {".dockerconfigjson": json.dumps(config)},
        }
    )
    await cluster.service.apply([settings("fast"), pull, web()])
    await cluster.settle()

    assert cluster.runtimes["node-1"].pull_credentials[IMAGE] == {"198.18.0.9:5000": ("ada", "pw")}
