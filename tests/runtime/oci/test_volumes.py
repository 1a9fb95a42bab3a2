"""Real runc containers with pod volumes: shared emptyDir, read-only mounts, host paths."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import anyio
import pytest

from shoal.interfaces import (
    Container,
    EmptyDirVolume,
    Forbidden,
    HostPathVolume,
    InvalidInput,
    PodSpec,
    Volume,
    VolumeMount,
)
from shoal.runtime import OciCliRuntime
from tests.runtime.oci.harness import ENTRY_IMAGE, IMAGE, SLEEPER, RuntimeFactory
from tests.runtime.oci.support import (
    WAIT,
    DirectoryImageSource,
    cgroup_dirs,
    container_ids,
    mounts_under,
    shim_pids,
)

pytestmark = pytest.mark.anyio


def new_pod(containers: list[Container], *volumes: Volume) -> PodSpec:
    """Return a pod with a fresh uid, the ``containers`` and the ``volumes``."""
    uid = uuid.uuid4().hex
    return PodSpec(
        uid=uid,
        name=f"web-{uid[:6]}",
        namespace="default",
        workload="web",
        containers=containers,
        volumes=list(volumes),
    )


def scratch(name: str = "data", size_limit: int = 0) -> Volume:
    return Volume(name=name, empty_dir=EmptyDirVolume(size_limit=size_limit))


def host(path: Path, name: str = "host") -> Volume:
    return Volume(name=name, host_path=HostPathVolume(path=str(path)))


def sleeper(
    name: str, *mounts: VolumeMount, image: str = IMAGE, command: list[str] | None = None
) -> Container:
    return Container(name=name, image=image, command=command or SLEEPER, volume_mounts=list(mounts))


async def run(runtime: OciCliRuntime, uid: str, container: str, *command: str) -> tuple[int, str]:
    result = await runtime.exec(uid, container, list(command))
    return result.exit_code, (result.stdout + result.stderr).strip()


async def assert_nothing_left(runtime: OciCliRuntime, uid: str) -> None:
    assert container_ids(runtime.runc.state_root) == []
    assert mounts_under(runtime.root) == []
    assert not runtime.files.directory(uid).exists()
    assert shim_pids(runtime.root) == []
    assert uid not in {pod.uid for pod in await runtime.list()}


async def test_containers_of_a_pod_share_an_empty_dir(runtime: OciCliRuntime) -> None:
    spec = new_pod(
        [
            sleeper("writer", VolumeMount(name="data", mount_path="/shared")),
            # A non-root user (the image's 'guest') can write too: the volume is 0777.
            sleeper("guest", VolumeMount(name="data", mount_path="/var/data"), image=ENTRY_IMAGE),
        ],
        scratch(),
    )
    await runtime.create(spec)
    await runtime.start(spec.uid)

    assert await run(runtime, spec.uid, "writer", "sh", "-c", "echo hi > /shared/note") == (0, "")
    assert await run(runtime, spec.uid, "guest", "cat", "/var/data/note") == (0, "hi")
    assert await run(runtime, spec.uid, "guest", "sh", "-c", "id -u > /var/data/who") == (0, "")
    assert await run(runtime, spec.uid, "writer", "cat", "/shared/who") == (0, "405")


async def test_a_read_only_mount_refuses_writes_while_others_write(
    runtime: OciCliRuntime,
) -> None:
    spec = new_pod(
        [
            sleeper("writer", VolumeMount(name="data", mount_path="/data")),
            sleeper("reader", VolumeMount(name="data", mount_path="/data", read_only=True)),
        ],
        scratch(),
    )
    await runtime.create(spec)
    await runtime.start(spec.uid)

    assert await run(runtime, spec.uid, "writer", "sh", "-c", "echo v1 > /data/f") == (0, "")
    code, output = await run(runtime, spec.uid, "reader", "sh", "-c", "echo v2 > /data/f")
    assert code != 0
    assert "Read-only file system" in output
    assert await run(runtime, spec.uid, "reader", "cat", "/data/f") == (0, "v1")


async def test_an_empty_dir_outlives_a_container_restart(runtime: OciCliRuntime) -> None:
    once = Container(
        name="once",
        image=IMAGE,
        command=["sh", "-c", "echo run >> /data/runs"],
        volume_mounts=[VolumeMount(name="data", mount_path="/data")],
    )
    spec = new_pod([once], scratch())
    runs = runtime.files.directory(spec.uid) / "volumes" / "data" / "runs"
    await runtime.create(spec)
    await runtime.start(spec.uid)
    with anyio.fail_after(WAIT):
        async for _ in runtime.logs(spec.uid, "once", follow=True):
            pass
    await runtime.start(spec.uid)
    with anyio.fail_after(WAIT):
        async for _ in runtime.logs(spec.uid, "once", follow=True):
            pass

    assert runs.read_text() == "run\nrun\n"


async def test_a_size_limit_is_enforced_and_everything_goes_with_the_pod(
    runtime: OciCliRuntime,
) -> None:
    spec = new_pod(
        [
            sleeper(
                "main",
                VolumeMount(name="small", mount_path="/small"),
                VolumeMount(name="big", mount_path="/big"),
            )
        ],
        scratch("small", size_limit=2**20),
        scratch("big"),
    )
    await runtime.create(spec)
    await runtime.start(spec.uid)
    volumes = runtime.files.directory(spec.uid) / "volumes"
    assert {p.name for p in volumes.iterdir()} == {"small", "big"}
    assert str(volumes / "small") in mounts_under(runtime.root)

    fill = "dd if=/dev/zero of={}/f bs=1024 count=2048"
    code, output = await run(runtime, spec.uid, "main", "sh", "-c", fill.format("/small"))
    assert code != 0
    assert "No space left on device" in output
    assert (await run(runtime, spec.uid, "main", "sh", "-c", fill.format("/big")))[0] == 0

    await runtime.remove(spec.uid)
    await assert_nothing_left(runtime, spec.uid)
    assert cgroup_dirs(f"{spec.uid}-main") == []


async def test_a_host_path_is_refused_unless_the_node_allows_it(
    runtime: OciCliRuntime, tmp_path: Path
) -> None:
    assert isinstance(runtime.images, DirectoryImageSource)
    spec = new_pod(
        [sleeper("main", VolumeMount(name="host", mount_path="/host"))],
        scratch(),
        host(tmp_path),
    )
    with pytest.raises(Forbidden) as caught:
        await runtime.create(spec)

    assert caught.value.message == (
        f"volume 'host' mounts host path '{tmp_path}', but host path volumes are disabled on "
        "this node: start the agent with --allow-host-paths, or use an empty_dir volume"
    )
    assert caught.value.details["volume"] == "host"
    assert runtime.images.prepared == []
    await assert_nothing_left(runtime, spec.uid)


async def test_a_host_path_is_mounted_where_the_node_allows_it(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("host\n")
    spec = new_pod(
        [
            sleeper(
                "main",
                VolumeMount(name="host", mount_path="/mnt/host"),
                VolumeMount(name="ro", mount_path="/mnt/ro", read_only=True),
            )
        ],
        host(shared),
        host(shared, name="ro"),
    )
    async with make_runtime(allow_host_paths=True) as runtime:
        await runtime.create(spec)
        await runtime.start(spec.uid)

        assert await run(runtime, spec.uid, "main", "cat", "/mnt/host/from-host") == (0, "host")
        command = "echo container > /mnt/host/from-container"
        assert await run(runtime, spec.uid, "main", "sh", "-c", command) == (0, "")
        code, output = await run(runtime, spec.uid, "main", "touch", "/mnt/ro/nope")
        assert code != 0
        assert "Read-only file system" in output

        await runtime.remove(spec.uid)
        await assert_nothing_left(runtime, spec.uid)

    # Removing the pod never deletes what it mounted from the node.
    assert sorted(p.name for p in shared.iterdir()) == ["from-container", "from-host"]
    assert (shared / "from-container").read_text() == "container\n"


async def test_a_missing_host_path_is_refused_before_anything_is_made(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    spec = new_pod([sleeper("main", VolumeMount(name="host", mount_path="/host"))], host(missing))
    async with make_runtime(allow_host_paths=True) as runtime:
        with pytest.raises(InvalidInput, match=re.escape(f"host path '{missing}' does not exist")):
            await runtime.create(spec)
        await assert_nothing_left(runtime, spec.uid)
    assert not missing.exists()
