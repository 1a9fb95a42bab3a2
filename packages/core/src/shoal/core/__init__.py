"""Shoal's core: scheduler, control and node loops, leader election, service layer.

Everything here works against the protocols of ``shoal.interfaces`` and
names no implementation: ``shoal.agent`` (the composition root) assembles a
node from these parts and concrete ones.
"""

from ._clock import ManualClock, SystemClock
from ._control import ControlLoop
from ._fence import Deposed, FencedStore
from ._hosting import AgentContext, AgentMount, KeyLookup
from ._leader import LEADER_ELECTION, Leader
from ._membership import MembershipSync
from ._metered import MeteredRuntime, MeteredStore
from ._nodeloop import NodeLoop
from ._nodestate import LocalNodeState
from ._plan import diff_fields
from ._repo import Repository, Stored
from ._revisions import revision_of
from ._scheduler import DefaultScheduler
from ._service import LocalNode, ShoalService
from ._shutdown import finish_deletions, report_survivors
from ._usage import UsageSampler

__all__ = [
    "LEADER_ELECTION",
    "AgentContext",
    "AgentMount",
    "ControlLoop",
    "DefaultScheduler",
    "Deposed",
    "FencedStore",
    "KeyLookup",
    "Leader",
    "LocalNode",
    "LocalNodeState",
    "ManualClock",
    "MembershipSync",
    "MeteredRuntime",
    "MeteredStore",
    "NodeLoop",
    "Repository",
    "ShoalService",
    "Stored",
    "SystemClock",
    "UsageSampler",
    "diff_fields",
    "finish_deletions",
    "report_survivors",
    "revision_of",
]
