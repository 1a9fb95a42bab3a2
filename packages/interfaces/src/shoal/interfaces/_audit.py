"""The audit trail's entries: who changed what through which door, chained by hashes.

Every mutating call of the service layer appends one :class:`AuditEntry`.
An entry's :attr:`~AuditEntry.hash` is the SHA-256 of the previous entry's
hash and the entry's own fields (canonical JSON), so editing an entry breaks
its hash, and deleting one breaks the chain of the next (or, for the last, the
head the store keeps): :class:`AuditReport` says which. Entries hold names,
never values: a Secret's data never enters the trail.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from ._base import Model
from ._wire import Via

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditReport", "audit_hash"]

GENESIS_HASH = "0" * 64
"""The previous hash of the first entry."""


class AuditEntry(Model):
    """One mutating call: who, through which door, what, on what, how it ended."""

    sequence: int
    """1 for the first entry, then one more per entry."""
    time: datetime
    """When the call ended (UTC)."""
    actor: str
    """The caller's key id, or a component's name."""
    door: Via
    """The front door the call came through (rest, cli, mcp, ui, ...)."""
    verb: str
    """The service call, e.g. apply, scale, delete_workload."""
    object: str
    """What it acted on, e.g. 'Workload shop/web' (names only, never values)."""
    outcome: str
    """'ok', or the error code the call ended with."""
    trace_id: str | None = None
    """The trace of the call, when it was traced."""
    previous_hash: str
    """The hash of the entry before (GENESIS_HASH for the first)."""
    hash: str = ""
    """SHA-256 of previous_hash and this entry's other fields."""


def audit_hash(entry: AuditEntry) -> str:
    """Return the hash ``entry`` must carry: SHA-256 over its fields but ``hash``."""
    fields = entry.model_dump(mode="json", exclude={"hash"})
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditReport(Model):
    """The result of checking the audit trail's chain."""

    intact: bool
    """True when every entry is there, unedited, in order."""
    entries: int
    """How many entries were checked."""
    head_sequence: int
    """The last entry's sequence number as the store's head records it."""
    head_hash: str
    """The last entry's hash (record it elsewhere to detect a rewrite of the whole tail)."""
    problems: list[str]
    """What is wrong, one line per finding (empty when intact)."""
