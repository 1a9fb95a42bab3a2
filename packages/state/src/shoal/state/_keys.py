"""Keys and key ranges: validation, prefix bounds, and transaction op checks.

Keys are compared by Unicode code point, which is also the byte order of their
UTF-8 encoding, so a prefix is the half-open range ``[prefix, prefix_end)``
both for Python's sorted lists and for SQLite's ``BINARY`` collation.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

from shoal.interfaces import DeleteOp, InvalidInput, PutOp

__all__ = [
    "ELECTION_PREFIX",
    "check_key",
    "check_txn_ops",
    "election_key",
    "prefix_end",
]

ELECTION_PREFIX = "/_elections/"
"""Where leader-election keys live: ``/_elections/{election}``."""

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def prefix_end(prefix: str) -> str | None:
    """Return the smallest key greater than every key starting with ``prefix``.

    Args:
        prefix: The prefix of a key range.

    Returns:
        The exclusive upper bound of the range, or None when the range is
        unbounded above (the empty prefix, or one made only of U+10FFFF).

    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code > _MAX_CODE_POINT:
            continue
        if code in _SURROGATES:
            # Surrogates cannot be encoded in UTF-8 (nor stored by SQLite).
            code = _SURROGATES.stop
        return "".join(chars) + chr(code)
    return None


def check_key(key: str) -> None:
    """Reject a key the store cannot hold.

    Raises:
        InvalidInput: the key is empty.

    """
    if not key:
        raise InvalidInput("a store key must not be empty", field="key")


def election_key(election: str) -> str:
    """Return the key that holds the leader of ``election``.

    Raises:
        InvalidInput: the election name is empty.

    """
    if not election:
        raise InvalidInput("an election name must not be empty", field="election")
    return f"{ELECTION_PREFIX}{election}"


def check_txn_ops(ops: Sequence[PutOp | DeleteOp]) -> None:
    """Reject a transaction branch that touches one key twice, as etcd does.

    Two puts of one key, or a put inside a range that the same branch deletes,
    would make the branch's outcome depend on op order.

    Raises:
        InvalidInput: a key is put twice, or put and deleted.

    """
    put_keys: list[str] = []
    for op in ops:
        if isinstance(op, PutOp):
            check_key(op.key)
            put_keys.append(op.key)
        elif not op.prefix:
            check_key(op.key)
    put_keys.sort()
    for before, after in pairwise(put_keys):
        if before == after:
            raise InvalidInput(
                f"transaction puts {after!r} twice; put each key at most once", key=after
            )
    for op in ops:
        if isinstance(op, DeleteOp) and put_keys:
            clash = _first_in_range(put_keys, op)
            if clash is not None:
                raise InvalidInput(
                    f"transaction both puts and deletes {clash!r}; do one or the other",
                    key=clash,
                )


def _first_in_range(sorted_keys: list[str], op: DeleteOp) -> str | None:
    index = bisect_left(sorted_keys, op.key)
    if index == len(sorted_keys):
        return None
    candidate = sorted_keys[index]
    if op.prefix:
        return candidate if candidate.startswith(op.key) else None
    return candidate if candidate == op.key else None
