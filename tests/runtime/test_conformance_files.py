"""ContainerRuntime conformance for file volumes and init containers, on every runtime.

The same :data:`~tests.runtime.test_conformance.HARNESSES` as the main suite.
What a container reads is looked at through the runtime: ``exec`` of ``cat``
and ``stat`` in a real container, :meth:`~shoal.runtime.MockRuntime.file` in
the mock (whose containers run nothing). Facts only a real filesystem has
(the ``..data`` directory, read-only mounts, what an init container wrote)
are checked on the real runtimes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from shoal.interfaces import (
    ConfigMapVolume,
    Container,
    DownwardAPIVolume,
    EmptyDirVolume,
    NotFound,
    PodSpec,
    ProjectedFile,
    RuntimeFailure,
    SecretVolume,
    Volume,
    VolumeMount,
)
from shoal.runtime import Fault, MockRuntime
from tests.runtime.test_conformance import HARNESSES, Harness, collect

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Harness]:
    async with HARNESSES[request.param](request) as harness:
        await harness.runtime.ensure_image(harness.image)
        try:
            yield harness
        finally:
            for pod in await harness.runtime.list():
                await harness.runtime.remove(pod.uid)


def real(harness: Harness) -> bool:
    """Return whether the runtime runs real containers (the mock runs nothing)."""
    return not isinstance(harness.runtime, MockRuntime)


def sleeper(harness: Harness, name: str, *mounts: VolumeMount) -> Container:
    return Container(
        name=name, image=harness.image, command=harness.command, volume_mounts=list(mounts)
    )


def one_shot(harness: Harness, name: str, script: str, *mounts: VolumeMount) -> Container:
    return Container(
        name=name, image=harness.image, command=["sh", "-c", script], volume_mounts=list(mounts)
    )


def new_pod(
    containers: Sequence[Container],
    volumes: Sequence[Volume] = (),
    files: dict[str, list[ProjectedFile]] | None = None,
    init: Sequence[Container] = (),
) -> PodSpec:
    uid = uuid.uuid4().hex
    return PodSpec(
        uid=uid,
        name=f"web-{uid[:6]}",
        namespace="default",
        workload="web",
        containers=list(containers),
        init_containers=list(init),
        volumes=list(volumes),
        files=files or {},
    )


def config(name: str = "config") -> Volume:
    return Volume(name=name, config_map=ConfigMapVolume(name="app-config"))


def text(path: str, data: str, mode: int = 0o644) -> ProjectedFile:
    return ProjectedFile(path=path, data=data.encode(), mode=mode)


async def read(harness: Harness, uid: str, container: str, path: str) -> tuple[str, int]:
    """Return what ``container`` reads at ``path`` and the file's mode bits.

    Raises:
        NotFound: there is no such file.

    """
    runtime = harness.runtime
    if isinstance(runtime, MockRuntime):
        file = runtime.file(uid, container, path)
        return file.data.decode(), file.mode
    script = 'stat -L -c %a "$1" && cat "$1"'
    result = await runtime.exec(uid, container, ["sh", "-c", script, "sh", path])
    if result.exit_code != 0:
        raise NotFound(f"{path}: {result.stderr.strip()}")
    mode, _, data = result.stdout.partition("\n")
    return data, int(mode, 8)


async def shell(harness: Harness, uid: str, container: str, script: str) -> tuple[int, str]:
    result = await harness.runtime.exec(uid, container, ["sh", "-c", script])
    return result.exit_code, (result.stdout + result.stderr).strip()


async def test_file_volumes_appear_with_their_modes(harness: Harness) -> None:
    spec = new_pod(
        [
            sleeper(
                harness,
                "main",
                VolumeMount(name="config", mount_path="/etc/app"),
                VolumeMount(name="creds", mount_path="/etc/creds"),
                VolumeMount(name="facts", mount_path="/etc/facts"),
            )
        ],
        [
            config(),
            Volume(name="creds", secret=SecretVolume(name="creds")),
            Volume(name="facts", downward_api=DownwardAPIVolume()),
        ],
        {
            "config": [text("app.properties", "color=blue"), text("conf/level", "debug", 0o600)],
            "creds": [text("password", "s3cret", 0o400)],
            "facts": [text("name", "web-1", 0o444)],
        },
    )
    await harness.runtime.run(spec)

    assert await read(harness, spec.uid, "main", "/etc/app/app.properties") == ("color=blue", 0o644)
    assert await read(harness, spec.uid, "main", "/etc/app/conf/level") == ("debug", 0o600)
    assert await read(harness, spec.uid, "main", "/etc/creds/password") == ("s3cret", 0o400)
    assert await read(harness, spec.uid, "main", "/etc/facts/name") == ("web-1", 0o444)
    with pytest.raises(NotFound):
        await read(harness, spec.uid, "main", "/etc/app/nothing")
    if real(harness):
        # Read-only although the mount did not ask: as in Kubernetes.
        code, output = await shell(harness, spec.uid, "main", "touch /etc/app/new")
        assert code != 0
        assert "Read-only file system" in output


async def test_update_files_swaps_the_whole_set(harness: Harness) -> None:
    spec = new_pod(
        [sleeper(harness, "main", VolumeMount(name="config", mount_path="/cfg"))],
        [config()],
        {"config": [text("a", "a-1"), text("b", "b-1"), text("dir/x", "x-1")]},
    )
    await harness.runtime.run(spec)
    before = ""
    if real(harness):
        code, before = await shell(harness, spec.uid, "main", "readlink /cfg/..data")
        assert code == 0 and before.startswith("..")

    await harness.runtime.update_files(
        spec.uid, "config", [text("a", "a-2", 0o600), text("c", "c-2"), text("dir/y", "y-2")]
    )

    assert await read(harness, spec.uid, "main", "/cfg/a") == ("a-2", 0o600)
    assert await read(harness, spec.uid, "main", "/cfg/c") == ("c-2", 0o644)
    assert await read(harness, spec.uid, "main", "/cfg/dir/y") == ("y-2", 0o644)
    for gone in ("/cfg/b", "/cfg/dir/x"):
        with pytest.raises(NotFound):
            await read(harness, spec.uid, "main", gone)
    if real(harness):
        code, after = await shell(harness, spec.uid, "main", "readlink /cfg/..data")
        assert code == 0 and after.startswith("..") and after != before
        code, listing = await shell(harness, spec.uid, "main", "ls -a /cfg")
        assert sorted(listing.split()) == sorted([".", "..", "..data", after, "a", "c", "dir"])


async def test_a_sub_path_mount_keeps_what_it_had(harness: Harness) -> None:
    spec = new_pod(
        [
            sleeper(
                harness,
                "main",
                VolumeMount(name="config", mount_path="/cfg"),
                VolumeMount(name="config", mount_path="/etc/app.conf", sub_path="app.conf"),
                VolumeMount(name="config", mount_path="/etc/conf.d", sub_path="conf.d"),
            )
        ],
        [config()],
        {"config": [text("app.conf", "old"), text("conf.d/extra", "old-extra")]},
    )
    await harness.runtime.run(spec)
    assert (await read(harness, spec.uid, "main", "/etc/app.conf"))[0] == "old"

    await harness.runtime.update_files(
        spec.uid, "config", [text("app.conf", "new"), text("conf.d/extra", "new-extra")]
    )

    assert (await read(harness, spec.uid, "main", "/cfg/app.conf"))[0] == "new"
    assert (await read(harness, spec.uid, "main", "/cfg/conf.d/extra"))[0] == "new-extra"
    assert (await read(harness, spec.uid, "main", "/etc/app.conf"))[0] == "old"
    assert (await read(harness, spec.uid, "main", "/etc/conf.d/extra"))[0] == "old-extra"


async def test_update_files_of_a_missing_pod_or_volume_raises_not_found(harness: Harness) -> None:
    spec = new_pod(
        [sleeper(harness, "main", VolumeMount(name="config", mount_path="/cfg"))],
        [config(), Volume(name="scratch", empty_dir=EmptyDirVolume())],
        {"config": [text("a", "1")]},
    )
    await harness.runtime.create(spec)
    for volume in ("scratch", "no-such-volume"):
        with pytest.raises(NotFound):
            await harness.runtime.update_files(spec.uid, volume, [text("a", "2")])
    with pytest.raises(NotFound):
        await harness.runtime.update_files("no-such-pod", "config", [text("a", "2")])


async def test_init_containers_run_in_order_before_the_containers(harness: Harness) -> None:
    work = VolumeMount(name="work", mount_path="/work")
    spec = new_pod(
        [sleeper(harness, "main", work)],
        [Volume(name="work", empty_dir=EmptyDirVolume())],
        init=[
            one_shot(harness, "first", "echo one >> /work/order", work),
            one_shot(harness, "second", "echo two >> /work/order; echo second-done", work),
        ],
    )
    status = await harness.runtime.run(spec)

    assert [c.name for c in status.containers] == ["main"]
    assert status.running
    second = await collect(harness.runtime.logs(spec.uid, "second"))
    if real(harness):
        assert await shell(harness, spec.uid, "main", "cat /work/order") == (0, "one\ntwo")
        assert "second-done" in second
    else:
        assert second == ["started second"]


async def test_a_failing_init_container_fails_run_naming_it(harness: Harness) -> None:
    runtime = harness.runtime
    if isinstance(runtime, MockRuntime):
        runtime.faults.add(Fault.init_fails(container="check", exit_code=3, message="broken"))
    spec = new_pod(
        [sleeper(harness, "main")],
        init=[one_shot(harness, "check", "echo broken >&2; exit 3")],
    )

    with pytest.raises(RuntimeFailure) as caught:
        await runtime.run(spec)

    assert "init container 'check'" in caught.value.message
    assert "exited with code 3" in caught.value.message
    assert "broken" in await collect(runtime.logs(spec.uid, "check"))
    assert not (await runtime.inspect(spec.uid)).running
    await runtime.remove(spec.uid)
    with pytest.raises(NotFound):
        await runtime.inspect(spec.uid)
