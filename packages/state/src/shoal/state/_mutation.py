"""The semantics of writes, shared by every backend.

A backend exposes its keys through the small synchronous :class:`Keyspace`
protocol (a dict and a sorted list for ``MemoryStore``; SQL inside an open
transaction for ``SqliteStore``). Everything that decides *what* a write does —
compare-and-swap, transaction compares, versions and create revisions, lease
checks, the watch events a revision produces — lives here once, so the
backends cannot drift apart.

Checks run before anything is changed: a :class:`Mutation` only applies ops
that were validated, so ``MemoryStore`` needs no rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shoal.interfaces import (
    Compare,
    CompareTarget,
    DeleteOp,
    EventKind,
    InvalidInput,
    KeyValue,
    PutOp,
    RevisionConflict,
    WatchEvent,
)

from ._keys import check_txn_ops
from ._leases import lease_not_found

__all__ = ["Keyspace", "Mutation", "check_expected", "check_lease", "choose_txn_branch"]


class Keyspace(Protocol):
    """The current keys of a backend, as the write logic needs them."""

    def get(self, key: str) -> KeyValue | None:
        """Return the key, or None."""
        ...

    def range(self, prefix: str) -> list[KeyValue]:
        """Return every key starting with ``prefix``, sorted."""
        ...

    def store(self, kv: KeyValue, previous: KeyValue | None) -> None:
        """Write ``kv`` over ``previous`` (the key's current value, or None)."""
        ...

    def remove(self, previous: KeyValue) -> None:
        """Delete the key ``previous`` holds."""
        ...

    def has_lease(self, lease: int) -> bool:
        """Return whether ``lease`` is alive."""
        ...


def check_expected(key: str, current: KeyValue | None, expected: int | None) -> None:
    """Enforce a compare-and-swap: ``expected`` must equal the key's mod revision.

    Args:
        key: The key written.
        current: Its current value, or None when it does not exist.
        expected: None (no check), 0 (must not exist) or the expected ``mod_revision``.

    Raises:
        RevisionConflict: the key's revision is not ``expected``.

    """
    if expected is None:
        return
    actual = 0 if current is None else current.mod_revision
    if actual == expected:
        return
    if expected == 0:
        message = f"{key!r} already exists (revision {actual}) but was expected not to exist"
    elif actual == 0:
        message = f"{key!r} does not exist but was expected at revision {expected}"
    else:
        message = f"{key!r} is at revision {actual}, not {expected}"
    raise RevisionConflict(
        f"{message}; re-read it and retry", key=key, expected=expected, actual=actual
    )


def check_lease(keyspace: Keyspace, lease: int | None) -> None:
    """Raise NotFound unless ``lease`` is None or alive."""
    if lease is not None and not keyspace.has_lease(lease):
        raise lease_not_found(lease)


def _compare_holds(compare: Compare, current: KeyValue | None) -> bool:
    expected = compare.expected
    if compare.target is CompareTarget.VALUE:
        if not isinstance(expected, bytes):
            raise InvalidInput(
                f"a VALUE compare on {compare.key!r} needs bytes, not {type(expected).__name__}",
                key=compare.key,
            )
        return current is not None and current.value == expected
    if not isinstance(expected, int):
        raise InvalidInput(
            f"a {compare.target.value} compare on {compare.key!r} needs an int revision",
            key=compare.key,
        )
    if current is None:
        return expected == 0
    if compare.target is CompareTarget.MOD_REVISION:
        return current.mod_revision == expected
    return current.create_revision == expected


def choose_txn_branch(
    keyspace: Keyspace,
    compares: Sequence[Compare],
    success: Sequence[PutOp | DeleteOp],
    failure: Sequence[PutOp | DeleteOp],
) -> tuple[bool, Sequence[PutOp | DeleteOp]]:
    """Evaluate a transaction's compares and validate the branch that will run.

    Returns:
        Whether every compare held, and the ops to apply.

    Raises:
        InvalidInput: a branch touches a key twice, or a compare is malformed.
        NotFound: a put of the chosen branch names a lease that is not alive.

    """
    check_txn_ops(success)
    check_txn_ops(failure)
    succeeded = all(_compare_holds(c, keyspace.get(c.key)) for c in compares)
    ops = success if succeeded else failure
    for op in ops:
        if isinstance(op, PutOp):
            check_lease(keyspace, op.lease)
    return succeeded, ops


class Mutation:
    """The changes of one revision, applied to a keyspace as they are made.

    ``events`` collects the watch events; the store commits the revision only
    if there are any (a no-op write does not advance the store revision).
    """

    def __init__(self, keyspace: Keyspace, revision: int) -> None:
        self.keyspace = keyspace
        self.revision = revision
        self.events: list[WatchEvent] = []

    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        """Write ``value`` at ``key`` (attached to ``lease``, or to none)."""
        previous = self.keyspace.get(key)
        if previous is None:
            kv = KeyValue(key, value, self.revision, self.revision, 1, lease)
        else:
            kv = KeyValue(
                key, value, previous.create_revision, self.revision, previous.version + 1, lease
            )
        self.keyspace.store(kv, previous)
        prev_value = None if previous is None else previous.value
        self.events.append(WatchEvent(EventKind.PUT, kv, prev_value))

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        previous = self.keyspace.get(key)
        if previous is None:
            return False
        self._remove(previous)
        return True

    def delete_range(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many there were."""
        doomed = self.keyspace.range(prefix)
        for previous in doomed:
            self._remove(previous)
        return len(doomed)

    def apply(self, ops: Sequence[PutOp | DeleteOp]) -> int:
        """Apply validated transaction ops in order; return how many keys were deleted."""
        deleted = 0
        for op in ops:
            if isinstance(op, PutOp):
                self.put(op.key, op.value, op.lease)
            elif op.prefix:
                deleted += self.delete_range(op.key)
            else:
                deleted += self.delete(op.key)
        return deleted

    def _remove(self, previous: KeyValue) -> None:
        self.keyspace.remove(previous)
        tombstone = KeyValue(previous.key, b"", 0, self.revision, 0, None)
        self.events.append(WatchEvent(EventKind.DELETE, tombstone, previous.value))
