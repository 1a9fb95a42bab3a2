"""What every runtime says the same way about init containers and container names.

Init containers (``PodSpec.init_containers``) run one after another, each to
exit 0, before the pod's containers start; they share the pod's network
namespace and volumes. One that exits non-zero fails ``run``/``start`` with
:func:`init_container_failed`; the pod stays, its containers created, for
``remove`` (or another ``start``, which runs the failed init container again;
those that succeeded are not run twice, as in Kubernetes).
"""

from __future__ import annotations

from collections.abc import Sequence

from shoal.interfaces import PodSpec, RuntimeFailure

__all__ = ["LOG_LINES", "check_container_names", "init_container_failed"]

LOG_LINES = 5
"""How many of a failed init container's last log lines its error quotes."""


def check_container_names(pod: PodSpec) -> None:
    """Refuse a pod that names two of its containers (init containers included) alike.

    Raises:
        RuntimeFailure: a name is used twice.

    """
    names = [c.name for c in [*pod.init_containers, *pod.containers]]
    if len(set(names)) != len(names):
        raise RuntimeFailure(
            f"pod {pod.uid!r} names a container twice ({names}): give every container and "
            "init container of a pod its own name",
            uid=pod.uid,
        )


def init_container_failed(
    uid: str, name: str, exit_code: int, last_lines: Sequence[str] = ()
) -> RuntimeFailure:
    """Return the error of init container ``name`` that exited with ``exit_code``."""
    message = f"init container {name!r} of pod {uid!r} exited with code {exit_code}"
    if last_lines:
        message += "; its last log lines: " + " | ".join(line.strip() for line in last_lines)
    message += " (the pod's containers were not started)"
    return RuntimeFailure(message, uid=uid, container=name, exit_code=exit_code)
