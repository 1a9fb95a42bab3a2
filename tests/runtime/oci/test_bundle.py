"""config.json generation: Kubernetes process semantics, users, limits, namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.interfaces import Container, Resources, RuntimeFailure
from shoal.runtime import ImageConfig
from shoal.runtime.oci._bundle import (
    DEFAULT_CAPABILITIES,
    BundleOptions,
    build_config,
    linux_resources,
    process_args,
    process_env,
    resolve_user,
)

IMAGE = ImageConfig(entrypoint=["/entry"], cmd=["default"], env=["PATH=/bin", "A=image"])


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, ["/entry", "default"]),
        (["/bin/app"], None, ["/bin/app"]),
        (None, ["x", "y"], ["/entry", "x", "y"]),
        (["/bin/app"], ["x"], ["/bin/app", "x"]),
        (None, [], ["/entry"]),
    ],
)
def test_command_replaces_entrypoint_and_args_replace_cmd(
    command: list[str] | None, args: list[str] | None, expected: list[str]
) -> None:
    container = Container(name="c", image="i", command=command, args=args)
    assert process_args(container, IMAGE) == expected


def test_no_program_at_all_is_a_clear_failure() -> None:
    with pytest.raises(RuntimeFailure, match="no entrypoint or cmd"):
        process_args(Container(name="c", image="i"), ImageConfig())


def test_container_env_goes_on_top_of_the_image_env() -> None:
    container = Container(name="c", image="i", env={"A": "mine", "B": "b"})
    env = process_env(container, IMAGE, "web-1")
    assert env == ["HOSTNAME=web-1", "PATH=/bin", "A=mine", "B=b"]
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in process_env(
        Container(name="c", image="i"), ImageConfig(), "h"
    )


def _rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nguest:x:405:100::/home/guest:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("users:x:100:\nwheel:x:10:guest\naudio:x:29:guest\n")
    return tmp_path


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, (0, 0, [])),
        ("1000", (1000, 0, [])),
        ("1000:2000", (1000, 2000, [])),
        ("guest", (405, 100, [10, 29])),
        ("405", (405, 100, [10, 29])),
        ("guest:wheel", (405, 10, [29])),
    ],
)
def test_user_is_resolved_in_the_image(
    tmp_path: Path, user: str | None, expected: tuple[int, int, list[int]]
) -> None:
    assert resolve_user(user, _rootfs(tmp_path)) == expected


def test_an_unknown_user_or_group_is_a_clear_failure(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    with pytest.raises(RuntimeFailure, match="'ghost' is not in the image's /etc/passwd"):
        resolve_user("ghost", rootfs)
    with pytest.raises(RuntimeFailure, match="group 'ghosts'"):
        resolve_user("guest:ghosts", rootfs)


def test_a_passwd_symlink_out_of_the_rootfs_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(RuntimeFailure, match="not in the image's /etc/passwd"):
        resolve_user("root", tmp_path)


def test_limits_and_requests_become_cgroup_settings() -> None:
    resources = Resources.model_validate(
        {"requests": {"cpu": "250m"}, "limits": {"cpu": "1.5", "memory": "64Mi"}}
    )
    assert linux_resources(resources, pids_limit=100, swap=True) == {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": {"quota": 150_000, "period": 100_000, "shares": 256},
        "memory": {"limit": 64 * 1024 * 1024, "swap": 64 * 1024 * 1024},
        "pids": {"limit": 100},
    }
    limit_only = Resources.model_validate({"limits": {"cpu": "500m"}})
    assert linux_resources(limit_only, pids_limit=0, swap=False)["cpu"]["shares"] == 512
    assert set(linux_resources(Resources(), 0, False)) == {"devices"}


def test_config_has_runc_defaults_and_joins_the_pod_network(tmp_path: Path) -> None:
    container = Container(name="c", image="i", working_dir="/srv")
    options = BundleOptions(
        hostname="web-1",
        cgroups_path="/shoal/x",
        netns=Path("/var/run/netns/p"),
        read_only_rootfs=True,
        files={"/etc/hosts": tmp_path / "hosts"},
    )
    config = build_config(container, IMAGE, tmp_path, options)
    process = config["process"]
    assert process["cwd"] == "/srv"
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False
    assert process["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert "ambient" not in process["capabilities"]
    assert config["root"] == {"path": str(tmp_path), "readonly": True}
    assert {"type": "network", "path": "/var/run/netns/p"} in config["linux"]["namespaces"]
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    assert config["linux"]["cgroupsPath"] == "/shoal/x"
    assert any(m["destination"] == "/etc/hosts" for m in config["mounts"])


def test_host_networking_creates_no_network_namespace(tmp_path: Path) -> None:
    config = build_config(
        Container(name="c", image="i"), IMAGE, tmp_path, BundleOptions("h", "/shoal/x")
    )
    assert "network" not in {ns["type"] for ns in config["linux"]["namespaces"]}


def test_a_relative_working_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="working_dir 'srv' is relative"):
        build_config(
            Container(name="c", image="i", working_dir="srv"),
            IMAGE,
            tmp_path,
            BundleOptions("h", "/shoal/x"),
        )
