"""The watched manifests directory: ManifestWatcher over an in-process service and tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from shoal.core import ManualClock, ShoalService
from shoal.interfaces import (
    MANIFEST_ANNOTATION,
    Actor,
    ApplyResult,
    Conflict,
    ManifestSource,
    Via,
    Workload,
    WorkloadSpec,
)
from shoal.kube import ManifestWatcher, is_manifest_name, manifest_of
from shoal.state import MemoryStore

pytestmark = pytest.mark.anyio

DEBOUNCE = 0.2
"""Short, so that the tests are quick; the debounce itself is tested with its own value."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def workload(name: str, replicas: int = 1, image: str = "busybox:1.36") -> str:
    return (
        f"kind: Workload\nname: {name}\nreplicas: {replicas}\n"
        f"template:\n  containers:\n    - name: main\n      image: {image}\n"
    )


def documents(*texts: str) -> str:
    return "---\n".join(texts)


@pytest.fixture
async def service() -> AsyncIterator[ShoalService]:
    clock = ManualClock()
    async with MemoryStore(clock=clock) as store:
        yield ShoalService(store, clock, Actor(id="manifests@n1", via=Via.SYSTEM))


@asynccontextmanager
async def watching(
    service: ShoalService, directory: Path, *, node: str = "n1", debounce: float = DEBOUNCE
) -> AsyncIterator[ManifestWatcher]:
    watcher = ManifestWatcher(service, [directory], node, debounce=debounce, relist=30)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        yield watcher
        tg.cancel_scope.cancel()


async def live(service: ShoalService) -> dict[str, Workload]:
    """Return the workloads not being deleted, by name."""
    return {w.name: w for w in await service.list_workloads() if not w.deleting}


async def until(check: Callable[[], object], what: str, within: float = 10) -> None:
    """Poll ``check`` (sync or async) until it is true, bounded by ``within`` seconds."""
    with anyio.fail_after(within):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)
    raise AssertionError(what)  # pragma: no cover


def status(watcher: ManifestWatcher, path: Path) -> ManifestSource:
    (found,) = [s for s in watcher.statuses() if s.path == str(path)]
    return found


async def names(service: ShoalService) -> set[str]:
    return set(await live(service))


async def settled(watcher: ManifestWatcher, passes: int) -> None:
    """Wait until the watcher read ``passes`` more files than it had."""
    target = watcher.passes + passes
    await until(lambda: watcher.passes >= target, f"{passes} more passes")


# --- names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("web.yaml", True),
        ("web.yml", True),
        ("web.json", True),
        (".web.yaml", False),
        ("web.yaml~", False),
        ("web.yaml.swp", False),
        (".web.yaml.swp", False),
        ("web.yaml.swo", False),
        ("web.yaml.bak", False),
        ("web.yaml.tmp", False),
        ("4913", False),
        ("web.txt", False),
        ("README.md", False),
    ],
)
def test_only_manifests_count(name: str, wanted: bool) -> None:
    assert is_manifest_name(name) is wanted


def test_a_skip_marker_concerns_its_file() -> None:
    assert manifest_of("/m/web.yaml.skip") == "/m/web.yaml"
    assert manifest_of("/m/web.yaml") == "/m/web.yaml"
    assert manifest_of("/m/.web.yaml.skip") is None
    assert manifest_of("/m/notes.skip") is None


# --- the lifecycle ----------------------------------------------------------


