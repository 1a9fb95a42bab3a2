"""Fenced writes: a leader's view of the store that refuses to write once deposed.

A leader that lost its term — its lease expired while it was cut off, or it
resigned and another server won — may still be half-way through a control
loop pass. :class:`FencedStore` makes the writes of that pass fail instead of
landing on top of the new leader's: every ``put``, ``delete`` and ``txn``
becomes one transaction that also compares the election key's
``create_revision`` with the term's (:class:`~shoal.interfaces.Leadership`).

When such a transaction fails, the store is read to say why: the election key
moved on (:class:`Deposed`, an :class:`~shoal.interfaces.Unavailable`: the
writer must stop and campaign again), or the caller's own compare-and-swap
lost (:class:`~shoal.interfaces.RevisionConflict`, as the wrapped store
raises it). The answer cannot be wrong: a key's ``create_revision`` never
comes back once the key is gone, so an election key that matches now also
matched when the transaction ran.

Reads, watches, leases and elections pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from shoal.interfaces import (
    Compare,
    CompareTarget,
    DeleteOp,
    InternalError,
    InvalidInput,
    KeyValue,
    Leadership,
    PutOp,
    RevisionConflict,
    ShoalError,
    StateStore,
    StoreWrapper,
    TxnResult,
    Unavailable,
)

__all__ = ["Deposed", "FencedStore"]


class Deposed(Unavailable):
    """A fenced write was refused: its writer no longer holds the leadership it was fenced by."""


class FencedStore(StoreWrapper):
    """``store`` as seen by the holder of ``leadership``: writes land only during its term.

    Args:
        store: The store to read from and write to.
        leadership: The term that fences every write.

    """

    def __init__(self, store: StateStore, leadership: Leadership) -> None:
        super().__init__(store)
        self.leadership = leadership
        self.fence = Compare(leadership.key, CompareTarget.CREATE_REVISION, leadership.revision)
        """The compare every write carries: the election key is still this term's."""

    def __repr__(self) -> str:
        lead = self.leadership
        return f"FencedStore({self.inner!r}, {lead.candidate!r} since revision {lead.revision})"

    # -- writes: fenced --------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key`` if this term still leads; return the new revision.

        Raises:
            Deposed: the term is over; nothing was written.
            RevisionConflict: ``expected_revision`` was given and did not match.
            NotFound: ``lease`` does not exist or has expired.

        """
        outcome = await self._write(key, expected_revision, PutOp(key, value, lease))
        return outcome.revision

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key`` if this term still leads; return the revision, or None if it was absent.

        Raises:
            Deposed: the term is over; nothing was deleted.
            RevisionConflict: ``expected_revision`` was given and did not match.

        """
        outcome = await self._write(key, expected_revision, DeleteOp(key))
        return outcome.revision if outcome.deleted else None

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Run ``success`` if every compare holds and this term still leads.

        A fenced transaction has no failure branch: with the fence among the
        compares, that branch would also run — unfenced — for a deposed leader.

        Raises:
            Deposed: the term is over; nothing was written.
            InvalidInput: ``failure`` is not empty.

        """
        if failure:
            raise InvalidInput(
                "a fenced transaction cannot have a failure branch (it would run for a deposed "
                "leader too): check the result and write the fallback in a second transaction",
                field="failure",
            )
        outcome = await self.inner.txn([*compares, self.fence], success)
        if not outcome.succeeded:
            await self._check_leading()
        return outcome

    async def _write(self, key: str, expected: int | None, op: PutOp | DeleteOp) -> TxnResult:
        """Apply one op fenced, with a compare-and-swap on ``key`` when ``expected`` is given."""
        compares = [self.fence]
        if expected is not None:
            compares.append(Compare(key, CompareTarget.MOD_REVISION, expected))
        outcome = await self.inner.txn(compares, [op])
        if not outcome.succeeded:
            await self._check_leading()
            raise _conflict(key, expected, await self.inner.get(key))
        return outcome

    async def _check_leading(self) -> None:
        """Raise Deposed unless the election key still belongs to this term."""
        lead = self.leadership
        holder = await self.inner.get(lead.key)
        if holder is not None and holder.create_revision == lead.revision:
            return
        now = (
            "nobody holds it now"
            if holder is None
            else f"{holder.value.decode(errors='replace')!r} holds it since revision "
            f"{holder.create_revision}"
        )
        raise Deposed(
            f"{lead.candidate} is no longer the leader of {lead.election!r} (its term began at "
            f"revision {lead.revision}; {now}); it stops writing until it wins the election again",
            election=lead.election,
            candidate=lead.candidate,
            revision=lead.revision,
        )

    # Reads, watches, leases and elections pass through (StoreWrapper).

    async def aclose(self) -> None:
        """Do nothing: the wrapped store belongs to whoever made it, who closes it."""


def _conflict(key: str, expected: int | None, current: KeyValue | None) -> ShoalError:
    """Return the error of a compare-and-swap on ``key`` that failed while leading.

    The message and details are those of the stores' own ``put``/``delete``.
    """
    if expected is None:  # only the fence could fail, and it held: a bug
        return InternalError(f"a fenced write of {key!r} failed although its term still leads")
    actual = 0 if current is None else current.mod_revision
    if actual == expected:  # expected absent, and deleted again since
        message = f"{key!r} changed while it was written"
    elif expected == 0:
        message = f"{key!r} already exists (revision {actual}) but was expected not to exist"
    elif actual == 0:
        message = f"{key!r} does not exist but was expected at revision {expected}"
    else:
        message = f"{key!r} is at revision {actual}, not {expected}"
    return RevisionConflict(
        f"{message}; re-read it and retry", key=key, expected=expected, actual=actual
    )
