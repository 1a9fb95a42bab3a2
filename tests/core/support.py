"""Helpers for the core tests: specs, nodes, and a cluster driven pass by pass."""

from dataclasses import dataclass, field

from shoal.core import ControlLoop, ManualClock, NodeLoop, ShoalService
from shoal.interfaces import Capacity, Node, Workload, WorkloadSpec
from shoal.runtime import MockRuntime
from shoal.state import MemoryStore


def spec(
    name: str = "web", replicas: int = 2, image: str = "busybox", **extra: object
) -> WorkloadSpec:
    document: dict[str, object] = {
        "name": name,
        "replicas": replicas,
        "template": {"containers": [{"name": "main", "image": image}]},
    }
    document.update(extra)
    return WorkloadSpec.model_validate(document)


def make_node(name: str, **fields: object) -> Node:
    """Return a node record; ``cpu`` and ``memory`` (quantities) set its capacity."""
    cpu, memory = fields.pop("cpu", "4"), fields.pop("memory", "8Gi")
    capacity = Capacity.model_validate({"cpu": cpu, "memory": memory})
    return Node.model_validate(
        {"name": name, "capacity": capacity, "allocatable": capacity, "runtime": "mock", **fields}
    )


@dataclass
class Cluster:
    """One control loop and one node loop per node, driven pass by pass."""

    store: MemoryStore
    clock: ManualClock
    control: ControlLoop
    service: ShoalService
    nodes: dict[str, NodeLoop] = field(default_factory=dict)
    runtimes: dict[str, MockRuntime] = field(default_factory=dict)

    async def add_node(
        self, name: str, runtime: MockRuntime | None = None, **flags: str | bool
    ) -> NodeLoop:
        runtime = runtime or MockRuntime(self.clock)
        loop = NodeLoop(make_node(name, **flags), self.store, runtime, self.clock)
        await loop.register()
        self.nodes[name] = loop
        self.runtimes[name] = runtime
        return loop

    async def settle(self, rounds: int = 30) -> int:
        """Run control and node passes until a full round changes nothing; return the rounds."""
        for round_ in range(rounds):
            before = await self.store.revision()
            await self.control.reconcile_once()
            for loop in self.nodes.values():
                await loop.reconcile_once()
            if await self.store.revision() == before:
                return round_
        raise AssertionError(f"did not settle in {rounds} rounds")

    async def workload(self, name: str = "web") -> Workload:
        return await self.service.get_workload(name)
