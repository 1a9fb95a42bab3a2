"""Shoal's core: scheduler, control and node loops, service layer, node assembly.

Everything here works against the protocols of ``shoal.interfaces``; only
``shoal.core.node`` (the composition root) names concrete implementations.
"""

from ._clock import ManualClock, SystemClock
from ._control import ControlLoop
from ._fence import Deposed, FencedStore
from ._membership import MembershipSync
from ._nodeloop import NodeLoop
from ._plan import diff_fields
from ._repo import Repository, Stored
from ._scheduler import DefaultScheduler
from ._service import LocalNode, ShoalService

__all__ = [
    "ControlLoop",
    "DefaultScheduler",
    "Deposed",
    "FencedStore",
    "LocalNode",
    "ManualClock",
    "MembershipSync",
    "NodeLoop",
    "Repository",
    "ShoalService",
    "Stored",
    "SystemClock",
    "diff_fields",
]
