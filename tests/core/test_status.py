"""Which instances run a workload's current template (what a rollout counts as updated)."""

from datetime import UTC, datetime

import pytest

from shoal.core._status import runs_current
from shoal.interfaces import Instance, InstanceState, Workload
from tests.core.support import spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CURRENT = spec(image="busybox:2").template
OLD = spec(image="busybox:1").template


def web(revision: int = 3, uid: str = "w1") -> Workload:
    """The workload ``web`` at ``revision``, whose template is CURRENT."""
    return Workload(
        name="web",
        namespace="default",
        uid=uid,
        spec=spec(image="busybox:2"),
        revision=revision,
        created_at=NOW,
        updated_at=NOW,
    )


def made(revision: int, template: object, workload_uid: str = "w1") -> Instance:
    """An instance of ``web`` made at ``revision`` with ``template``."""
    return Instance.model_validate(
        {
            "name": "web-abcde",
            "namespace": "default",
            "uid": "abcde",
            "workload": "web",
            "workload_uid": workload_uid,
            "generation": 1,
            "restart_policy": spec().restart_policy,
            "revision": revision,
            "template": template,
            "state": InstanceState.RUNNING,
            "created_at": NOW,
        }
    )


@pytest.mark.parametrize(
    ("instance", "current"),
    [
        pytest.param(made(3, CURRENT), True, id="made at the current revision"),
        pytest.param(made(2, OLD), False, id="an older revision's template"),
        pytest.param(made(2, CURRENT), True, id="an older revision whose template came back"),
        pytest.param(made(0, CURRENT), True, id="stored before revisions, same template"),
        pytest.param(made(0, OLD), False, id="stored before revisions, another template"),
        pytest.param(
            made(3, OLD, workload_uid="w0"),
            False,
            id="the same revision number of a workload deleted and made again",
        ),
    ],
)
def test_an_instance_runs_the_current_template(instance: Instance, current: bool) -> None:
    assert runs_current(instance, web()) is current
