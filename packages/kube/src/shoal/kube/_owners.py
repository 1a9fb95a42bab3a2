"""Who owns what in a watched directory: apply a file's objects, prune what it dropped.

Each object is owned by one file, named in its ``shoal.dev/manifest``
annotation (``NODE:PATH``). When two files define the same object, the first
path in sort order wins it; the other reports a conflict and applies the rest.
A file that fails keeps what it owns (its last good content still claims it).
Only an object whose annotation names this node and the file is pruned; one
applied by hand, or by another node, never is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple, Protocol

from shoal.interfaces import (
    MANIFEST_ANNOTATION,
    ChangeAction,
    Clock,
    ManifestSource,
    NamespaceSpec,
    NotFound,
    ObjectSpec,
    Service,
    ShoalError,
)

__all__ = ["Owners", "Ref", "Source"]

_PRUNE_ORDER = {"Workload": 0, "ConfigMap": 1, "Secret": 1, "Namespace": 2}
"""Workloads go first, Namespaces last (a Namespace that still holds objects is refused)."""


class Ref(NamedTuple):
    """An object's identity: kind, namespace ('' for a Namespace) and name."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, spec: ObjectSpec) -> Ref:
        """Return the identity of ``spec``."""
        namespace = "" if isinstance(spec, NamespaceSpec) else spec.namespace
        return cls(spec.kind, namespace, spec.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass
class Source:
    """One file as last read, and what it owns."""

    path: str
    hash: str = ""
    applied_hash: str = ""
    applied_at: datetime | None = None
    error: str = ""
    retry: bool = False
    """The last failure may pass (the service refused or could not be reached): try again."""
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    skipped: bool = False
    desired: dict[Ref, ObjectSpec] | None = None
    """The objects of the last content applied; None before one was."""
    owned: set[Ref] = field(default_factory=set)
    """The objects it applied (or, after a restart, that carry its annotation)."""

    def claims(self) -> Iterable[Ref]:
        """Return what it defines: its last good content's objects, else what it owns."""
        return self.owned if self.desired is None else self.desired.keys()

    def status(self, node: str) -> ManifestSource:
        """Return it as ``shoal manifests`` shows it."""
        return ManifestSource(
            path=self.path,
            node=node,
            hash=self.hash,
            applied_hash=self.applied_hash,
            applied_at=self.applied_at,
            objects=sorted(str(ref) for ref in self.owned),
            error=self.error,
            warnings=list(self.warnings),
            conflicts=list(self.conflicts),
            skipped=self.skipped,
        )


class EventSink(Protocol):
    """Records an event about a file: ``(path, reason, message, warning)``."""

    def __call__(
        self, path: str, reason: str, message: str, warning: bool = False
    ) -> Awaitable[None]: ...


class Owners:
    """The files of a watcher and the objects each owns; applies and prunes through a service."""

    def __init__(self, service: Service, node: str, clock: Clock, event: EventSink) -> None:
        self.service = service
        self.node = node
        self.clock = clock
        self.event = event
        self.sources: dict[str, Source] = {}
        self.leftovers: dict[Ref, str] = {}
        """Objects to prune whose file is gone (a failed prune, or found at start): ref -> path."""
        self.ahead: dict[str, set[Ref]] = {}
        """What the new content of files in a batch defines, read but not yet applied: it
        counts as their claim (see :meth:`owners`), so another file of the batch hands an
        object over to them rather than prune it."""
        self.handed: dict[Ref, str] = {}
        """Objects a file dropped for a claim that was only read ahead, with that file's
        path: :meth:`settle_handovers` prunes those the batch left unclaimed."""
        self._told: dict[tuple[str, str], str] = {}
        """The last warning told per (path, what it was about): a retry that meets the same
        trouble says nothing again (a relist every 30 s would repeat it without end)."""
        self._seeded = False

    def statuses(self) -> list[ManifestSource]:
        """Return every file's status, sorted by path."""
        return [self.sources[path].status(self.node) for path in sorted(self.sources)]

    def owner_value(self, path: str) -> str:
        """Return the annotation value that marks an object as ``path``'s."""
        return f"{self.node}:{path}"

    def add(self, path: str) -> Source:
        """Start keeping ``path`` (a file just seen)."""
        source = self.sources[path] = Source(path)
        return source

    def owners(self, override: tuple[str, Iterable[Ref]] | None = None) -> dict[Ref, str]:
        """Return each claimed object's winner: the first path in sort order that claims it."""
        result: dict[Ref, str] = {}
        for path in sorted(self.sources.keys() | self.ahead.keys()):
            claims = override[1] if override and override[0] == path else self.ahead.get(path)
            for ref in self.sources[path].claims() if claims is None else claims:
                result.setdefault(ref, path)
        return result

    # --- start -----------------------------------------------------------

    async def seed(self, paths: Iterable[str]) -> None:
        """Learn from the store what this node's files own; what a gone file owns is a leftover.

        An unavailable service is logged in the files' statuses later; the seed is
        retried with the leftovers.
        """
        for path in paths:
            self.sources.setdefault(path, Source(path))
        try:
            found = await self._stored_owned()
        except ShoalError:
            return
        self._seeded = True
        for path, refs in found.items():
            source = self.sources.get(path)
            if source is None:
                self.leftovers.update(dict.fromkeys(refs, path))
            elif source.desired is None:
                source.owned |= refs

    async def _stored_owned(self) -> dict[str, set[Ref]]:
        """Return, per path of this node, the stored objects that carry its annotation."""
        found: dict[str, set[Ref]] = {}
        prefix = f"{self.node}:"

        def note(annotations: dict[str, str], ref: Ref) -> None:
            value = annotations.get(MANIFEST_ANNOTATION, "")
            if value.startswith(prefix):
                found.setdefault(value.removeprefix(prefix), set()).add(ref)

        for workload in await self.service.list_workloads():
            if not workload.deleting:
                note(workload.spec.annotations, Ref("Workload", workload.namespace, workload.name))
        for config_map in await self.service.list_config_maps():
            spec = config_map.spec
            note(spec.annotations, Ref("ConfigMap", spec.namespace, spec.name))
        for secret in await self.service.list_secrets():
            note(secret.annotations, Ref("Secret", secret.namespace, secret.name))
        for namespace in await self.service.list_namespaces():
            note(namespace.spec.annotations, Ref("Namespace", "", namespace.spec.name))
        return found

    async def retry_leftovers(self) -> None:
        """Prune what gone files left (retrying the seed first if it failed)."""
        if not self._seeded:
            await self.seed([])
        by_path: dict[str, list[Ref]] = {}
        claimed = self.owners()
        for ref, path in self.leftovers.items():
            if path not in self.sources and ref not in claimed:  # claimed: handed over
                by_path.setdefault(path, []).append(ref)
        self.leftovers = {}
        for path, refs in sorted(by_path.items()):
            await self.prune(path, refs)

    # --- one file --------------------------------------------------------

    async def failed(self, path: str, message: str, *, retry: bool = False) -> None:
        """Record why ``path``'s content was not applied; its objects stay as they are."""
        source = self.sources.get(path) or self.add(path)
        new = message != source.error
        source.error, source.retry = message, retry
        if new:
            await self.event(path, "ManifestFailed", message, True)

    async def sync(
        self,
        source: Source,
        desired: dict[Ref, ObjectSpec],
        warnings: list[str],
        digest: str,
        *,
        cascade: bool = True,
    ) -> None:
        """Apply the objects of ``source`` it wins, all or nothing; then prune what it dropped.

        Raises:
            ShoalError: the service refused the apply (nothing changed).

        """
        before = self.owners()
        owners = self.owners((source.path, desired.keys()))
        own = self.owner_value(source.path)
        mine: list[ObjectSpec] = []
        conflicts: list[str] = []
        for ref, spec in desired.items():
            winner = owners[ref]
            if winner != source.path:
                conflicts.append(f"{ref}: owned by {winner}")
                continue
            stored = await self.stored_owner(ref)
            if stored and not stored.startswith(f"{self.node}:"):
                conflicts.append(f"{ref}: owned by {stored} (another node's file)")
                continue
            annotations = {**spec.annotations, MANIFEST_ANNOTATION: own}
            mine.append(spec.model_copy(update={"annotations": annotations}))
        applied = 0
        if mine:
            result = await self.service.apply(mine)
            applied = sum(c.action != ChangeAction.UNCHANGED for c in result.plan.changes)
        # An event when something changed: not for every file again after a restart.
        edited = source.applied_hash not in ("", digest)
        changed = bool(applied) or bool(source.error) or edited
        source.desired = desired
        source.applied_hash, source.applied_at = digest, self.clock.now()
        source.error, source.retry = "", False
        source.warnings = list(warnings)
        new_conflicts = conflicts != source.conflicts
        source.conflicts = conflicts
        dropped = source.owned - {Ref.of(spec) for spec in mine}
        source.owned = {Ref.of(spec) for spec in mine}
        after = self.owners()
        # What another file now claims is handed over (that file applies it), not deleted;
        # a claim only read ahead is held to at the batch's end (settle_handovers).
        for ref in dropped:
            if ref in after and after[ref] in self.ahead:
                self.handed[ref] = source.path
        await self.prune(source.path, [ref for ref in dropped if ref not in after])
        if changed:
            ignored = (
                f"; {len(warnings)} field(s) ignored (`shoal manifests` lists them)"
                if warnings
                else ""
            )
            await self.event(
                source.path,
                "ManifestApplied",
                f"applied {source.path} (sha256 {digest[:12]}): {applied} of its "
                f"{len(mine)} object(s) changed{ignored}",
            )
        if conflicts and new_conflicts:
            await self.event(source.path, "ManifestConflict", "; ".join(conflicts), True)
        if cascade:
            await self._resync_others(source.path, before, after)

    async def settle_handovers(self) -> None:
        """Prune what a batch's files dropped for claims they read ahead but did not apply.

        Called once the batch's claims read ahead are gone (``ahead`` empty): an
        object whose new file failed to apply it is claimed by no file now, and
        goes as if its old file had simply dropped it. One the new file applied
        carries that file's annotation, which :meth:`prune` leaves alone.
        """
        claimed = self.owners()
        by_path: dict[str, list[Ref]] = {}
        for ref, path in self.handed.items():
            if ref not in claimed:
                by_path.setdefault(path, []).append(ref)
        self.handed = {}
        for path, refs in sorted(by_path.items()):
            await self.prune(path, refs)

    async def forget(self, source: Source) -> None:
        """The file is gone: prune what it owns (what another file claims is handed over)."""
        before = self.owners()
        del self.sources[source.path]
        after = self.owners()
        for ref in source.owned:
            if ref in after and after[ref] in self.ahead:
                self.handed[ref] = source.path
        await self.prune(source.path, [ref for ref in source.owned if ref not in after])
        await self.event(source.path, "ManifestRemoved", f"{source.path} was removed")
        await self._resync_others(source.path, before, after)

    async def _resync_others(
        self, path: str, before: dict[Ref, str], after: dict[Ref, str]
    ) -> None:
        """Let the files that won or lost an object to ``path``'s change apply again."""
        changed = {ref for ref in before.keys() | after.keys() if before.get(ref) != after.get(ref)}
        others = {p for ref in changed for p in (before.get(ref), after.get(ref))}
        others -= self.ahead.keys()  # read ahead: their own pass in this batch applies them
        for other in sorted(p for p in others if p and p != path and p in self.sources):
            source = self.sources[other]
            if source.skipped or source.desired is None:
                source.owned = {ref for ref in source.owned if after.get(ref) == other}
                continue
            try:
                await self.sync(
                    source, source.desired, source.warnings, source.applied_hash, cascade=False
                )
            except ShoalError as exc:
                await self.failed(other, exc.message, retry=True)

    # --- the store -------------------------------------------------------

    async def stored_owner(self, ref: Ref) -> str | None:
        """Return the stored object's manifest annotation ('' for none); None if not stored."""
        try:
            if ref.kind == "Workload":
                workload = await self.service.get_workload(ref.name, ref.namespace)
                return workload.spec.annotations.get(MANIFEST_ANNOTATION, "")
            if ref.kind == "ConfigMap":
                config_map = await self.service.get_config_map(ref.name, ref.namespace)
                return config_map.spec.annotations.get(MANIFEST_ANNOTATION, "")
            if ref.kind == "Secret":
                secret = await self.service.get_secret(ref.name, ref.namespace)
                return secret.annotations.get(MANIFEST_ANNOTATION, "")
        except NotFound:
            return None
        for namespace in await self.service.list_namespaces():
            if namespace.spec.name == ref.name:
                return namespace.spec.annotations.get(MANIFEST_ANNOTATION, "")
        return None

    def unreadable(self) -> list[str]:
        """Return the files that cannot be read and never were: what they define is unknown.

        A file that was read once claims its last good content (a broken file
        keeps its objects); one never read (a broken file renamed, a new one
        half-written) may define anything.
        """
        return sorted(
            path
            for path, source in self.sources.items()
            if source.error and not source.retry and source.desired is None and not source.owned
        )

    async def prune(self, path: str, refs: Iterable[Ref]) -> None:
        """Delete the objects of ``refs`` that still carry ``path``'s annotation.

        One that cannot be deleted now (a Namespace that still holds objects,
        the service unavailable) is kept as a leftover and retried at the next
        relist; so is every one while a file cannot be read (it may define them:
        a broken file renamed must not take its objects down).
        """
        refs = list(refs)
        waiting_for = self.unreadable()
        if refs and waiting_for:
            self._keep(path, refs)
            shown = ", ".join(str(ref) for ref in sorted(refs))
            await self._tell(
                path,
                "prune",
                "PruneWaits",
                f"{shown} stay while {', '.join(waiting_for)} cannot be read: it may define "
                "them; fix it (or remove it) and they go, or are taken over",
            )
            return
        if refs:  # waits no more: a later wait is told again
            self._told.pop((path, "prune"), None)
        own = self.owner_value(path)
        for ref in sorted(refs, key=lambda r: (_PRUNE_ORDER.get(r.kind, 1), r)):
            try:
                if await self.stored_owner(ref) != own:
                    continue  # gone, re-applied by hand, or taken over: not ours to delete
                if ref.kind == "Workload":
                    workload = await self.service.get_workload(ref.name, ref.namespace)
                    if not workload.deleting:
                        await self.service.delete_workload(ref.name, ref.namespace)
                else:
                    await self.service.delete_config(
                        _config_kind(ref.kind), ref.name, ref.namespace or "default"
                    )
            except NotFound:
                continue
            except ShoalError as exc:
                self._keep(path, [ref])
                await self._tell(
                    path, str(ref), "PruneFailed", f"cannot delete {ref} yet: {exc.message}"
                )
                continue
            self._told.pop((path, str(ref)), None)
            await self.event(path, "Pruned", f"deleted {ref}: {path} no longer defines it")

    def _keep(self, path: str, refs: Iterable[Ref]) -> None:
        """Keep ``refs`` to prune later: the file's own (if it is there) or leftovers."""
        source = self.sources.get(path)
        for ref in refs:
            if source is not None:
                source.owned.add(ref)
                source.retry = True
            else:
                self.leftovers[ref] = path

    async def _tell(self, path: str, about: str, reason: str, message: str) -> None:
        """Record a warning about ``path``, unless the last one about the same was this."""
        if self._told.get((path, about)) == message:
            return
        self._told[(path, about)] = message
        await self.event(path, reason, message, True)


_ConfigKind = Literal["ConfigMap", "Secret", "Namespace"]


def _config_kind(kind: str) -> _ConfigKind:
    if kind == "ConfigMap":
        return "ConfigMap"
    if kind == "Secret":
        return "Secret"
    return "Namespace"
