"""Shoal's container runtimes.

:class:`MockRuntime` runs pods in memory, deterministically, with injectable
faults (:class:`Fault`, :class:`FaultKind`, :class:`Faults`); it is the fake
that tests and benchmarks use. The OCI CLI runtime (runc) joins it later.
"""

from ._faults import Fault, FaultKind, Faults
from ._mock import MockRuntime

__all__ = ["Fault", "FaultKind", "Faults", "MockRuntime"]
