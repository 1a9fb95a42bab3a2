"""OCI bundle ``config.json`` for one container of a pod.

The process follows Kubernetes semantics over the image config:

* ``command`` replaces the image's Entrypoint and ``args`` replace its Cmd;
  ``command`` alone drops the image's Cmd, ``args`` alone keep its Entrypoint;
* the environment is the image's ``Env`` with the container's ``env`` on top
  (same key: the container wins), plus ``PATH`` when neither sets one and
  ``HOSTNAME`` (the pod's name) as container runtimes do;
* the working directory is ``working_dir``, else the image's, else ``/``;
* the user is the image's ``User``: ``uid``, ``uid:gid``, or names looked up
  in the rootfs' ``/etc/passwd`` and ``/etc/group`` (supplementary groups
  too); no user means root.

The rest is what ``runc spec`` generates: its capability set (bounding,
effective and permitted; no ambient set, so a non-root user gets none),
``noNewPrivileges``, its masked and read-only paths, mounts and
``RLIMIT_NOFILE``, and a device cgroup that denies everything runc does not
add itself. Limits come from the container's resources: ``limits.cpu`` →
CFS quota over a 100 ms period, ``requests.cpu`` (or the limit when no
request is set) → CPU shares (1024 per core, at least 2), ``limits.memory``
→ memory limit (and the same memory+swap limit where the kernel accounts
swap, so a container cannot swap past its limit), and a pids limit.

The pod's volumes are bind-mounted where the container's ``volume_mounts``
say (see :mod:`._volumes`), after the pod's /etc files.

Namespaces: pid, ipc, uts and mount of its own; the network namespace is
joined by path (the pod's pinned namespace) or, in host mode, not created at
all. Each container is in cgroup ``/shoal/<container id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.interfaces import Container, Resources, RuntimeFailure, Volume
from shoal.runtime.images._image_api import ImageConfig

from ._volumes import volume_mounts

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PATH",
    "BundleOptions",
    "build_config",
    "process_args",
    "process_env",
    "resolve_user",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH of a process whose image and container set none."""
DEFAULT_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
"""The capability set ``runc spec`` generates."""
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
CPU_PERIOD = 100_000
"""CFS period in microseconds; a quota of one period is one core."""
_BASE_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
]


@dataclass(frozen=True)
class BundleOptions:
    """Pod- and node-level settings of a container's bundle.

    Attributes:
        hostname: The container's hostname (the pod's name).
        cgroups_path: The container's cgroup, e.g. ``/shoal/<id>``.
        netns: Network namespace to join; None shares the host's.
        pids_limit: Most processes the container may have; 0 for no limit.
        read_only_rootfs: Mount the root filesystem read-only.
        swap_accounting: Whether memory+swap can be limited on this host.
        files: Host files bind-mounted read-only (destination → source),
            e.g. the pod's /etc/hosts and /etc/resolv.conf.
        volumes: Where each pod volume is mounted from (volume name → host path):
            its emptyDir or file volume directory, or its host path.
        pod_volumes: The pod's volumes, for what a mount's source alone does not
            say (file volumes are read-only; a sub_path in an emptyDir is created).

    """

    hostname: str
    cgroups_path: str
    netns: Path | None = None
    pids_limit: int = 1024
    read_only_rootfs: bool = False
    swap_accounting: bool = False
    files: dict[str, Path] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    pod_volumes: tuple[Volume, ...] = ()


def process_args(container: Container, image: ImageConfig) -> list[str]:
    """Return the process's argv: command/entrypoint followed by args/cmd.

    Raises:
        RuntimeFailure: neither the container nor the image name a program.

    """
    if container.command is not None:
        argv = list(container.command) + list(container.args or [])
    else:
        argv = list(image.entrypoint or []) + list(
            container.args if container.args is not None else image.cmd or []
        )
    if not argv:
        raise RuntimeFailure(
            f"container {container.name!r}: the image {container.image!r} has no entrypoint "
            "or cmd and the container sets no command: set command in the workload",
            container=container.name,
        )
    return argv


def process_env(container: Container, image: ImageConfig, hostname: str) -> list[str]:
    """Return ``KEY=VALUE`` entries: image env, then the container's on top."""
    merged: dict[str, str] = {"HOSTNAME": hostname}
    for entry in image.env:
        key, _, value = entry.partition("=")
        merged[key] = value
    merged.update(container.env)
    merged.setdefault("PATH", DEFAULT_PATH)
    return [f"{key}={value}" for key, value in merged.items()]


