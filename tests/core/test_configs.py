"""ConfigMaps, Secrets and Namespaces through ShoalService: apply, plans, reads, deletes."""

import base64
from typing import Any, cast

import pytest

from shoal.core import ShoalService
from shoal.interfaces import (
    CONFIG_HASH_ANNOTATION,
    ROLL_ON_CONFIG_ANNOTATION,
    ChangeAction,
    ConfigMapSpec,
    Conflict,
    Expected,
    NamespaceSpec,
    NotFound,
    SecretSpec,
    StateStore,
    WorkloadSpec,
)
from tests.core.support import Cluster

pytestmark = pytest.mark.anyio

PASSWORD = "s3cr3t-value-never-shown"


def web(*, roll: bool = False, image: str = "busybox:1.36") -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": "web",
            "annotations": {ROLL_ON_CONFIG_ANNOTATION: "true"} if roll else {},
            "template": {
                "containers": [
                    {
                        "name": "c",
                        "image": image,
                        "env_from": [{"config_map": "settings"}],
                        "env_refs": {
                            "PASSWORD": {"secret_key_ref": {"name": "creds", "key": "password"}}
                        },
                    }
                ]
            },
        }
    )


def settings(**data: str) -> ConfigMapSpec:
    return ConfigMapSpec(name="settings", data=data)


def creds(password: str = PASSWORD) -> SecretSpec:
    return SecretSpec.model_validate({"name": "creds", "string_data": {"password": password}})


async def test_apply_stores_every_kind_in_one_transaction(cluster: Cluster) -> None:
    service = cluster.service
    result = await service.apply([settings(mode="fast"), creds(), web(), NamespaceSpec(name="ops")])

    assert result.applied
    assert [c.kind for c in result.plan.changes] == ["ConfigMap", "Secret", "Workload", "Namespace"]
    assert all(c.action == ChangeAction.CREATE for c in result.plan.changes)
    assert (await service.get_config_map("settings")).spec.data == {"mode": "fast"}
    view = await service.get_secret("creds")
    assert view.sizes == {"password": len(PASSWORD)}
    assert view.data is None
    assert [n.spec.name for n in await service.list_namespaces()] == ["default", "ops"]


async def test_a_secrets_values_appear_in_no_plan_result_or_event(cluster: Cluster) -> None:
    service = cluster.service
    await service.apply([creds()])
    result = await service.apply([creds("another-secret-value")], dry_run=True)

    change = result.plan.changes[0]
    assert change.action == ChangeAction.UPDATE
    everything = result.model_dump_json() + "".join(
        e.model_dump_json() for e in await service.list_events()
    )
    encoded = base64.b64encode(b"another-secret-value").decode()
    for secret in (PASSWORD, "another-secret-value", encoded):
        assert secret not in everything
    assert [c.path for c in change.changes] == ["data.password"]


async def test_values_are_shown_only_when_asked_and_that_is_recorded(cluster: Cluster) -> None:
    service = cluster.service
    await service.apply([creds()])

    shown = await service.get_secret("creds", show_values=True)

    assert shown.data is not None
    assert base64.b64decode(shown.data["password"]).decode() == PASSWORD
    reasons = [e.reason for e in await service.list_events()]
    assert "ValuesShown" in reasons
    assert all(s.data is None for s in await service.list_secrets())


async def test_an_immutable_configmap_refuses_a_change_and_applies_nothing(
    cluster: Cluster,
) -> None:
    service = cluster.service
    frozen = ConfigMapSpec(name="settings", data={"a": "1"}, immutable=True)
    await service.apply([frozen])

    with pytest.raises(Conflict, match=r"immutable.*delete it"):
        await service.apply(
            [web(), ConfigMapSpec(name="settings", data={"a": "2"}, immutable=True)]
        )

    assert await service.list_workloads() == []
    assert (await service.apply([frozen])).plan.changes[0].action == ChangeAction.UNCHANGED


async def test_a_workload_that_asks_rolls_when_its_configuration_changes(cluster: Cluster) -> None:
    service = cluster.service
    await service.apply([settings(mode="fast"), creds(), web(roll=True)])
    first = await service.get_workload("web")
    assert CONFIG_HASH_ANNOTATION in first.spec.template.annotations

    again = await service.apply([settings(mode="fast"), creds(), web(roll=True)])
    assert {c.action for c in again.plan.changes} == {ChangeAction.UNCHANGED}

    changed = await service.apply([settings(mode="slow")])

    assert [(c.kind, c.name, c.action) for c in changed.plan.changes] == [
        ("ConfigMap", "settings", ChangeAction.UPDATE),
        ("Workload", "web", ChangeAction.UPDATE),
    ]
    rolled = await service.get_workload("web")
    assert rolled.revision == first.revision + 1
    assert "configuration it uses changed" in rolled.revisions[-1].cause


async def test_a_workload_that_does_not_ask_keeps_its_template(cluster: Cluster) -> None:
    service = cluster.service
    await service.apply([settings(mode="fast"), web()])

    changed = await service.apply([settings(mode="slow")])

    assert [c.kind for c in changed.plan.changes] == ["ConfigMap"]
    assert (await service.get_workload("web")).revision == 1


async def test_deletes_and_their_refusals(cluster: Cluster) -> None:
    service = cluster.service
    await service.apply([NamespaceSpec(name="ops"), ConfigMapSpec(name="c", namespace="ops")])

    with pytest.raises(Conflict, match="still holds configmaps"):
        await service.delete_config("Namespace", "ops")
    await service.delete_config("ConfigMap", "c", "ops")
    await service.delete_config("Namespace", "ops")

    with pytest.raises(NotFound, match="shoal get secrets"):
        await service.delete_config("Secret", "nope")
    assert [n.spec.name for n in await service.list_namespaces()] == ["default"]


async def test_the_same_object_twice_in_one_apply_is_refused(cluster: Cluster) -> None:
    with pytest.raises(Exception, match="ConfigMap default/settings appears twice"):
        await cluster.service.apply([settings(), settings(a="b")])


async def test_the_configuration_hash_is_keyed_so_it_tells_nothing_of_a_secret(
    cluster: Cluster,
) -> None:
    service = cluster.service
    service.config_hash_key = b"one server secret"
    await service.apply([settings(mode="fast"), creds(), web(roll=True)])
    first = (await service.get_workload("web")).spec.template.annotations[CONFIG_HASH_ANNOTATION]

    other = service.with_actor(service.actor)
    other.config_hash_key = b"another server secret"
    planned = await other.apply([web(roll=True)], dry_run=True)

    assert planned.plan.changes[0].action == ChangeAction.UPDATE  # only the key differs
    assert [c.path for c in planned.plan.changes[0].changes] == [
        f"template.annotations.{CONFIG_HASH_ANNOTATION}"
    ]
    (change,) = planned.plan.changes[0].changes
    assert change.old == first and change.new != first


class _GoneFirst:
    """A store on which another writer deletes a key just before this one's delete."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        await self.inner.delete(key)
        return await self.inner.delete(key, expected_revision=expected_revision)


async def test_a_config_gone_before_its_expected_delete_is_not_found(cluster: Cluster) -> None:
    await cluster.service.apply([ConfigMapSpec(name="c", data={"k": "v"})])
    planned = Expected.of(await cluster.service.get_config_map("c"))
    racing = ShoalService(cast(StateStore, _GoneFirst(cluster.store)), cluster.clock)
    with pytest.raises(NotFound, match="configmap default/c not found"):
        await racing.delete_config("ConfigMap", "c", expected=planned)
