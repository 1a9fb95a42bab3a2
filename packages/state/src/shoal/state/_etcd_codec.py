"""Between Shoal's key/value model and etcd's messages, under a key prefix.

A store's keys live in etcd under its ``prefix``, prepended verbatim (as
etcd's own ``namespace`` client does): with the default ``/shoal`` the key
``/workloads/web`` is stored at ``/shoal/workloads/web``. Everything written
goes through :meth:`Namespace.key`, everything read back through
:meth:`Namespace.strip`, and every range (list, watch, delete-prefix) is
bounded to the prefix, so a store sees nothing outside it. Choose prefixes
that do not start one another (``/shoal`` and ``/shoal-staging`` overlap).

Revisions, versions and lease ids are etcd's own, unchanged; lease id 0 (no
lease) becomes ``None``. A delete event's key-value is etcd's tombstone:
empty value, ``create_revision`` and ``version`` 0, ``mod_revision`` the
revision of the delete — the same shape ``MemoryStore`` reports.
"""

from __future__ import annotations

from typing import Any

from aetcd import rpc

from shoal.interfaces import (
    Compare,
    CompareTarget,
    DeleteOp,
    EventKind,
    InternalError,
    InvalidInput,
    KeyValue,
    PutOp,
    WatchEvent,
)

from ._leases import lease_not_found
from ._mutation import check_expected

__all__ = ["Namespace", "compare_and_swap", "lease_id", "range_end"]

_ALL_KEYS = b"\0"
"""etcd's range end meaning "every key from the start key on"."""


def range_end(start: bytes) -> bytes:
    """Return the exclusive end of the range of keys starting with ``start``."""
    chars = bytearray(start)
    while chars:
        if chars[-1] < 0xFF:
            chars[-1] += 1
            return bytes(chars)
        chars.pop()
    return _ALL_KEYS


def lease_id(lease: int | None) -> int:
    """Return etcd's lease field for ``lease`` (0 for none).

    Raises:
        NotFound: ``lease`` is not a positive id (etcd would read 0 as "no lease").

    """
    if lease is None:
        return 0
    if lease <= 0:
        raise lease_not_found(lease)
    return lease


def compare_and_swap(key: bytes, expected: int, request: Any) -> Any:
    """Return a transaction: ``request`` if ``key``'s mod revision is ``expected``, else read it.

    ``expected`` 0 means "the key does not exist" (etcd's revisions of a missing
    key are 0); the read on failure says what the key is instead.
    """
    guard = rpc.Compare(
        key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=expected
    )
    read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
    return rpc.TxnRequest(compare=[guard], success=[request], failure=[read])


class Namespace:
    """Maps keys, ranges, key-values, events and transaction parts to and from etcd."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._raw = _encode(prefix, "prefix")

    def key(self, key: str) -> bytes:
        """Return the etcd key of ``key``.

        Raises:
            InvalidInput: ``key`` cannot be encoded as UTF-8.

        """
        return self._raw + _encode(key, "key")

    def strip(self, raw: bytes) -> str:
        """Return the store key of the etcd key ``raw`` (which is under the prefix)."""
        return raw[len(self._raw) :].decode()

    def range(self, prefix: str) -> tuple[bytes, bytes]:
        """Return the etcd ``(key, range_end)`` of every key starting with ``prefix``."""
        start = self.key(prefix)
        if not start:
            return _ALL_KEYS, _ALL_KEYS
        return start, range_end(start)

    # -- etcd -> Shoal -----------------------------------------------------------

    def kv(self, raw: Any) -> KeyValue:
        """Return the KeyValue of an etcd ``mvccpb.KeyValue`` (or aetcd's copy of one)."""
        lease = int(raw.lease)
        return KeyValue(
            key=self.strip(raw.key),
            value=bytes(raw.value),
            create_revision=int(raw.create_revision),
            mod_revision=int(raw.mod_revision),
            version=int(raw.version),
            lease=lease or None,
        )

    def event(self, raw: Any) -> WatchEvent:
        """Return the WatchEvent of an ``aetcd`` watch event."""
        # aetcd wraps an unset prev_kv too; a real one always has a mod revision.
        prev = raw.prev_kv
        prev_value = bytes(prev.value) if prev is not None and int(prev.mod_revision) else None
        if raw.kind == "DELETE":
            tombstone = KeyValue(self.strip(raw.kv.key), b"", 0, int(raw.kv.mod_revision), 0)
            return WatchEvent(EventKind.DELETE, tombstone, prev_value)
        return WatchEvent(EventKind.PUT, self.kv(raw.kv), prev_value)

    # -- Shoal -> etcd -------------------------------------------------------------

    def compare(self, compare: Compare) -> Any:
        """Return the etcd ``Compare`` that holds when ``compare`` does.

        etcd treats a missing key as having revisions 0 and never matching a
        value compare, which is the protocol's rule too.

        Raises:
            InvalidInput: the expected value has the wrong type for the target.

        """
        key, expected = self.key(compare.key), compare.expected
        if compare.target is CompareTarget.VALUE:
            if not isinstance(expected, bytes):
                raise InvalidInput(
                    f"a VALUE compare on {compare.key!r} needs bytes, "
                    f"not {type(expected).__name__}",
                    key=compare.key,
                )
            return rpc.Compare(
                key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, value=expected
            )
        if not isinstance(expected, int) or isinstance(expected, bool):
            raise InvalidInput(
                f"a {compare.target.value} compare on {compare.key!r} needs an int revision",
                key=compare.key,
            )
        if compare.target is CompareTarget.MOD_REVISION:
            return rpc.Compare(
                key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=expected
            )
        return rpc.Compare(
            key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=expected
        )

    def conflict(self, key: str, expected: int, response: Any) -> InternalError:
        """Raise the RevisionConflict of a failed :func:`compare_and_swap` response.

        Raises:
            RevisionConflict: always, naming what the key is instead.

        """
        kvs = response.responses[0].response_range.kvs
        check_expected(key, self.kv(kvs[0]) if kvs else None, expected)
        # The compare failed, so check_expected raised; getting here is a bug.
        return InternalError(f"compare-and-swap on {key!r} failed without a conflict")

    def request(self, op: PutOp | DeleteOp) -> Any:
        """Return the etcd ``RequestOp`` of a transaction op (a prefix delete is a range)."""
        if isinstance(op, PutOp):
            put = rpc.PutRequest(key=self.key(op.key), value=op.value, lease=lease_id(op.lease))
            return rpc.RequestOp(request_put=put)
        if op.prefix:
            start, end = self.range(op.key)
            delete = rpc.DeleteRangeRequest(key=start, range_end=end)
        else:
            delete = rpc.DeleteRangeRequest(key=self.key(op.key))
        return rpc.RequestOp(request_delete_range=delete)


def _encode(text: str, field: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"the {field} {text!r} is not valid Unicode text (it holds a lone surrogate)",
            field=field,
        ) from exc
