"""The tamper-evident audit trail: one hash-chained entry per mutating service call.

:class:`AuditLog` appends an :class:`~shoal.interfaces.AuditEntry` under
``/audit/entries/<sequence>`` and moves ``/audit/head`` in the same
transaction, compare-and-swap on the head: two servers (or two calls) never
write the same sequence number, and the chain has no fork. Appends are
serialised per process by a lock, so concurrent calls on one server do not
race each other for the head; the head this process wrote last is kept, so
an append reads the head from the store only when another writer moved it
(its compare-and-swap then fails) — one write per entry, not a read and a write.

:meth:`AuditLog.verify` walks the chain: an edited entry no longer matches
its hash, a deleted one leaves a gap in the sequence (and the next entry's
``previous_hash`` points at nothing), and deleted last entries leave the
head pointing past the end. Rewriting the whole tail *and* the head is only
seen against a head hash recorded elsewhere (``shoal audit verify`` prints it).

:func:`audited` wraps a service method so that every call ends in an entry:
the caller's key and door, the method as the verb, the object named by the
call's arguments (names only: a Secret's data never enters the trail), and
``ok`` or the error code, and the trace the call ran in — and one log line
(``apply Workload default/web by KEY via rest: ok``). A dry run changes
nothing and is not recorded. Every call, dry runs too, is a span named
``shoal.<verb>``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

import anyio

from shoal.interfaces import (
    AUDIT_ENTRIES,
    AUDIT_HEAD,
    GENESIS_HASH,
    Actor,
    AuditEntry,
    AuditReport,
    Clock,
    Compare,
    CompareTarget,
    KeyValue,
    PutOp,
    ShoalError,
    StateStore,
    Unavailable,
    Via,
    audit_hash,
    audit_key,
)

from ._tracing import TRACER, as_current, origin_trace_id

__all__ = ["AuditLog", "audited"]

log = logging.getLogger(__name__)

_APPEND_TRIES = 50
"""Compare-and-swap attempts on the head before an append gives up (another server writes)."""
_SHOWN_OBJECTS = 20
"""Objects named in one entry of an apply; more are counted."""

P = ParamSpec("P")
R = TypeVar("R")


class AuditLog:
    """Appends to and verifies the audit trail kept in ``store``."""

    def __init__(self, store: StateStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = anyio.Lock()
        self._head: _Head | None = None
        """The head as this process last wrote it; None: read it from the store."""

    async def append(
        self,
        actor: Actor,
        verb: str,
        obj: str,
        outcome: str,
        *,
        trace_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry after the current head; return it.

        Raises:
            Unavailable: the store cannot be reached, or the head kept moving.
        """
        async with self._lock:
            for _ in range(_APPEND_TRIES):
                head = self._head or await self._read_head()
                self._head = None  # until this append lands: a failed one proves it stale
                sequence, previous = head.sequence, head.hash
                puts: list[PutOp] = []
                if head.broken:  # the trail says so before it goes on
                    repair = AuditEntry(
                        sequence=sequence + 1,
                        time=self.clock.now(),
                        actor=_SYSTEM.id,
                        door=_SYSTEM.via,
                        verb="repair_audit_head",
                        object=AUDIT_HEAD,
                        outcome=head.broken,
                        previous_hash=previous,
                    )
                    repair = repair.model_copy(update={"hash": audit_hash(repair)})
                    puts.append(
                        PutOp(audit_key(repair.sequence), repair.model_dump_json().encode())
                    )
                    sequence, previous = repair.sequence, repair.hash
                entry = AuditEntry(
                    sequence=sequence + 1,
                    time=self.clock.now(),
                    actor=actor.id,
                    door=actor.via,
                    verb=verb,
                    object=obj,
                    outcome=outcome,
                    trace_id=trace_id,
                    previous_hash=previous,
                )
                entry = entry.model_copy(update={"hash": audit_hash(entry)})
                moved = {"sequence": entry.sequence, "hash": entry.hash}
                outcome_of_txn = await self.store.txn(
                    [Compare(AUDIT_HEAD, CompareTarget.MOD_REVISION, head.mod_revision)],
                    [
                        *puts,
                        PutOp(audit_key(entry.sequence), entry.model_dump_json().encode()),
                        PutOp(AUDIT_HEAD, json.dumps(moved).encode()),
                    ],
                )
                if outcome_of_txn.succeeded:
                    self._head = _Head(outcome_of_txn.revision, entry.sequence, entry.hash)
                    return entry
        raise Unavailable("the audit trail's head kept moving: the entry was not written")

    async def _read_head(self) -> _Head:
        """Read the head; one that is not valid (it was edited) is rebuilt from the last entry.

        The trail then goes on after its last entry stored, and the first
        entry written says the head was repaired and why (see :meth:`append`):
        the calls of the meantime are audited, and the repair is on the record.
        """
        head = await self.store.get(AUDIT_HEAD)
        if head is None:
            return _Head(0, 0, GENESIS_HASH)
        try:
            sequence, hashed = _head_of(head.value)
        except ValueError as exc:
            sequence, hashed = await self._end_of_trail()
            broken = (
                f"the head was not valid ({exc}): it was edited; went on after entry {sequence}"
            )
            log.error("audit trail: %s (see `shoal audit verify`)", broken)
            return _Head(head.mod_revision, sequence, hashed, broken)
        return _Head(head.mod_revision, sequence, hashed)

    async def _end_of_trail(self) -> tuple[int, str]:
        """Return the number of the last entry stored and its hash ("" if it cannot be read).

        The number is its key's: a new entry never overwrites one, even one
        that cannot be read (a chain that breaks there is what verify reports).
        """
        items = (await self.store.list(AUDIT_ENTRIES)).items
        if not items:
            return 0, GENESIS_HASH
        last = items[-1]
        number = _number_of(last.key)
        if number is None:
            return len(items), ""
        try:
            return number, AuditEntry.model_validate_json(last.value).hash
        except ValueError:
            return number, ""

    async def entries(self, limit: int | None = None) -> list[AuditEntry]:
        """Return the entries, oldest first (the last ``limit`` of them if given).

        One that cannot be read (it was overwritten) is shown as such, in its
        place, with the fix: ``shoal audit verify`` tells what else changed.
        """
        listed = await self.store.list(AUDIT_ENTRIES)
        items = listed.items if limit is None else listed.items[-limit:]
        return [_readable(kv) for kv in items]

    async def verify(self) -> AuditReport:
        """Walk the chain from the first entry; report every break.

        Raises:
            Unavailable: the store cannot be reached.
        """
        listed = await self.store.list(AUDIT_ENTRIES)
        head = await self.store.get(AUDIT_HEAD)
        problems: list[str] = []
        try:
            head_sequence, head_hash = (0, GENESIS_HASH) if head is None else _head_of(head.value)
        except ValueError as exc:
            problems.append(f"the head ({AUDIT_HEAD}) is not valid ({exc}): it was edited")
            head_sequence, head_hash = -1, ""
        expected, previous = 1, GENESIS_HASH
        for kv in listed.items:
            try:
                entry = AuditEntry.model_validate_json(kv.value)
            except ValueError:
                problems.append(f"{kv.key} is not an audit entry (it was overwritten)")
                continue
            if kv.key != audit_key(entry.sequence):
                problems.append(f"{kv.key} holds entry {entry.sequence}: it was moved or edited")
            if entry.sequence != expected:
                missing = (
                    f"{expected}"
                    if entry.sequence == expected + 1
                    else (f"{expected} to {entry.sequence - 1}")
                )
                problems.append(f"entry {missing} is missing (deleted) before {entry.sequence}")
            elif entry.previous_hash != previous:
                problems.append(
                    f"entry {entry.sequence} does not follow the entry before it "
                    "(the chain was rewritten from there)"
                )
            if audit_hash(entry) != entry.hash:
                problems.append(
                    f"entry {entry.sequence} ({entry.verb} {entry.object} by {entry.actor}) "
                    "was edited: its content no longer matches its hash"
                )
            expected, previous = entry.sequence + 1, entry.hash
        last = expected - 1
        if head_sequence < 0:
            pass  # unreadable: said above
        elif head_sequence != last:
            problems.append(
                f"the head says entry {head_sequence} is the last but the trail ends at {last}: "
                + (
                    "the last entries were deleted"
                    if head_sequence > last
                    else "the head was reset"
                )
            )
        elif head_sequence and head_hash != previous:
            problems.append(f"the head's hash does not match entry {last}: it was edited")
        return AuditReport(
            intact=not problems,
            entries=len(listed.items),
            head_sequence=head_sequence,
            head_hash=head_hash,
            problems=problems,
        )


