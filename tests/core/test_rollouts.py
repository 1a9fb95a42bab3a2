"""Rollouts through the real loops (MemoryStore, MockRuntime): budgets, history, undo, pause."""

from __future__ import annotations

import pytest

from shoal.interfaces import Conflict, Expected, InstanceState, InvalidInput, NotFound, Workload
from tests.core.support import Cluster, spec

pytestmark = pytest.mark.anyio


async def ready_count(cluster: Cluster) -> int:
    instances = await cluster.service.list_instances()
    return sum(
        1 for i in instances if i.state == InstanceState.RUNNING and i.ready and not i.deleting
    )


async def roll(cluster: Cluster, rounds: int = 40) -> list[int]:
    """Run control and node passes until nothing changes; return the ready counts seen."""
    seen = []
    for _ in range(rounds):
        before = await cluster.store.revision()
        await cluster.control.reconcile_once()
        seen.append(await ready_count(cluster))
        for loop in cluster.nodes.values():
            await loop.reconcile_once()
            seen.append(await ready_count(cluster))
        if await cluster.store.revision() == before:
            return seen
    raise AssertionError(f"the rollout did not settle in {rounds} rounds")


def images(workload: Workload) -> list[str]:
    return [r.template.containers[0].image for r in workload.revisions]


async def test_a_rolling_update_never_drops_below_replicas_with_max_unavailable_0(
    cluster: Cluster,
) -> None:
    await cluster.add_node("n1")
    update = {"max_surge": 1, "max_unavailable": 0}
    await cluster.service.apply([spec(replicas=3, update=update)])
    await roll(cluster)
    assert await ready_count(cluster) == 3

    await cluster.service.apply([spec(replicas=3, image="busybox:2", update=update)])
    seen = await roll(cluster)
    assert min(seen) >= 3, seen  # never fewer ready than replicas
    instances = await cluster.service.list_instances()
    assert {i.template.containers[0].image for i in instances} == {"busybox:2"}
    assert len(instances) == 3
    workload = await cluster.workload()
    assert workload.revision == 2
    assert (workload.status.updated_replicas, workload.status.available_replicas) == (3, 3)
    assert workload.status.complete_revision == 2
    progressing = next(c for c in workload.status.conditions if c.type == "Progressing")
    assert progressing.reason == "RolloutComplete"
    assert {i.revision for i in instances} == {2}


