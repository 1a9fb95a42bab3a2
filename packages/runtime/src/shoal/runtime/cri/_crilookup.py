"""Finding Shoal's pods in a CRI runtime, and reading their status.

A pod is found by its labels (``io.shoal.runtime`` = the owner,
``io.shoal.pod-uid``), never only by what this process remembers: the id of
each pod's sandbox is cached (:attr:`PodLookup.ids`) and looked up again when
the runtime says it is gone, so a new process or a restarted containerd
finds the same pods. The pod's spec comes back from its sandbox's
annotation (see :mod:`._cripod`).
"""

from __future__ import annotations

from shoal.interfaces import (
    ContainerState,
    ContainerStatus,
    NotFound,
    PodSpec,
    PodStatus,
    RuntimeFailure,
)

from ._client import CriClient, pb
from ._cripod import LABEL_OWNER, LABEL_UID, SPEC_ANNOTATION, container_status, is_init, ordered

__all__ = ["CriPod", "PodLookup", "spec_of"]


class CriPod:
    """What the runtime holds of one pod: its sandbox and containers, in the pod's order."""

    def __init__(
        self, spec: PodSpec, sandbox: pb.PodSandboxStatus, containers: list[pb.Container]
    ) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.inits = [c for c in containers if is_init(c)]
        self.containers = [c for c in containers if not is_init(c)]

    def container(self, name: str, *, init: bool = False) -> pb.Container:
        """Return the container ``name`` (init containers too with ``init``).

        Raises:
            NotFound: the pod has none of that name (yet).

        """
        for container in [*self.inits, *self.containers] if init else self.containers:
            if container.metadata.name == name:
                return container
        names = ", ".join(c.name for c in self.spec.containers)
        raise NotFound(
            f"pod {self.spec.uid!r} has no container {name!r} (it has {names})",
            uid=self.spec.uid,
            container=name,
        )


class PodLookup:
    """Finds the pods of one owner in a CRI runtime and reads their status.

    Args:
        client: The runtime's CRI client.
        owner: The ``io.shoal.runtime`` label value of the pods.
        host_network: Whether the pods use the node's network (address 127.0.0.1).

    """

    def __init__(self, client: CriClient, owner: str, *, host_network: bool) -> None:
        self.client = client
        self.owner = owner
        self.host_network = host_network
        self.endpoint = client.endpoint
        self.ids: dict[str, str] = {}
        """Sandbox id by pod uid, as last seen (checked again when the runtime says it is gone)."""

    async def sandboxes(self, labels: dict[str, str]) -> list[pb.PodSandbox]:
        """Return the sandboxes that carry ``labels``."""
        reply = await self.client.runtime(
            "ListPodSandbox",
            pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(label_selector=labels)),
            pb.ListPodSandboxResponse,
        )
        return list(reply.items)

    async def find(self, uid: str) -> str | None:
        """Return the id of the pod's newest sandbox, or None."""
        sandboxes = await self.sandboxes({LABEL_OWNER: self.owner, LABEL_UID: uid})
        if not sandboxes:
            self.ids.pop(uid, None)
            return None
        newest = max(sandboxes, key=lambda s: s.created_at).id
        self.ids[uid] = newest
        return newest

    async def sandbox_status(self, sandbox_id: str) -> pb.PodSandboxStatus:
        """Return a sandbox's status (its annotations and address included)."""
        reply = await self.client.runtime(
            "PodSandboxStatus",
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id),
            pb.PodSandboxStatusResponse,
        )
        return reply.status

    async def container_status(self, container_id: str) -> pb.ContainerStatus:
        """Return a container's status (exit code, times, reason)."""
        reply = await self.client.runtime(
            "ContainerStatus",
            pb.ContainerStatusRequest(container_id=container_id),
            pb.ContainerStatusResponse,
        )
        return reply.status

    async def get(self, uid: str) -> CriPod:
        """Return the pod's sandbox and containers.

        Raises:
            NotFound: no such pod.

        """
        for attempt in range(2):
            sandbox_id = self.ids.get(uid) if attempt == 0 else await self.find(uid)
            if sandbox_id is None:
                continue
            try:
                status = await self.sandbox_status(sandbox_id)
            except NotFound:
                self.ids.pop(uid, None)
                continue
            reply = await self.client.runtime(
                "ListContainers",
                pb.ListContainersRequest(
                    filter=pb.ContainerFilter(
                        pod_sandbox_id=sandbox_id, label_selector={LABEL_OWNER: self.owner}
                    )
                ),
                pb.ListContainersResponse,
            )
            return CriPod(spec_of(status), status, ordered(reply.containers))
        raise NotFound(f"no pod with uid {uid!r} in the CRI runtime at {self.endpoint}", uid=uid)

    def ip(self, sandbox: pb.PodSandboxStatus) -> str | None:
        """Return the pod's address: its sandbox's, or 127.0.0.1 with host networking."""
        return "127.0.0.1" if self.host_network else (sandbox.network.ip or None)

    async def status(self, pod: CriPod) -> PodStatus:
        """Return Shoal's status of the pod, asking the runtime for each container's."""
        created = {c.metadata.name: c for c in pod.containers}
        containers = []
        for spec in pod.spec.containers:
            current = created.get(spec.name)
            if current is None:  # created once the init containers have succeeded
                waiting = ContainerStatus(
                    name=spec.name,
                    id="",
                    state=ContainerState.CREATED,
                    message="waiting for its init containers",
                )
                containers.append(waiting)
                continue
            status = await self.container_status(current.id)
            containers.append(container_status(spec.name, status))
        return PodStatus(
            uid=pod.spec.uid,
            name=pod.spec.name,
            namespace=pod.spec.namespace,
            containers=containers,
            ip=self.ip(pod.sandbox),
        )


def spec_of(status: pb.PodSandboxStatus) -> PodSpec:
    """Return the pod spec a sandbox carries.

    Raises:
        RuntimeFailure: it carries none (not created by Shoal).

    """
    text = status.annotations.get(SPEC_ANNOTATION)
    if text is None:
        raise RuntimeFailure(
            f"sandbox {status.id} is labelled as Shoal's but carries no pod spec: "
            "remove it with `crictl rmp`",
            sandbox=status.id,
        )
    return PodSpec.model_validate_json(text)
