"""InstanceFactory: new instances of a workload, and their JSON made from a shared template."""

import json
from datetime import UTC, datetime
from typing import get_type_hints

from shoal.core._placement import _OWN, InstanceFactory, _OwnButState, copy_with
from shoal.interfaces import Instance, InstanceState, ScheduleFailure, Workload, instance_key
from tests.core.support import spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def workload(name: str = "web") -> Workload:
    return Workload(
        name=name,
        namespace="default",
        uid="w1",
        spec=spec(replicas=3),
        created_at=NOW,
        updated_at=NOW,
        trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def test_an_instance_is_stored_as_its_own_json_says() -> None:
    factory = InstanceFactory(NOW)
    wl = workload()
    made = [
        factory.new(wl, factory.fresh_uid(wl), state=InstanceState.SCHEDULED, node=f"n{i}")
        for i in range(3)
    ]
    for inst in made:
        encoded = factory.encode(inst)
        assert Instance.model_validate_json(encoded) == inst
        assert json.loads(encoded) == json.loads(inst.model_dump_json())
    assert len({inst.name for inst in made}) == 3


def test_instances_of_every_status_a_pass_gives_are_stored_as_their_json_says() -> None:
    factory = InstanceFactory(NOW)
    wl = workload()
    failure = ScheduleFailure(message="0/2 nodes fit", nodes={"n1": "cordoned"})
    made = [
        factory.new(wl, factory.fresh_uid(wl), reason="Unschedulable", schedule_failure=failure),
        factory.new(wl, factory.fresh_uid(wl), reason="Unschedulable", message='"quoted" é'),
        factory.new(  # every field of its own at once
            wl,
            factory.fresh_uid(wl),
            state=InstanceState.SCHEDULED,
            node="n1",
            reason="Scheduled",
            message="placed on n1 \u2028 \x00",
            schedule_failure=failure,
        ),
        # A field beyond a new instance's own: encoded whole, not from the prototype's JSON.
        factory.new(wl, factory.fresh_uid(wl), restart_count=2, not_before=NOW),
    ]
    for inst in made:
        encoded = factory.encode(inst)
        assert Instance.model_validate_json(encoded) == inst
        assert json.loads(encoded) == json.loads(inst.model_dump_json())
        again = factory.encode(inst)  # a second time: the whole way, the same document
        assert json.loads(again) == json.loads(encoded)


def test_workloads_sharing_a_template_object_keep_their_own_fields() -> None:
    factory = InstanceFactory(NOW)
    web = workload()
    spec = web.spec.model_copy(update={"name": "other", "namespace": "prod"})
    other = web.model_copy(update={"uid": "w2", "spec": spec})  # the same template object
    assert other.spec.template is web.spec.template
    made = factory.new(web, factory.fresh_uid(web), state=InstanceState.PENDING)
    factory.new(other, factory.fresh_uid(other), state=InstanceState.PENDING)
    assert json.loads(factory.encode(made)) == json.loads(made.model_dump_json())


def test_an_instance_with_another_template_is_encoded_whole() -> None:
    factory = InstanceFactory(NOW)
    wl = workload()
    inst = factory.new(wl, factory.fresh_uid(wl))
    other = wl.spec.template.model_copy(update={"labels": {"tier": "edge"}})
    changed = inst.model_copy(update={"template": other})
    decoded = Instance.model_validate_json(factory.encode(changed))
    assert decoded.template.labels == {"tier": "edge"}
    assert decoded == changed


def test_uids_are_fresh_and_their_names_unique() -> None:
    asked: list[str] = []

    class Existing:  # the first three instances asked about are taken
        def __contains__(self, key: object) -> bool:
            asked.append(str(key))
            return len(asked) <= 3

    factory = InstanceFactory(NOW, Existing())
    wl = workload()
    first = factory.fresh_uid(wl)
    assert len(asked) == 4 and asked[-1] == instance_key("default", f"web-{first[:5]}")
    uids = [first, *(factory.fresh_uid(wl) for _ in range(500))]
    names = {instance_key("default", f"web-{uid[:5]}") for uid in uids}
    assert len(names) == 501 and not names & set(asked[:3])
    assert all(len(uid) == 16 and set(uid) <= set("0123456789abcdef") for uid in uids)


def test_copy_with_makes_what_model_copy_makes() -> None:
    assert not Instance.__private_attributes__, "copy_with assumes no private attributes"
    assert Instance.model_config.get("extra") != "allow", "copy_with assumes no extra fields"
    factory = InstanceFactory(NOW)
    proto = factory.new(workload(), "0123456789abcdef")
    update = {"node": "n1", "state": InstanceState.SCHEDULED, "container_ids": {"main": "c1"}}
    made, expected = copy_with(proto, update), proto.model_copy(update=update)
    assert made == expected and type(made) is Instance
    assert made.__pydantic_fields_set__ == expected.__pydantic_fields_set__
    assert made.model_dump_json() == expected.model_dump_json()
    made.container_ids["other"] = "c2"
    assert "other" not in proto.container_ids and proto.node is None


def test_the_own_fields_encode_writes_are_the_instances_own_fields_but_state() -> None:
    hints = get_type_hints(_OwnButState)
    assert set(hints) == _OWN - {"state"}
    for name, annotation in hints.items():
        assert annotation == Instance.model_fields[name].annotation, name
