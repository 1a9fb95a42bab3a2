"""Leader election on leases, written once against the StateStore protocol.

The leader of election ``e`` is whoever holds the key ``/_elections/e``. A
candidate creates it with a create-if-absent transaction, attached to its
lease; while it keeps the lease alive the key stays, and when it resigns or
its lease expires the key is deleted. Waiting candidates watch the key from
the revision they last saw it at, so they cannot miss its deletion, and race
to create it again. The key's ``create_revision`` identifies one term of
leadership: it fences the leader's writes and guards :func:`resign`.
"""

from __future__ import annotations

from shoal.interfaces import (
    Compacted,
    Compare,
    CompareTarget,
    DeleteOp,
    EventKind,
    InvalidInput,
    KeyValue,
    Leadership,
    PutOp,
    StateStore,
)

from ._keys import election_key

__all__ = ["campaign", "leader", "resign"]


async def campaign(store: StateStore, election: str, candidate: str, lease: int) -> Leadership:
    """Block until ``candidate`` leads ``election`` on ``lease``; return the proof.

    If the election key already belongs to ``lease`` (a candidate campaigning
    again after a restart of its loop), that term is resumed.

    Raises:
        InvalidInput: the election or candidate name is empty.
        NotFound: ``lease`` does not exist or expired while waiting.

    """
    key = election_key(election)
    if not candidate:
        raise InvalidInput("a candidate name must not be empty", field="candidate")
    while True:
        outcome = await store.txn(
            [Compare(key, CompareTarget.CREATE_REVISION, 0)],
            [PutOp(key, candidate.encode(), lease=lease)],
        )
        if outcome.succeeded:
            return Leadership(election, candidate, lease, key, outcome.revision)
        holder = await store.get(key)
        if holder is None:
            continue
        if holder.lease == lease:
            return Leadership(election, holder.value.decode(), lease, key, holder.create_revision)
        await _wait_for_delete(store, holder)


async def _wait_for_delete(store: StateStore, holder: KeyValue) -> None:
    """Return once ``holder``'s key has been deleted (or compacted history hides when)."""
    try:
        async for event in store.watch(holder.key, holder.mod_revision + 1):
            if event.kv.key == holder.key and event.kind is EventKind.DELETE:
                return
    except Compacted:
        # The history since we looked is gone; look again.
        return


async def resign(store: StateStore, leadership: Leadership) -> None:
    """Give up leadership: delete the election key if it is still this term's."""
    await store.txn(
        [Compare(leadership.key, CompareTarget.CREATE_REVISION, leadership.revision)],
        [DeleteOp(leadership.key)],
    )


async def leader(store: StateStore, election: str) -> str | None:
    """Return the current leader's candidate name, or None when nobody leads."""
    holder = await store.get(election_key(election))
    return None if holder is None else holder.value.decode()