def _read_database(rootfs: Path, name: str) -> list[list[str]]:
    """Return the colon-separated rows of the image's /etc/``name``, or [] without one."""
    path = rootfs / "etc" / name
    # A symlink could point anywhere on the host: only a plain file counts.
    if path.is_symlink() or not path.is_file() or (rootfs / "etc").is_symlink():
        return []
    rows = path.read_text(errors="replace").splitlines()
    return [row.split(":") for row in rows if row and not row.startswith("#")]


def resolve_user(user: str | None, rootfs: Path) -> tuple[int, int, list[int]]:
    """Resolve an image's ``User`` to uid, gid and supplementary gids inside ``rootfs``.

    Raises:
        RuntimeFailure: a name is not in the image's /etc/passwd or /etc/group.

    """
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = _read_database(rootfs, "passwd")
    entry = next(
        (row for row in passwd if len(row) >= 4 and name in (row[0], row[2])),
        None,
    )
    if name.isdigit():
        uid = int(name)
    elif entry is not None and entry[2].isdigit():
        uid = int(entry[2])
    else:
        raise RuntimeFailure(
            f"user {name!r} is not in the image's /etc/passwd: use a numeric uid[:gid] "
            "or an image that defines the user",
            user=user,
        )
    groups = _read_database(rootfs, "group")
    if group:
        gid = _group_id(group, groups, user)
    elif entry is not None and entry[3].isdigit():
        gid = int(entry[3])
    else:
        gid = 0
    username = entry[0] if entry is not None else None
    extra = sorted(
        {
            int(row[2])
            for row in groups
            if len(row) >= 4
            and row[2].isdigit()
            and username is not None
            and username in row[3].split(",")
            and int(row[2]) != gid
        }
    )
    return uid, gid, extra


def _group_id(group: str, groups: list[list[str]], user: str) -> int:
    if group.isdigit():
        return int(group)
    for row in groups:
        if len(row) >= 3 and row[0] == group and row[2].isdigit():
            return int(row[2])
    raise RuntimeFailure(
        f"group {group!r} of user {user!r} is not in the image's /etc/group: "
        "use a numeric gid or an image that defines the group",
        user=user,
    )


def linux_resources(resources: Resources, pids_limit: int, swap: bool) -> dict[str, Any]:
    """Return the OCI ``linux.resources`` for a container's requests and limits."""
    limits, requests = resources.limits, resources.requests
    result: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    cpu: dict[str, int] = {}
    if limits.cpu > 0:
        cpu["quota"] = max(1000, limits.cpu * CPU_PERIOD // 1000)
        cpu["period"] = CPU_PERIOD
    share_basis = requests.cpu or limits.cpu
    if share_basis > 0:
        cpu["shares"] = max(2, share_basis * 1024 // 1000)
    if cpu:
        result["cpu"] = cpu
    if limits.memory > 0:
        memory: dict[str, int] = {"limit": limits.memory}
        if swap:
            memory["swap"] = limits.memory
        result["memory"] = memory
    if pids_limit > 0:
        result["pids"] = {"limit": pids_limit}
    return result


def build_config(
    container: Container,
    image: ImageConfig,
    rootfs: Path,
    options: BundleOptions,
) -> dict[str, Any]:
    """Return the ``config.json`` document of one container.

    Args:
        container: The container spec.
        image: Its image's config (entrypoint, cmd, env, working dir, user).
        rootfs: The container's own root filesystem (already mounted or copied).
        options: Pod- and node-level settings.

    Raises:
        RuntimeFailure: no program to run, a relative working dir, an unknown user,
            or a volume mount without a volume.

    """
    cwd = container.working_dir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise RuntimeFailure(
            f"container {container.name!r}: working_dir {cwd!r} is relative: give an absolute path",
            container=container.name,
        )
    uid, gid, extra_gids = resolve_user(image.user, rootfs)
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    if extra_gids:
        user["additionalGids"] = extra_gids
    capabilities = list(DEFAULT_CAPABILITIES)
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    if options.netns is not None:
        namespaces.append({"type": "network", "path": str(options.netns)})
    mounts = [dict(mount) for mount in _BASE_MOUNTS]
    for destination, source in sorted(options.files.items()):
        mounts.append(
            {
                "destination": destination,
                "type": "bind",
                "source": str(source),
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            }
        )
    mounts.extend(volume_mounts(container, options.volumes, options.pod_volumes))
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": user,
            "args": process_args(container, image),
            "env": process_env(container, image, options.hostname),
            "cwd": cwd,
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": options.read_only_rootfs},
        "hostname": options.hostname[:63],
        "mounts": mounts,
        "linux": {
            "cgroupsPath": options.cgroups_path,
            "resources": linux_resources(
                container.resources, options.pids_limit, options.swap_accounting
            ),
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
