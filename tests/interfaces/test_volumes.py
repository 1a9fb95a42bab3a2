"""Pod volumes in the workload model: sources, names, mounts and paths."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from shoal.interfaces import (
    Container,
    InvalidSpec,
    PodSpec,
    PodTemplate,
    Volume,
    VolumeMount,
    parse_workload_documents,
)


def template(
    volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    if mounts is not None:
        container["volume_mounts"] = mounts
    return {"containers": [container], "volumes": volumes}


def problem(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        PodTemplate.model_validate(document)
    return str(caught.value)


def test_a_template_with_scratch_and_host_volumes_parses() -> None:
    parsed = PodTemplate.model_validate(
        template(
            [
                {"name": "scratch", "empty_dir": {"size_limit": "64Mi"}},
                {"name": "logs", "host_path": {"path": "/var/log"}},
            ],
            [
                {"name": "scratch", "mount_path": "/scratch"},
                {"name": "logs", "mount_path": "/host/logs", "read_only": True},
            ],
        )
    )
    scratch, logs = parsed.volumes
    assert scratch.empty_dir is not None
    assert scratch.empty_dir.size_limit == 64 * 2**20
    assert logs.host_path is not None
    assert logs.host_path.path == "/var/log"
    assert [m.read_only for m in parsed.containers[0].volume_mounts] == [False, True]


def test_volumes_and_mounts_default_to_none() -> None:
    parsed = PodTemplate.model_validate({"containers": [{"name": "app", "image": "busybox"}]})
    assert parsed.volumes == []
    assert parsed.containers[0].volume_mounts == []


def test_an_empty_dir_without_a_size_limit_is_unlimited() -> None:
    volume = Volume.model_validate({"name": "scratch", "empty_dir": {}})
    assert volume.empty_dir is not None
    assert volume.empty_dir.size_limit == 0


def test_a_mount_of_an_unknown_volume_names_the_container_and_the_volumes() -> None:
    message = problem(
        template([{"name": "scratch", "empty_dir": {}}], [{"name": "cache", "mount_path": "/c"}])
    )
    assert (
        "container 'app' mounts volume 'cache', which the pod does not define "
        "(its volumes: scratch): add it to the template's volumes or correct the name"
    ) in message


def test_a_mount_without_any_volume_says_there_are_none() -> None:
    message = problem(template([], [{"name": "cache", "mount_path": "/c"}]))
    assert "(its volumes: none)" in message


def test_duplicate_volume_names_are_refused() -> None:
    message = problem(
        template(
            [{"name": "data", "empty_dir": {}}, {"name": "data", "host_path": {"path": "/srv"}}]
        )
    )
    assert "volume name 'data' is used twice" in message


@pytest.mark.parametrize(
    "sources",
    [{}, {"empty_dir": {}, "host_path": {"path": "/srv"}}],
    ids=["neither", "both"],
)
def test_a_volume_needs_exactly_one_source(sources: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="volume 'data' needs exactly one of empty_dir"):
        Volume.model_validate({"name": "data", **sources})


@pytest.mark.parametrize("path", ["srv/data", "", "./data"])
def test_a_relative_host_path_is_refused(path: str) -> None:
    with pytest.raises(ValidationError, match="is relative: give an absolute path"):
        Volume.model_validate({"name": "data", "host_path": {"path": path}})


@pytest.mark.parametrize("path", ["data", "data/sub", ""])
def test_a_relative_mount_path_is_refused(path: str) -> None:
    with pytest.raises(ValidationError, match=r"mount_path '.*' is relative"):
        VolumeMount(name="data", mount_path=path)


def test_dot_dot_is_refused_in_a_host_path() -> None:
    with pytest.raises(ValidationError, match=re.escape("host path '/srv/../etc' contains '..'")):
        Volume.model_validate({"name": "data", "host_path": {"path": "/srv/../etc"}})


def test_dot_dot_is_refused_in_a_mount_path() -> None:
    with pytest.raises(ValidationError, match=re.escape("mount_path '/data/../etc' contains '..'")):
        VolumeMount(name="data", mount_path="/data/../etc")


def test_a_volume_cannot_be_mounted_over_the_root() -> None:
    with pytest.raises(ValidationError, match="mount_path '/' would hide the image"):
        VolumeMount(name="data", mount_path="/")


def test_two_mounts_at_one_path_in_a_container_are_refused() -> None:
    message = problem(
        template(
            [{"name": "a", "empty_dir": {}}, {"name": "b", "empty_dir": {}}],
            [{"name": "a", "mount_path": "/data"}, {"name": "b", "mount_path": "/data/"}],
        )
    )
    assert "container 'app' mounts two volumes at '/data'" in message


def test_unknown_fields_in_a_volume_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Volume.model_validate({"name": "data", "empty_dir": {"medium": "Memory"}})


def test_a_workload_document_error_names_the_template_field_and_the_fix() -> None:
    document = {
        "name": "web",
        "template": template(
            [{"name": "scratch", "empty_dir": {}}], [{"name": "scrach", "mount_path": "/s"}]
        ),
    }
    with pytest.raises(InvalidSpec) as caught:
        parse_workload_documents([document], source="web.yaml")
    assert (
        "web.yaml: document 1 (workload 'web'): field template: container 'app' mounts "
        "volume 'scrach', which the pod does not define"
    ) in caught.value.message


def test_a_pod_spec_checks_its_mounts_against_its_volumes_too() -> None:
    container = Container(
        name="app", image="busybox", volume_mounts=[VolumeMount(name="data", mount_path="/d")]
    )
    with pytest.raises(ValidationError, match="mounts volume 'data', which the pod does not"):
        PodSpec(uid="u1", name="web-1", namespace="default", workload="web", containers=[container])
    pod = PodSpec(
        uid="u1",
        name="web-1",
        namespace="default",
        workload="web",
        containers=[container],
        volumes=[Volume.model_validate({"name": "data", "empty_dir": {}})],
    )
    assert [v.name for v in pod.volumes] == ["data"]