class _Head(NamedTuple):
    """The trail's head: the revision it was written at, the last entry's number and hash."""

    mod_revision: int
    """0: there is no head (no entry yet)."""
    sequence: int
    hash: str
    broken: str = ""
    """Why the stored head could not be read (then rebuilt from the last entry), or ""."""


_SYSTEM = Actor(id="shoal", via=Via.SYSTEM)
"""Who writes the entry that records a repaired head."""


def _head_of(value: bytes) -> tuple[int, str]:
    """Return the last entry's number and hash that a head names.

    Raises:
        ValueError: it is not a head (not JSON, or without those fields).
    """
    try:
        data = json.loads(value)
        sequence, hashed = int(data["sequence"]), str(data["hash"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{value[:60]!r} is not a head") from exc
    if sequence < 0:
        raise ValueError(f"sequence {sequence} is not an entry's")
    return sequence, hashed


def _number_of(key: str) -> int | None:
    """Return the entry number a key of the trail names, or None if it names none."""
    number = key.removeprefix(AUDIT_ENTRIES)
    return int(number) if number.isdigit() else None


def _readable(kv: KeyValue) -> AuditEntry:
    """Return the entry stored in ``kv``, or one that says it cannot be read, in its place."""
    try:
        return AuditEntry.model_validate_json(kv.value)
    except ValueError:
        number = _number_of(kv.key)
        return AuditEntry(
            sequence=0 if number is None else number,
            time=datetime.fromtimestamp(0, UTC),
            actor="?",
            door=Via.SYSTEM,
            verb="unreadable",
            object=kv.key,
            outcome="not an audit entry (it was overwritten): run `shoal audit verify`",
            previous_hash="",
        )


class _Audited(Protocol):
    actor: Actor
    audit: AuditLog


S = TypeVar("S", bound=_Audited)
_Method = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]
"""A service method: the service, then its arguments; a coroutine of its result."""


def audited(verb: str, kind: str) -> Callable[[_Method[S, P, R]], _Method[S, P, R]]:
    """Wrap a service method: every call (but a dry run) ends in an audit entry.

    ``kind`` names what the call acts on; the object is ``kind`` with the
    call's ``namespace``/``name`` (or ``reference``, ``path``), or the names
    of the ``specs`` it applies. An entry that cannot be written is logged:
    the call's own result (or error) stands.
    """

    def wrap(method: _Method[S, P, R]) -> _Method[S, P, R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        async def call(service: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(service, *args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            obj = _object_of(kind, arguments)
            attributes: dict[str, str | bool] = {
                "shoal.object": obj,
                "shoal.actor": service.actor.id,
                "shoal.via": str(service.actor.via),
            }
            if arguments.get("dry_run") is True:
                attributes["shoal.dry_run"] = True
            span = TRACER.start_span(
                f"shoal.{verb}",
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            with as_current(span):  # a failure marks the span failed (error_status)
                try:
                    result = await method(service, *args, **kwargs)
                except ShoalError as exc:
                    if not attributes.get("shoal.dry_run"):
                        await _record(service, verb, obj, exc.code)
                    raise
                if not attributes.get("shoal.dry_run"):
                    await _record(service, verb, obj, "ok")
                return result

        return call

    return wrap


async def _record(service: _Audited, verb: str, obj: str, outcome: str) -> None:
    actor = service.actor
    log.info("%s %s by %s via %s: %s", verb, obj, actor.id, actor.via.value, outcome)
    try:
        await service.audit.append(service.actor, verb, obj, outcome, trace_id=origin_trace_id())
    except ShoalError as exc:
        log.error("audit entry of %s %s by %s not written: %s", verb, obj, service.actor.id, exc)


def _object_of(kind: str, arguments: dict[str, Any]) -> str:
    if isinstance(arguments.get("kind"), str):  # delete_config names its kind
        kind = arguments["kind"]
    specs = arguments.get("specs")
    if isinstance(specs, Sequence) and not isinstance(specs, str):
        names = [_spec_name(spec) for spec in specs]
        more = len(names) - _SHOWN_OBJECTS
        shown = ", ".join(names[:_SHOWN_OBJECTS]) + (f", and {more} more" if more > 0 else "")
        return shown or kind
    for field in ("reference", "path"):
        if isinstance(arguments.get(field), str):
            return f"{kind} {arguments[field]}"
    name, namespace = arguments.get("name"), arguments.get("namespace")
    if isinstance(name, str):
        scoped = isinstance(namespace, str) and kind != "Namespace"
        return f"{kind} {namespace}/{name}" if scoped else f"{kind} {name}"
    return kind


def _spec_name(spec: Any) -> str:
    kind = type(spec).__name__.removesuffix("Spec")
    namespace = getattr(spec, "namespace", None)
    name = getattr(spec, "name", "?")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
