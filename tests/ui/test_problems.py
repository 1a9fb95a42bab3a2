"""The overview's problems list stays bounded however much is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

from shoal.interfaces import Capacity, Instance, InstanceState, Node, PodTemplate, RestartPolicy
from shoal.ui._fragments import MAX_PROBLEMS, problems


def failed(index: int) -> Instance:
    template = PodTemplate.model_validate({"containers": [{"name": "m", "image": "busybox"}]})
    return Instance(
        name=f"web-{index:05d}",
        namespace="default",
        uid=f"uid-{index}",
        workload="web",
        workload_uid="w-uid",
        generation=1,
        restart_policy=RestartPolicy.NEVER,
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
        state=InstanceState.FAILED,
        message="exited 1",
        template=template,
    )


def test_a_thousand_failed_instances_are_fifty_lines_the_last_saying_how_many_more() -> None:
    capacity = Capacity(cpu=1000, memory=1 << 30)
    node = Node(name="n1", capacity=capacity, allocatable=capacity)
    lines = problems([node], [], [failed(i) for i in range(1000)])
    assert len(lines) == MAX_PROBLEMS
    assert lines[0] == "instance default/web-00000 is failed: exited 1"
    assert lines[-1] == "... and 951 more: see the instances and nodes pages"
    few = problems([node], [], [failed(i) for i in range(3)])
    assert len(few) == 3