async def test_add_edit_break_fix_remove_and_delete(service: ShoalService, tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(documents(workload("web"), workload("api")))
    async with watching(service, tmp_path) as watcher:
        # applied on start, each object annotated with its file
        assert await names(service) == {"web", "api"}
        stored = (await live(service))["web"]
        assert stored.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{web}"
        first = status(watcher, web)
        assert first.objects == ["Workload default/api", "Workload default/web"]
        assert first.hash == first.applied_hash and first.applied_at is not None
        assert first.error == ""

        # edit
        web.write_text(documents(workload("web", replicas=3), workload("api")))
        await until(lambda: _replicas(service, "web", 3), "the edit is applied")

        # break: the error is recorded, the objects keep running as they were
        web.write_text("kind: Workload\nname: [web\n")
        await until(lambda: status(watcher, web).error, "the error is recorded")
        broken = status(watcher, web)
        assert str(web) in broken.error and "line" in broken.error
        assert broken.hash != broken.applied_hash
        assert broken.objects == ["Workload default/api", "Workload default/web"]
        assert (await live(service))["web"].spec.replicas == 3

        # an invalid field: the same, naming the field
        web.write_text(documents(workload("web", replicas=-1), workload("api")))
        await until(lambda: "replicas" in status(watcher, web).error, "the field is named")
        assert (await live(service))["web"].spec.replicas == 3

        # fix
        web.write_text(documents(workload("web", replicas=2), workload("api")))
        await until(lambda: _replicas(service, "web", 2), "the fix is applied")
        await until(lambda: status(watcher, web).error == "", "the error is cleared")

        # remove an object from the file: it is pruned
        web.write_text(workload("web", replicas=2))
        await until(lambda: _gone(service, "api"), "api is pruned")
        assert status(watcher, web).objects == ["Workload default/web"]

        # delete the file: what it owns is pruned, and it is no longer listed
        web.unlink()
        await until(lambda: _gone(service, "web"), "web is pruned")
        assert watcher.statuses() == []
        events = await service.list_events(kind="Manifest", name=str(web))
        reasons = [e.reason for e in events]
        assert "ManifestFailed" in reasons and "ManifestApplied" in reasons


async def _replicas(service: ShoalService, name: str, replicas: int) -> bool:
    found = (await live(service)).get(name)
    return found is not None and found.spec.replicas == replicas


async def _gone(service: ShoalService, name: str) -> bool:
    return name not in await live(service)


async def test_a_new_file_is_applied_after_the_debounce(
    service: ShoalService, tmp_path: Path
) -> None:
    async with watching(service, tmp_path, debounce=0.5) as watcher:
        started = anyio.current_time()
        (tmp_path / "web.yml").write_text(workload("web"))
        await until(lambda: _replicas(service, "web", 1), "web.yml is applied")
        assert anyio.current_time() - started >= 0.5
        assert [s.path for s in watcher.statuses()] == [str(tmp_path / "web.yml")]


async def test_json_files_and_lists(service: ShoalService, tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(
        '{"kind": "Workload", "name": "one", "template": {"containers": '
        '[{"name": "main", "image": "busybox:1.36"}]}}'
    )
    (tmp_path / "two.json").write_text(
        '[{"kind": "Workload", "name": "two", "template": {"containers": '
        '[{"name": "main", "image": "busybox:1.36"}]}}]'
    )
    (tmp_path / "bad.json").write_text('{"kind": "Workload",\n "name": }')
    async with watching(service, tmp_path) as watcher:
        assert await names(service) == {"one", "two"}
        bad = status(watcher, tmp_path / "bad.json")
        assert "line 2, column" in bad.error and "invalid JSON" in bad.error


async def test_touching_without_a_change_does_nothing(
    service: ShoalService, tmp_path: Path
) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(workload("web"))
    async with watching(service, tmp_path) as watcher:
        before = status(watcher, web)
        generation = (await live(service))["web"].generation
        web.write_text(workload("web"))  # same bytes, new mtime
        await settled(watcher, 1)
        after = status(watcher, web)
        assert after.applied_at == before.applied_at
        assert (await live(service))["web"].generation == generation


async def test_editor_and_backup_files_are_ignored(
    service: ShoalService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "configs").mkdir()  # what looks meant to be read is said not to be, once
    (tmp_path / "UP.YAML").write_text(workload("up"))
    async with watching(service, tmp_path) as watcher:
        for name in (
            ".web.yaml.swp",
            ".web.yaml.swo",
            "web.yaml~",
            "4913",
            "web.yaml.bak",
            "web.yaml.tmp",
            ".hidden.yaml",
            "notes.txt",
        ):
            (tmp_path / name).write_text(workload(name.strip(".~").split(".")[0] or "x"))
        (tmp_path / "sub.yaml").mkdir()  # a directory, even with a manifest's name
        (tmp_path / "real.yaml").write_text(workload("real"))
        # written last: once it is applied, the files before it were read, or ignored
        await until(lambda: _replicas(service, "real", 1), "real.yaml is applied")
        assert await names(service) == {"real"}
        await watcher.relist_once()  # a relist ignores them too
        assert set(watcher._due) <= {str(tmp_path / "real.yaml")}
        assert [s.path for s in watcher.statuses()] == [str(tmp_path / "real.yaml")]
    told = [r.getMessage() for r in caplog.records if "is not read" in r.getMessage()]
    assert sorted(told) == [
        f"manifests: {tmp_path / 'UP.YAML'} is not read: a manifest's name ends in .yaml, "
        ".yml, .json, in lower case",
        f"manifests: {tmp_path / 'configs'} is not read: a subdirectory: only the files of a "
        "watched directory are read",
    ]


async def test_the_first_file_in_sort_order_wins_a_conflict(
    service: ShoalService, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    b.write_text(documents(workload("shared", image="busybox:b"), workload("only-b")))
    async with watching(service, tmp_path) as watcher:
        assert (await live(service))["shared"].spec.template.containers[0].image == "busybox:b"
        # a.yaml comes first in sort order: it wins, whatever the order of writes
        a.write_text(workload("shared", image="busybox:a"))
        await until(lambda: status(watcher, b).conflicts, "b reports the conflict")
        shared = (await live(service))["shared"]
        assert shared.spec.template.containers[0].image == "busybox:a"
        assert shared.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{a}"
        assert status(watcher, b).conflicts == [f"Workload default/shared: owned by {a}"]
        assert status(watcher, b).objects == ["Workload default/only-b"]
        assert status(watcher, a).objects == ["Workload default/shared"]
        assert "only-b" in await names(service)  # b applies its other objects

        # a drops it: b takes it back, nothing is deleted on the way
        a.write_text(workload("only-a"))
        await until(lambda: not status(watcher, b).conflicts, "b owns shared again")
        shared = (await live(service))["shared"]
        assert shared.spec.template.containers[0].image == "busybox:b"
        assert shared.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{b}"
        assert await names(service) == {"shared", "only-a", "only-b"}


async def test_a_skip_marker_pauses_a_file(service: ShoalService, tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(documents(workload("web"), workload("api")))
    async with watching(service, tmp_path) as watcher:
        (tmp_path / "web.yaml.skip").touch()
        await until(lambda: status(watcher, web).skipped, "web.yaml is paused")
        web.write_text(workload("web", replicas=4))  # neither applied nor pruned
        await settled(watcher, 1)
        assert await names(service) == {"web", "api"}
        assert (await live(service))["web"].spec.replicas == 1

        (tmp_path / "web.yaml.skip").unlink()
        await until(lambda: _gone(service, "api"), "resumed: api is pruned")
        assert (await live(service))["web"].spec.replicas == 4
        assert not status(watcher, web).skipped


async def test_a_file_paused_at_start_keeps_its_objects(
    service: ShoalService, tmp_path: Path
) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(workload("web"))
    async with watching(service, tmp_path):
        pass
    web.write_text(workload("other"))
    (tmp_path / "web.yaml.skip").touch()
    async with watching(service, tmp_path) as watcher:
        assert await names(service) == {"web"}
        assert status(watcher, web).skipped
        assert status(watcher, web).objects == ["Workload default/web"]


async def test_an_object_applied_by_hand_is_never_pruned(
    service: ShoalService, tmp_path: Path
) -> None:
    spec = WorkloadSpec.model_validate(
        {"name": "by-hand", "template": {"containers": [{"name": "m", "image": "busybox"}]}}
    )
    other_node = spec.model_copy(
        update={"name": "other-node", "annotations": {MANIFEST_ANNOTATION: f"n2:{tmp_path}/x.yaml"}}
    )
    await service.apply([spec, other_node])
    (tmp_path / "x.yaml").write_text(workload("web"))
    async with watching(service, tmp_path) as watcher:
        assert await names(service) == {"by-hand", "other-node", "web"}
        (tmp_path / "x.yaml").unlink()
        await until(lambda: _gone(service, "web"), "web is pruned")
        assert await names(service) == {"by-hand", "other-node"}
        assert watcher.statuses() == []


async def test_another_nodes_object_is_a_conflict(service: ShoalService, tmp_path: Path) -> None:
    theirs = WorkloadSpec.model_validate(
        {
            "name": "web",
            "annotations": {MANIFEST_ANNOTATION: "n2:/etc/shoal/manifests/web.yaml"},
            "template": {"containers": [{"name": "m", "image": "busybox:theirs"}]},
        }
    )
    await service.apply([theirs])
    (tmp_path / "web.yaml").write_text(documents(workload("web"), workload("api")))
    async with watching(service, tmp_path) as watcher:
        web = status(watcher, tmp_path / "web.yaml")
        assert web.conflicts == [
            "Workload default/web: owned by n2:/etc/shoal/manifests/web.yaml (another node's file)"
        ]
        assert web.objects == ["Workload default/api"]
        stored = (await live(service))["web"]
        assert stored.spec.template.containers[0].image == "busybox:theirs"


async def test_a_restart_prunes_what_deleted_files_left(
    service: ShoalService, tmp_path: Path
) -> None:
    (tmp_path / "keep.yaml").write_text(workload("keep"))
    (tmp_path / "gone.yaml").write_text(documents(workload("gone"), workload("gone2")))
    async with watching(service, tmp_path):
        assert await names(service) == {"keep", "gone", "gone2"}
    # while the agent is down: one file deleted, one broken, one object applied by hand
    (tmp_path / "gone.yaml").unlink()
    (tmp_path / "keep.yaml").write_text("kind: [\n")
    await service.apply(
        [
            WorkloadSpec.model_validate(
                {"name": "by-hand", "template": {"containers": [{"name": "m", "image": "b"}]}}
            )
        ]
    )
    async with watching(service, tmp_path) as watcher:
        assert await names(service) == {"keep", "by-hand"}
        keep = status(watcher, tmp_path / "keep.yaml")
        assert keep.error and keep.objects == ["Workload default/keep"]


async def test_a_service_error_keeps_the_old_objects_and_is_retried(
    service: ShoalService, tmp_path: Path
) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(documents(workload("web"), workload("api")))
    async with watching(service, tmp_path) as watcher:
        # api is being deleted (by hand): an apply that keeps it is refused for now
        await service.delete_workload("api")
        web.write_text(documents(workload("web", replicas=2), workload("api")))
        await until(lambda: "being deleted" in status(watcher, web).error, "the refusal")
        assert (await live(service))["web"].spec.replicas == 1  # all or nothing
        # the file changes again: applied at once. (Under load api may finish going first
        # and a retry of the refused content apply it; either way the file ends clean.)
        web.write_text(workload("web", replicas=2))
        await until(lambda: _replicas(service, "web", 2), "applied once api is left out")
        await until(lambda: status(watcher, web).error == "", "its error cleared")


async def test_two_directories(service: ShoalService, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "a.yaml").write_text(workload("a"))
    (second / "b.yaml").write_text(workload("b"))
    watcher = ManifestWatcher(service, [first, second], "n1", debounce=DEBOUNCE)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        assert await names(service) == {"a", "b"}
        (second / "c.yaml").write_text(workload("c"))
        await until(lambda: _replicas(service, "c", 1), "c.yaml is applied")
        tg.cancel_scope.cancel()


async def test_a_paused_file_deleted_keeps_its_objects_until_resumed(
    service: ShoalService, tmp_path: Path
) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(workload("web"))
    async with watching(service, tmp_path) as watcher:
        marker = tmp_path / "web.yaml.skip"
        marker.touch()
        await until(lambda: status(watcher, web).skipped, "paused")
        web.unlink()
        await settled(watcher, 1)
        assert await names(service) == {"web"}
        assert status(watcher, web).objects == ["Workload default/web"]
        marker.unlink()
        await until(lambda: _gone(service, "web"), "resumed without its file: pruned")
        assert watcher.statuses() == []


KUBE_CONFIG = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: page
  namespace: shop
data:
  index.html: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: shop
stringData:
  password: hunter2
"""


async def test_kubernetes_config_objects_are_applied_and_pruned(
    service: ShoalService, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(KUBE_CONFIG)
    async with watching(service, tmp_path) as watcher:
        assert status(watcher, config).objects == [
            "ConfigMap shop/page",
            "Namespace shop",
            "Secret shop/db",
        ]
        (page,) = await service.list_config_maps("shop")
        assert page.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{config}"
        config.write_text(KUBE_CONFIG.rsplit("---\n", 1)[0])  # the Secret leaves the file
        await until(lambda: _no_secrets(service), "the Secret is pruned")
        config.unlink()  # the ConfigMap goes first, then the Namespace it was in
        await until(lambda: _no_namespace(service, "shop"), "the Namespace is pruned")
        assert await service.list_config_maps("shop") == []
        pruned = [e.message for e in await service.list_events(kind="Manifest")]
        assert any("deleted Namespace shop" in m for m in pruned)


async def _no_secrets(service: ShoalService) -> bool:
    return not await service.list_secrets()


async def _no_namespace(service: ShoalService, name: str) -> bool:
    return name not in [n.spec.name for n in await service.list_namespaces()]


async def test_a_renamed_file_hands_its_objects_over(service: ShoalService, tmp_path: Path) -> None:
    old, new = tmp_path / "a-web.yaml", tmp_path / "b-web.yaml"
    old.write_text(workload("web"))
    async with watching(service, tmp_path) as watcher:
        uid = (await live(service))["web"].uid
        old.rename(new)
        await until(lambda: [s.path for s in watcher.statuses()] == [str(new)], "renamed")
        (stored,) = await service.list_workloads()
        assert stored.uid == uid and not stored.deleting  # never deleted on the way
        assert stored.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{new}"
        assert status(watcher, new).objects == ["Workload default/web"]
        assert status(watcher, new).conflicts == []
        events = await service.list_events(kind="Manifest")
        assert "ManifestConflict" not in {e.reason for e in events}  # not even on the way


async def test_a_broken_file_renamed_takes_nothing_down(
    service: ShoalService, tmp_path: Path
) -> None:
    old, new = tmp_path / "web.yaml", tmp_path / "web-v2.yaml"
    old.write_text(workload("web"))
    async with watching(service, tmp_path) as watcher:
        uid = (await live(service))["web"].uid
        old.write_text(workload("web") + "oops: [\n")
        await until(lambda: status(watcher, old).error, "the broken file is reported")
        old.rename(new)  # what the broken file defines is unknown: nothing goes
        await until(lambda: [s.path for s in watcher.statuses()] == [str(new)], "renamed")
        events = await service.list_events(kind="Manifest")
        waits = [e.message for e in events if e.reason == "PruneWaits"]
        assert waits and f"stay while {new} cannot be read" in waits[-1]
        (stored,) = await service.list_workloads()
        assert stored.uid == uid and not stored.deleting
        new.write_text(workload("web"))  # fixed: it takes the objects over
        await until(lambda: not status(watcher, new).error, "fixed")
        await until(lambda: status(watcher, new).objects == ["Workload default/web"], "taken")
        (stored,) = await service.list_workloads()
        assert stored.uid == uid and not stored.deleting  # never deleted on the way
        assert stored.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{new}"


async def test_an_object_moved_to_another_file_in_one_change_is_handed_over(
    service: ShoalService, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(documents(workload("w1"), workload("w2")))
    async with watching(service, tmp_path) as watcher:
        uid = (await live(service))["w2"].uid
        # A split, as a `git pull` makes it: the file that drops w2 sorts first.
        second.write_text(workload("w2"))
        first.write_text(workload("w1"))
        moved_over = ["Workload default/w2"]
        await until(
            lambda: (
                [s.objects for s in watcher.statuses() if s.path == str(second)] == [moved_over]
            ),
            "moved",
        )
        moved = await service.get_workload("w2")
        assert moved.uid == uid and not moved.deleting  # never deleted on the way
        assert moved.spec.annotations[MANIFEST_ANNOTATION] == f"n1:{second}"
        assert status(watcher, first).objects == ["Workload default/w1"]
        events = await service.list_events(kind="Manifest")
        assert "Pruned" not in {e.reason for e in events}
    # The same while the agent is down: its first pass hands w1 over too.
    second.write_text(documents(workload("w1"), workload("w2")))
    first.write_text(workload("w3"))
    async with watching(service, tmp_path) as watcher:
        assert await names(service) == {"w1", "w2", "w3"}
        assert not any(w.deleting for w in await service.list_workloads())
        assert status(watcher, second).objects == ["Workload default/w1", "Workload default/w2"]


async def test_a_replaced_directory_is_watched_again(service: ShoalService, tmp_path: Path) -> None:
    watched, staged = tmp_path / "manifests", tmp_path / "staged"
    watched.mkdir()
    (watched / "web.yaml").write_text(workload("web"))
    async with watching(service, watched) as watcher:
        staged.mkdir()
        (staged / "api.yaml").write_text(workload("api"))
        watched.rename(tmp_path / "old")
        staged.rename(watched)  # the inotify watch still follows the old directory
        watches = watcher.watches
        await watcher.relist_once()  # sees the new directory's files, and that it is new
        await until(lambda: watcher.watches > watches, "watched again")

        async def swapped() -> bool:
            return await names(service) == {"api"}

        await until(swapped, "the new directory's files applied, the old one's pruned")
        # From here, a change is seen at once again (the next relist is 30 s away).
        (watched / "db.yaml").write_text(workload("db"))
        await until(
            lambda: (
                [s.path for s in watcher.statuses() if s.objects]
                == [
                    str(watched / "api.yaml"),
                    str(watched / "db.yaml"),
                ]
            ),
            "the new file applied",
            within=5,
        )


async def test_an_object_moved_to_a_file_that_fails_to_apply_is_not_left_unowned(
    service: ShoalService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a.yaml drops x for b.yaml, whose apply is refused: no file defines x, so it goes."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(documents(workload("x"), workload("y")))
    second.write_text(workload("z"))
    async with watching(service, tmp_path) as watcher:
        applied = service.apply

        async def refuse_b(specs: list[WorkloadSpec], **kwargs: bool) -> ApplyResult:
            if any(s.annotations.get(MANIFEST_ANNOTATION, "").endswith("b.yaml") for s in specs):
                raise Conflict("refused for the test")
            return await applied(specs, **kwargs)

        monkeypatch.setattr(service, "apply", refuse_b)
        second.write_text(documents(workload("z"), workload("x")))
        first.write_text(workload("y"))
        await until(lambda: status(watcher, second).error, "b.yaml refused")

        async def x_gone() -> bool:
            return "x" not in await names(service)

        await until(x_gone, "x pruned: no file defines it")
        assert await names(service) == {"y", "z"}
        assert status(watcher, first).objects == ["Workload default/y"]
        assert status(watcher, second).objects == ["Workload default/z"]


async def test_an_unreadable_file_is_an_error_not_a_crash(
    service: ShoalService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.kube import _watch

    web = tmp_path / "web.yaml"
    web.write_text(workload("web"))
    async with watching(service, tmp_path) as watcher:
        monkeypatch.setattr(_watch, "MAX_MANIFEST_FILE_BYTES", 10)
        web.write_text(workload("web", replicas=2))
        await until(lambda: "cannot be read" in status(watcher, web).error, "the error")
        assert "larger than" in status(watcher, web).error
        assert (await live(service))["web"].spec.replicas == 1


DEPLOYMENT_WITH_IGNORED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: busybox:1.36
          securityContext: {privileged: false}
"""


async def test_ignored_fields_are_warnings_or_with_strict_errors(
    service: ShoalService, tmp_path: Path
) -> None:
    web = tmp_path / "web.yaml"
    web.write_text(DEPLOYMENT_WITH_IGNORED)
    async with watching(service, tmp_path) as watcher:
        (warning,) = status(watcher, web).warnings
        assert "spec.template.spec.containers[0].securityContext" in warning
        assert "web" in await names(service)
        (applied,) = [e for e in await service.list_events() if e.reason == "ManifestApplied"]
        assert applied.message.endswith("; 1 field(s) ignored (`shoal manifests` lists them)")
    strict = ManifestWatcher(service, [tmp_path], "n2", strict=True)
    async with anyio.create_task_group() as tg:
        await tg.start(strict.run)
        assert "securityContext" in status(strict, web).error
        assert status(strict, web).objects == []
        tg.cancel_scope.cancel()
