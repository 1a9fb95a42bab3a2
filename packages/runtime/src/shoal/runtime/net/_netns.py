"""Named network namespaces: one per pod, shared by all of its containers.

:func:`create_netns` makes a pod's namespace with iproute2 (``ip netns
add shoal-<uid12>``): a new network namespace bind-mounted on
``/var/run/netns/shoal-<uid12>``. Because the bind mount keeps it alive with
no process in it, the CNI plugins can wire it up *before* the first container
exists, every container of the pod joins it by path (the ``network`` entry
of ``config.json``'s ``linux.namespaces``), and a restarted agent finds it
again by name. Deleting it unmounts and removes the file; the kernel frees the
namespace, and with it the pod end of its veth pair, once the last process
inside has exited. (A CniNetwork takes any namespace path, so a runtime may
pin the namespace elsewhere instead, e.g. under its pod directory.)

Both operations are idempotent: creating an existing namespace returns it,
deleting a missing one does nothing, and a stale file with no namespace
mounted on it counts as missing (it is removed).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread

from shoal.interfaces import RuntimeFailure

from ._cni_cache import check_pod_uid

__all__ = [
    "NETNS_DIR",
    "create_netns",
    "delete_netns",
    "is_mounted_netns",
    "netns_exists",
    "netns_name",
    "netns_path",
]

NETNS_DIR = Path("/var/run/netns")
"""Where iproute2 bind-mounts named network namespaces."""

_UID_CHARS = 12


def netns_name(pod_uid: str) -> str:
    """Return the name of the pod's network namespace: ``shoal-`` and 12 uid characters.

    Raises:
        InvalidInput: ``pod_uid`` is not a valid pod uid.

    """
    return f"shoal-{check_pod_uid(pod_uid)[:_UID_CHARS]}"


def netns_path(pod_uid: str) -> Path:
    """Return the path of the pod's network namespace (it may not exist).

    Raises:
        InvalidInput: ``pod_uid`` is not a valid pod uid.

    """
    return NETNS_DIR / netns_name(pod_uid)


def is_mounted_netns(path: Path) -> bool:
    """Return whether ``path`` is a mounted network namespace, not a plain or missing file.

    A file under ``/var/run/netns`` whose mount is gone (a crash between
    creating the file and mounting on it, or a container whose ``/run`` kept
    the file when its mount namespace went away) is not one: CNI plugins
    refuse it ("unknown FS magic"), so teardown treats it as gone.
    """
    try:
        mounted, directory = path.stat(), path.parent.stat()
    except OSError:
        return False
    # The bind mount puts the file on nsfs, a device of its own.
    return mounted.st_dev != directory.st_dev


async def netns_exists(pod_uid: str) -> bool:
    """Return whether the pod's network namespace is mounted.

    A file under ``/var/run/netns`` that is not a mount point (left behind by
    a crash between creating the file and mounting on it) does not count.

    Raises:
        InvalidInput: ``pod_uid`` is not a valid pod uid.

    """
    path = netns_path(pod_uid)
    return await anyio.to_thread.run_sync(is_mounted_netns, path)


async def create_netns(pod_uid: str) -> Path:
    """Create the pod's network namespace, or return it if it exists already.

    Args:
        pod_uid: The instance uid.

    Returns:
        The namespace's path, for ``CNI_NETNS`` and the OCI ``config.json``.

    Raises:
        InvalidInput: ``pod_uid`` is not a valid pod uid.
        RuntimeFailure: ``ip netns add`` failed; nothing is left behind.

    """
    path = netns_path(pod_uid)
    if await netns_exists(pod_uid):
        return path
    if await anyio.Path(path).exists():
        await _ip("netns", "delete", path.name, check=False)  # a stale, unmounted file
    await _ip("netns", "add", path.name)
    return path


async def delete_netns(pod_uid: str) -> None:
    """Delete the pod's network namespace; deleting a missing one does nothing.

    Args:
        pod_uid: The instance uid.

    Raises:
        InvalidInput: ``pod_uid`` is not a valid pod uid.
        RuntimeFailure: the namespace exists and ``ip netns delete`` failed.

    """
    path = netns_path(pod_uid)
    if not await anyio.Path(path).exists():
        return
    if not await netns_exists(pod_uid):  # a stale file: nothing is mounted on it
        await anyio.Path(path).unlink(missing_ok=True)
        return
    await _ip("netns", "delete", path.name, check=False)
    if await anyio.Path(path).exists():
        # Retry with the error checked, to report why it stays.
        await _ip("netns", "delete", path.name)


async def _ip(*args: str, check: bool = True) -> None:
    try:
        done = await anyio.run_process(["ip", *args], check=False)
    except FileNotFoundError as exc:
        raise RuntimeFailure(
            "the 'ip' command (iproute2) is missing: install the iproute2 package",
            command="ip",
        ) from exc
    if check and done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise RuntimeFailure(f"ip {' '.join(args)} failed: {message}", command=["ip", *args])