async def test_history_and_undo_round_trip(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    await cluster.service.apply([spec(replicas=2, image="busybox:2")])
    await cluster.service.scale("web", 3)  # scaling makes no revision
    await roll(cluster)
    workload = await cluster.workload()
    assert [r.number for r in workload.revisions] == [1, 2]
    assert images(workload) == ["busybox", "busybox:2"]

    undone = await cluster.service.rollout_undo("web")
    assert undone.revision == 3
    assert undone.spec.template.containers[0].image == "busybox"
    assert undone.revisions[-1].cause == "undo to revision 1"
    await roll(cluster)
    instances = await cluster.service.list_instances()
    assert {i.template.containers[0].image for i in instances} == {"busybox"}
    assert len(instances) == 3

    # To a given revision; one that is not kept names those that are.
    again = await cluster.service.rollout_undo("web", revision=2)
    assert again.spec.template.containers[0].image == "busybox:2"
    with pytest.raises(NotFound, match="keeps no revision 9: kept are 1, 2, 3, 4"):
        await cluster.service.rollout_undo("web", revision=9)
    events = await cluster.service.list_events(kind="Workload", name="web")
    assert "RolledBack" in {e.reason for e in events}


async def test_a_job_has_no_rollout_to_undo_pause_resume_or_promote(cluster: Cluster) -> None:
    await cluster.service.apply([spec(mode="job", restart_policy="Never")])
    for verb, act in [
        ("undo", cluster.service.rollout_undo("web")),
        ("pause", cluster.service.pause_rollout("web")),
        ("resume", cluster.service.pause_rollout("web", paused=False)),
        ("promote", cluster.service.promote_rollout("web")),
    ]:
        with pytest.raises(Conflict, match=f"is a job: .* no rollout to {verb}"):
            await act
    assert not (await cluster.workload()).spec.paused


async def test_undo_with_no_earlier_revision_is_a_conflict(cluster: Cluster) -> None:
    await cluster.service.apply([spec()])
    with pytest.raises(Conflict, match="no earlier revision to go back to: only revision 1"):
        await cluster.service.rollout_undo("web")
    assert (await cluster.workload()).revision == 1


async def test_history_keeps_only_the_last_revisions(cluster: Cluster) -> None:
    for tag in range(1, 5):
        await cluster.service.apply([spec(image=f"busybox:{tag}", revision_history_limit=2)])
    workload = await cluster.workload()
    assert [r.number for r in workload.revisions] == [3, 4]
    with pytest.raises(NotFound, match="kept are 3, 4"):
        await cluster.service.rollout_undo("web", revision=1)


async def test_a_paused_rollout_stays_paused_when_a_spec_that_does_not_say_is_applied(
    cluster: Cluster,
) -> None:
    await cluster.service.apply([spec(replicas=2)])
    await cluster.service.pause_rollout("web")
    # The manifest as it was, a new image in it: `rollout pause` still holds, as in Kubernetes.
    result = await cluster.service.apply([spec(replicas=2, image="busybox:2")])
    (change,) = result.plan.changes
    assert "paused" not in {c.path for c in change.changes}
    assert (await cluster.workload()).spec.paused
    await cluster.service.apply([spec(replicas=2, image="busybox:2", paused=False)])
    assert not (await cluster.workload()).spec.paused  # said explicitly: resumed


async def test_a_paused_rollout_replaces_nothing_until_resumed(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    await cluster.service.apply([spec(replicas=2)])
    await roll(cluster)
    await cluster.service.pause_rollout("web")
    await cluster.service.apply([spec(replicas=2, image="busybox:2", paused=True)])
    await roll(cluster)
    instances = await cluster.service.list_instances()
    assert {i.template.containers[0].image for i in instances} == {"busybox"}
    workload = await cluster.workload()
    progressing = next(c for c in workload.status.conditions if c.type == "Progressing")
    assert progressing.reason == "RolloutPaused"

    await cluster.service.pause_rollout("web", paused=False)
    await roll(cluster)
    instances = await cluster.service.list_instances()
    assert {i.template.containers[0].image for i in instances} == {"busybox:2"}


@pytest.mark.parametrize(
    ("update", "replicas", "steps"),
    [
        (
            {},
            4,
            [
                "batch 1: start 1, stop 1 old (1/4 updated, 3 old left)",
                "batch 2: start 1, stop 1 old (2/4 updated, 2 old left)",
                "batch 3: start 1, stop 1 old (3/4 updated, 1 old left)",
                "batch 4: start 1, stop 1 old (4/4 updated, 0 old left)",
            ],
        ),
        (
            {"max_surge": "50%", "max_unavailable": 0},
            4,
            [
                "batch 1: start 2, stop 0 old (2/4 updated, 4 old left)",
                "batch 2: start 0, stop 2 old (2/4 updated, 2 old left)",
                "batch 3: start 2, stop 0 old (4/4 updated, 2 old left)",
                "batch 4: start 0, stop 2 old (4/4 updated, 0 old left)",
            ],
        ),
        ({"type": "recreate"}, 2, ["stop all 2 instance(s)", "then start 2 new instance(s)"]),
        (
            {"canary": 1, "max_surge": 1, "max_unavailable": 0},
            2,
            [
                "canaries: start 1 beside the 2 old; then waits for `shoal rollout promote`",
                "batch 2: start 0, stop 1 old (1/2 updated, 1 old left)",
                "batch 3: start 1, stop 0 old (2/2 updated, 1 old left)",
                "batch 4: start 0, stop 1 old (2/2 updated, 0 old left)",
            ],
        ),
    ],
    ids=["defaults", "surge only", "recreate", "canary"],
)
async def test_a_dry_run_says_what_the_rollout_will_do_batch_by_batch(
    cluster: Cluster, update: dict[str, object], replicas: int, steps: list[str]
) -> None:
    await cluster.service.apply([spec(replicas=replicas, update=update)])
    changed = spec(replicas=replicas, image="busybox:2", update=update)
    result = await cluster.service.apply([changed], dry_run=True)
    (change,) = result.plan.changes
    assert change.rollout == steps
    paused = spec(replicas=replicas, image="busybox:2", update=update, paused=True)
    (held,) = (await cluster.service.apply([paused], dry_run=True)).plan.changes
    assert held.rollout == ["paused: nothing is replaced until `shoal rollout resume`"]
    assert held.instances_to_replace == 0 and change.instances_to_replace == replicas


async def test_canaries_run_beside_the_old_instances_until_promoted(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    update = {"canary": 1, "max_surge": 1, "max_unavailable": 0}
    await cluster.service.apply([spec(replicas=3, update=update)])
    await roll(cluster)
    with pytest.raises(Conflict, match="revision 1 of default/web is promoted already"):
        await cluster.service.promote_rollout("web")

    await cluster.service.apply([spec(replicas=3, image="busybox:2", update=update)])
    await roll(cluster)
    images = sorted(i.template.containers[0].image for i in await cluster.service.list_instances())
    assert images == ["busybox", "busybox", "busybox", "busybox:2"]  # one canary beside 3 old
    workload = await cluster.workload()
    progressing = next(c for c in workload.status.conditions if c.type == "Progressing")
    assert progressing.reason == "AwaitingPromotion"
    assert "shoal rollout promote web" in progressing.message

    await cluster.service.promote_rollout("web")
    await roll(cluster)
    instances = await cluster.service.list_instances()
    assert {i.template.containers[0].image for i in instances} == {"busybox:2"}
    assert len(instances) == 3
    workload = await cluster.workload()
    assert workload.promoted_revision == 2
    events = await cluster.service.list_events(kind="Workload", name="web")
    assert "Promoted" in {e.reason for e in events}


def test_more_canaries_than_replicas_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError, match=r"update\.canary is 4 but replicas is 3: use at most 3"):
        spec(replicas=3, update={"canary": 4})


async def test_canaries_with_auto_promote_are_promoted_once_available(cluster: Cluster) -> None:
    await cluster.add_node("n1")
    update = {"canary": 1, "auto_promote": True, "max_surge": 1, "max_unavailable": 0}
    await cluster.service.apply([spec(replicas=3, update=update)])
    await roll(cluster)

    await cluster.service.apply([spec(replicas=3, image="busybox:2", update=update)])
    await roll(cluster)

    instances = await cluster.service.list_instances()
    assert {i.template.containers[0].image for i in instances} == {"busybox:2"}
    assert len(instances) == 3
    workload = await cluster.workload()
    assert workload.promoted_revision == 2
    events = await cluster.service.list_events(kind="Workload", name="web")
    promoted = [e for e in events if e.reason == "Promoted"]
    assert len(promoted) == 1 and "automatically" in promoted[0].message


async def test_a_change_with_an_expected_version_is_made_only_on_that_version(
    cluster: Cluster,
) -> None:
    """A plan's version is checked as the change is written: nothing lands on another one."""
    update = {"canary": 1, "max_surge": 1, "max_unavailable": 0}
    await cluster.service.apply([spec(replicas=3, update=update)])
    await cluster.service.apply([spec(replicas=3, image="busybox:2", update=update)])
    planned = Expected.of(await cluster.workload())
    await cluster.service.apply([spec(replicas=3, image="busybox:3", update=update)])
    changed = await cluster.workload()  # another writer came between the plan and the change
    for act in [
        cluster.service.scale("web", 0, expected=planned),
        cluster.service.rollout_undo("web", expected=planned),
        cluster.service.promote_rollout("web", expected=planned),
        cluster.service.pause_rollout("web", expected=planned),
        cluster.service.delete_workload("web", expected=planned),
    ]:
        with pytest.raises(Conflict, match=r"changed since this change was planned \(generation"):
            await act
    assert await cluster.workload() == changed  # nothing was written

    await cluster.service.delete_workload("web")
    await cluster.control.reconcile_once()  # no instances: the workload goes
    await cluster.service.apply([spec(replicas=3, update=update)])
    again = await cluster.workload()
    with pytest.raises(Conflict, match="was deleted and made again since this change was planned"):
        await cluster.service.scale("web", 0, expected=Expected(uid=changed.uid, generation=1))
    assert (await cluster.workload()) == again

    now = Expected.of(again)
    assert (await cluster.service.scale("web", 5, expected=now)).spec.replicas == 5
    with pytest.raises(Conflict, match="generation 1, now 2"):  # the scale made generation 2
        await cluster.service.delete_workload("web", expected=now)


def test_an_expected_version_travels_as_an_if_match_header() -> None:
    expected = Expected(uid="0a1b2c3d4e5f6071", generation=12)
    assert expected.etag() == '"0a1b2c3d4e5f6071/12"'
    assert Expected.from_etag(expected.etag()) == expected
    for bad in ["0a1b/12", '"0a1b"', '"0a1b/0"', '"0A1B/1"', '"a/1", "b/2"', "*", '"/3"']:
        with pytest.raises(InvalidInput, match="is not an object's version"):
            Expected.from_etag(bad)
