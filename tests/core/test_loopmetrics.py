"""The leader's gauges and SLIs: pending reasons, counts by state, restarts, reschedule time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shoal.agent._metrics import PrometheusMetrics
from shoal.core import ManualClock
from shoal.core._loopmetrics import (
    PENDING_REASONS,
    ChangeMetrics,
    cluster_samples,
    pending_reason,
)
from shoal.interfaces import (
    Catalogue,
    GossipState,
    Instance,
    InstanceState,
    Node,
    PodTemplate,
    RestartPolicy,
    ScheduleFailure,
)


def instance(name: str, state: InstanceState, **fields: object) -> Instance:
    return Instance.model_validate(
        {
            "name": name,
            "namespace": "shop",
            "uid": f"u-{name}",
            "workload": "web",
            "workload_uid": "w1",
            "generation": 1,
            "template": PodTemplate.model_validate({"containers": [{"name": "c", "image": "b"}]}),
            "restart_policy": RestartPolicy.ALWAYS,
            "state": state,
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("nodes", "reason"),
    [
        ({"a": "insufficient cpu: requests 2, free 1 of 4"}, "insufficient_cpu"),
        (
            {
                "a": "insufficient memory: requests 1Gi, free 0 of 1Gi",
                "b": "insufficient memory: requests 1Gi, free 0 of 1Gi",
                "c": "node is cordoned",
            },
            "insufficient_memory",
        ),
        ({"a": "node is failed"}, "node_not_ready"),
        ({"a": "constraint zone='x' not met (node has missing)"}, "constraint"),
        ({"a": "host port 80/tcp already in use"}, "host_port"),
        ({"a": "too many instances (10 of 10)"}, "too_many_instances"),
        ({"a": "something new"}, "other"),
        ({}, "no_nodes"),
    ],
)
def test_a_placement_failure_maps_to_a_bounded_reason(nodes: dict[str, str], reason: str) -> None:
    assert pending_reason(ScheduleFailure(message="0/n nodes fit", nodes=nodes)) == reason
    assert reason in PENDING_REASONS


def test_cluster_gauges_report_every_state_and_reason_zeros_included() -> None:
    failure = ScheduleFailure(message="0/1", nodes={"a": "insufficient cpu: no"})
    instances = [
        instance("a", InstanceState.RUNNING),
        instance("b", InstanceState.RUNNING),
        instance("c", InstanceState.PENDING, schedule_failure=failure),
    ]
    nodes = [Node(name="a"), Node(name="b", state=GossipState.FAILED)]
    samples = {
        (spec.name, labels): value for spec, labels, value in cluster_samples(instances, nodes, 3)
    }
    assert samples[Catalogue.INSTANCES.name, ("running",)] == 2
    assert samples[Catalogue.INSTANCES.name, ("lost",)] == 0
    assert samples[Catalogue.PENDING_INSTANCES.name, ("insufficient_cpu",)] == 1
    assert samples[Catalogue.GOSSIP_MEMBERS.name, ("failed",)] == 1
    assert samples[Catalogue.WORKQUEUE_DEPTH.name, ("control",)] == 3
    states = {labels for name, labels in samples if name == Catalogue.INSTANCES.name}
    assert states == {(s.value,) for s in InstanceState}


def test_restarts_are_counted_and_a_replacement_times_the_reschedule() -> None:
    clock, metrics = ManualClock(), PrometheusMetrics()
    changes = ChangeMetrics(clock, metrics)
    first = instance("a", InstanceState.RUNNING)
    changes.instance_changed(None, first)  # listed: no transition seen, nothing counted
    restarted = first.model_copy(update={"state": InstanceState.SCHEDULED, "restart_count": 1})
    changes.instance_changed(first, restarted)
    assert metrics.count(Catalogue.INSTANCE_RESTARTS) == 1

    lost = first.model_copy(update={"state": InstanceState.LOST})
    changes.instance_changed(first, lost)
    clock.advance(12.5)
    replacement = instance("b", InstanceState.STARTING)
    changes.instance_changed(None, replacement)
    changes.instance_changed(
        replacement, replacement.model_copy(update={"state": InstanceState.RUNNING})
    )
    assert metrics.count(Catalogue.RESCHEDULE_DURATION) == 1
    assert metrics.quantile(Catalogue.RESCHEDULE_DURATION, 0.5) == pytest.approx(12.5, abs=5)
    # A later start of the same workload, with no loss pending, is no reschedule.
    changes.instance_changed(None, instance("c", InstanceState.RUNNING))
    assert metrics.count(Catalogue.RESCHEDULE_DURATION) == 1
