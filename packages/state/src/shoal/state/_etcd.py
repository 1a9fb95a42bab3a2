"""EtcdStore: the StateStore on etcd v3, for servers that share state and fail over.

Every operation is one etcd request, so etcd's guarantees are the store's:
revisions, ``create_revision``/``mod_revision``/``version`` and lease ids are
etcd's own; a compare-and-swap ``put``/``delete`` is one transaction
(``mod_revision == expected``, else read the key to report what it is); a
:meth:`EtcdStore.txn` maps ``Compare``/``PutOp``/``DeleteOp`` one to one onto
etcd compares and requests; watches are etcd watches from a start revision
with ``prev_kv``; leases are etcd leases; leader election is the shared
create-if-absent transaction of ``shoal.state._election``. Keys are stored
under a prefix (see ``shoal.state._etcd_codec``).

Where etcd differs from the in-process stores, etcd is followed:

* Lease ttls are whole seconds, rounded up, and etcd enforces a minimum
  (one to two seconds, from its election timeout); expiry is checked by etcd
  every half second.
* An expired or revoked lease's keys are deleted in one revision.
* ``watch(prefix)`` without a start revision starts after the newest
  revision this store has seen (at least the revision when it was opened),
  so nothing written through it after the call is missed; a watch whose
  connection fails raises ``Unavailable`` — resume it from the revision after
  the last event seen.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

from aetcd import rpc

from shoal.interfaces import (
    AsyncClosing,
    Compacted,
    Compare,
    DeleteOp,
    InvalidInput,
    KeyValue,
    Leadership,
    ListResult,
    NotFound,
    PutOp,
    TxnResult,
    Unavailable,
    WatchEvent,
)

from . import _election
from ._etcd_client import DEFAULT_ENDPOINT, EtcdConnection, Operation, parse_endpoints
from ._etcd_codec import Namespace, compare_and_swap, lease_id
from ._etcd_watch import watch_changes
from ._keys import check_key, check_txn_ops
from ._leases import check_ttl, lease_not_found

__all__ = ["DEFAULT_PREFIX", "EtcdStore"]

DEFAULT_PREFIX = "/shoal"
"""Where an EtcdStore keeps its keys in etcd unless told otherwise."""

_LIST_PAGE = 1000
"""Keys per range request when listing; pages are read at one revision."""


class EtcdStore(AsyncClosing):
    """A StateStore kept in etcd v3, reached through ``aetcd``.

    Use it as ``async with EtcdStore(["10.0.0.1:2379", "10.0.0.2:2379"]) as
    store:``; entering connects (to the first endpoint that answers) and
    fails with :class:`~shoal.interfaces.Unavailable` if none does within
    ``timeout``. Every request is bounded by ``timeout`` too.
    """

    def __init__(
        self,
        endpoints: list[str] | str = DEFAULT_ENDPOINT,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
    ) -> None:
        """Describe a store; nothing connects until it is entered or first used.

        Args:
            endpoints: etcd client addresses, ``host:port`` or ``http://host:port``,
                as a list or comma-separated.
            prefix: Prepended to every key in etcd; stripped from keys read back.
            timeout: Seconds to wait for etcd on connecting and on each request.

        Raises:
            InvalidInput: an endpoint is malformed, or the timeout is not positive.

        """
        self._conn = EtcdConnection(parse_endpoints(endpoints), timeout)
        self._ns = Namespace(prefix)
        self._timeout = timeout
        self._seen = 0

    def __repr__(self) -> str:
        return f"EtcdStore({self._conn.describe()!r}, prefix={self._ns.prefix!r})"

    @property
    def prefix(self) -> str:
        """Return the prefix this store's keys have in etcd."""
        return self._ns.prefix

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.revision()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close the connection: watches end with Unavailable, so do later calls. Idempotent."""
        await self._conn.aclose()

    # -- helpers ---------------------------------------------------------------

    async def _call(self, operation: Operation, *, leases: Sequence[int | None] = ()) -> Any:
        """Run one request; a NotFound from etcd is about one of ``leases``."""
        try:
            _, response = await self._conn.call(operation)
        except NotFound as exc:
            named = sorted({lease for lease in leases if lease is not None})
            if len(named) == 1:
                raise lease_not_found(named[0]) from exc
            raise NotFound(
                f"a lease of this request ({named}) does not exist or has expired; "
                "grant a new lease and use its id",
                leases=named,
            ) from exc
        return response

    def _note(self, revision: Any) -> int:
        """Remember the newest revision seen (where ``watch()`` starts); return it."""
        seen = int(revision)
        self._seen = max(self._seen, seen)
        return seen

    # -- StateStore ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's current value, or None if it does not exist."""
        response = await self._range(rpc.RangeRequest(key=self._ns.key(key)))
        self._note(response.header.revision)
        return self._ns.kv(response.kvs[0]) if response.kvs else None

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value`` at ``key`` and return the new store revision.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.
            NotFound: ``lease`` does not exist or has expired.
            Unavailable: etcd did not answer within the timeout.

        """
        check_key(key)
        raw = self._ns.key(key)
        put = rpc.PutRequest(key=raw, value=value, lease=lease_id(lease))
        if expected_revision is None:
            response = await self._call(
                lambda c: c.kvstub.Put(put, timeout=self._timeout), leases=[lease]
            )
            return self._note(response.header.revision)
        txn = compare_and_swap(raw, expected_revision, rpc.RequestOp(request_put=put))
        response = await self._call(
            lambda c: c.kvstub.Txn(txn, timeout=self._timeout), leases=[lease]
        )
        if not response.succeeded:
            raise self._ns.conflict(key, expected_revision, response)
        return self._note(response.header.revision)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> int | None:
        """Delete ``key``; return the revision of the delete, or None if it did not exist.

        Raises:
            RevisionConflict: ``expected_revision`` was given and did not match.
            Unavailable: etcd did not answer within the timeout.

        """
        check_key(key)
        raw = self._ns.key(key)
        delete = rpc.DeleteRangeRequest(key=raw)
        if expected_revision is None:
            response = await self._call(
                lambda c: c.kvstub.DeleteRange(delete, timeout=self._timeout)
            )
            deleted = int(response.deleted)
        else:
            txn = compare_and_swap(
                raw, expected_revision, rpc.RequestOp(request_delete_range=delete)
            )
            response = await self._call(lambda c: c.kvstub.Txn(txn, timeout=self._timeout))
            if not response.succeeded:
                raise self._ns.conflict(key, expected_revision, response)
            deleted = int(response.responses[0].response_delete_range.deleted)
        revision = self._note(response.header.revision)
        return revision if deleted else None

    async def list(self, prefix: str) -> ListResult:
        """Return every key starting with ``prefix``, sorted by key, and the store revision.

        Large ranges are read in pages, all at the revision of the first page
        (again from the start if that revision is compacted meanwhile).
        """
        start, end = self._ns.range(prefix)
        items: list[KeyValue] = []
        revision = 0
        while True:
            page = rpc.RangeRequest(key=start, range_end=end, limit=_LIST_PAGE, revision=revision)
            try:
                response = await self._range(page)
            except Compacted:  # between two pages: read them all again, at a new revision
                (start, end), items, revision = self._ns.range(prefix), [], 0
                continue
            revision = revision or self._note(response.header.revision)
            items.extend(self._ns.kv(raw) for raw in response.kvs)
            if not response.more or not response.kvs:
                return ListResult(items, revision)
            start = bytes(response.kvs[-1].key) + b"\0"

    async def revision(self) -> int:
        """Return etcd's current revision."""
        response = await self._range(rpc.RangeRequest(key=b"\0", count_only=True))
        return self._note(response.header.revision)

    async def _range(self, request: Any) -> Any:
        return await self._call(lambda c: c.kvstub.Range(request, timeout=self._timeout))

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        ``None`` starts after the newest revision this store has seen. The
        iterator never ends by itself; cancel the task or break out of the loop
        to stop (the etcd watch is cancelled when the iterator is closed or
        garbage-collected).

        Raises:
            Compacted: ``start_revision`` is older than etcd's compacted history.
            Unavailable: the connection failed or the store was closed.

        """
        if start_revision is None:
            start = self._seen + 1 if self._seen else None
        else:
            start = max(start_revision, 1)
        return watch_changes(
            self._conn,
            self._ns,
            prefix,
            start,
            since_now=start_revision is None,
            note=self._note,
            revision=self.revision,
        )

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Atomically run ``success`` if every compare holds, else ``failure``.

        All puts and deletes of one transaction share one new revision.

        Raises:
            InvalidInput: a branch touches one key twice, or a compare is malformed.
            NotFound: a put of the chosen branch names a lease that is not alive.
            Unavailable: etcd did not answer within the timeout.

        """
        check_txn_ops(success)
        check_txn_ops(failure)
        request = rpc.TxnRequest(
            compare=[self._ns.compare(compare) for compare in compares],
            success=[self._ns.request(op) for op in success],
            failure=[self._ns.request(op) for op in failure],
        )
        leases = [op.lease for op in (*success, *failure) if isinstance(op, PutOp)]
        response = await self._call(
            lambda c: c.kvstub.Txn(request, timeout=self._timeout), leases=leases
        )
        deleted = sum(
            int(op.response_delete_range.deleted)
            for op in response.responses
            if op.WhichOneof("response") == "response_delete_range"
        )
        return TxnResult(bool(response.succeeded), self._note(response.header.revision), deleted)

    async def grant_lease(self, ttl: float) -> int:
        """Create a lease that expires ``ttl`` seconds after its last renewal; return its id.

        etcd counts whole seconds: ``ttl`` is rounded up, and etcd may raise it
        to its minimum.

        Raises:
            InvalidInput: ``ttl`` is not a positive number of seconds.

        """
        check_ttl(ttl)
        request = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        response = await self._call(
            lambda c: c.leasestub.LeaseGrant(request, timeout=self._timeout)
        )
        if response.error:
            raise Unavailable(f"etcd refused to grant a lease: {response.error}")
        return int(response.ID)

    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another ttl.

        Raises:
            NotFound: the lease expired or was revoked.

        """
        reply = await self._call(lambda c: c.refresh_lease(lease), leases=[lease])
        if reply is None or int(reply.TTL) <= 0:
            raise lease_not_found(lease)

    async def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys (in one revision); unknown leases are ignored."""
        request = rpc.LeaseRevokeRequest(ID=lease)
        try:
            response = await self._call(
                lambda c: c.leasestub.LeaseRevoke(request, timeout=self._timeout)
            )
        except NotFound:
            return
        self._note(response.header.revision)

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision``; watching from earlier raises Compacted.

        Compacting to a revision at or before an earlier compaction does nothing.

        Raises:
            InvalidInput: ``revision`` is in the future.

        """
        request = rpc.CompactionRequest(revision=revision, physical=True)
        try:
            await self._call(lambda c: c.kvstub.Compact(request, timeout=self._timeout))
        except Compacted:
            return
        except InvalidInput as exc:
            current = await self.revision()
            raise InvalidInput(
                f"cannot compact to revision {revision}: the store is at {current}",
                field="revision",
            ) from exc

    # -- leader election -------------------------------------------------------

    async def campaign(self, election: str, candidate: str, lease: int) -> Leadership:
        """Block until ``candidate`` leads ``election`` on ``lease``; return the proof.

        ``Leadership.revision`` is the election key's ``create_revision``: put
        ``Compare(leadership.key, CREATE_REVISION, leadership.revision)`` in a
        transaction to fence a write to this term of leadership.

        Raises:
            NotFound: ``lease`` does not exist or expired.

        """
        return await _election.campaign(self, election, candidate, lease)

    async def resign(self, leadership: Leadership) -> None:
        """Give up leadership (deletes the election key if still ours)."""
        await _election.resign(self, leadership)

    async def leader(self, election: str) -> str | None:
        """Return the current leader's candidate name, or None."""
        return await _election.leader(self, election)
