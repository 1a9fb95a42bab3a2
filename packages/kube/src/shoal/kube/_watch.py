"""The watched manifests directory: files in, objects applied and pruned.

:class:`ManifestWatcher` watches directories with inotify (through
``watchfiles``) and relists them periodically, in case an event was missed.
A changed file waits a debounce (about a second, from its last change), then
its content's SHA-256 decides: the same content does nothing. New content is
parsed (either dialect, see :func:`~shoal.kube.parse_documents`) and applied
all or nothing through the service; objects the file no longer defines, or
whose file is deleted, are pruned. The bookkeeping of who owns what lives in
:mod:`shoal.kube._owners`.

Only ``*.yaml``, ``*.yml`` and ``*.json`` directly in a directory count;
dotfiles, editor and backup files (``*~``, ``*.swp``, ``*.swo``, ``*.bak``,
``*.tmp``, vim's ``4913``) and subdirectories are ignored. ``FILE.skip``
beside ``FILE`` pauses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable
from contextlib import suppress

import anyio
import watchfiles
from anyio.abc import TaskStatus

from shoal.interfaces import (
    MAX_MANIFEST_FILE_BYTES,
    Clock,
    EventType,
    InvalidSpec,
    ManifestSource,
    ObjectRef,
    Service,
    ShoalError,
    SystemClock,
    load_yaml_documents,
)

from ._owners import Owners, Ref, Source
from ._translate import Translation, parse_documents

__all__ = ["MANIFEST_SUFFIXES", "SKIP_SUFFIX", "ManifestWatcher", "is_manifest_name", "manifest_of"]

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""The file names a watched directory applies."""


SKIP_SUFFIX = ".skip"
"""``FILE.skip`` beside ``FILE`` pauses it: its objects stay as they are."""

_IGNORED_ENDINGS = ("~", ".swp", ".swo", ".swx", ".bak", ".tmp")
_IGNORED_NAMES = frozenset({"4913"})  # vim writes it to test that it may create files


def is_manifest_name(name: str) -> bool:
    """Return whether a file called ``name`` is a manifest (not a dotfile, editor or backup)."""
    if not name or name.startswith(".") or name in _IGNORED_NAMES:
        return False
    return name.endswith(MANIFEST_SUFFIXES) and not name.endswith(_IGNORED_ENDINGS)


def manifest_of(path: str) -> str | None:
    """Return the manifest a changed ``path`` concerns: itself, or the file its .skip pauses."""
    directory, name = os.path.split(path)
    if name.endswith(SKIP_SUFFIX):
        name = name.removesuffix(SKIP_SUFFIX)
    return os.path.join(directory, name) if is_manifest_name(name) else None


def _existing(directories: Iterable[str]) -> list[str]:
    return [directory for directory in directories if os.path.isdir(directory)]


async def _read(path: str) -> bytes | None:
    """Return a manifest's bytes; None when it is not a file (gone, or a directory).

    Raises:
        OSError: it cannot be read, or is larger than MAX_MANIFEST_FILE_BYTES.

    """
    file = anyio.Path(path)
    try:
        if (await file.stat()).st_size > MAX_MANIFEST_FILE_BYTES:
            raise OSError(
                f"larger than {MAX_MANIFEST_FILE_BYTES // (1024 * 1024)} MiB: split it into files"
            )
        return await file.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _identities(directories: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Return each directory's (device, inode): what an inotify watch on it follows."""
    found: dict[str, tuple[int, int]] = {}
    for directory in directories:
        with suppress(OSError):
            stat = os.stat(directory)
            found[directory] = (stat.st_dev, stat.st_ino)
    return found


def _present(path: str) -> bool:
    return os.path.exists(path)


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class ManifestWatcher:
    """Apply the manifests of ``directories`` through ``service``, and keep them applied.

    Every object applied from a file carries the annotation
    ``shoal.dev/manifest: NODE:PATH``; only objects whose annotation names one
    of this watcher's files are ever pruned (one applied by hand never is).

    Args:
        service: where objects are applied, listed and deleted (act as a
            system actor, so that events say who changed what).
        directories: the directories to watch (files directly in them).
        node_name: this node, the first half of the ownership annotation.
        clock: the time files are stamped applied at.
        debounce: seconds a changed file must stay unchanged before it is read.
        relist: seconds between rescans of the directories (catches missed events).
        strict: refuse documents with fields Shoal ignores, instead of warning.

    """

    def __init__(
        self,
        service: Service,
        directories: Iterable[str | os.PathLike[str]],
        node_name: str,
        *,
        clock: Clock | None = None,
        debounce: float = 1.0,
        relist: float = 30.0,
        strict: bool = False,
    ) -> None:
        self.service = service
        self.directories = sorted({os.path.abspath(d) for d in directories})
        self.node_name = node_name
        self.clock = clock or SystemClock()
        self.debounce = debounce
        self.relist = relist
        self.strict = strict
        self.owners = Owners(service, node_name, self.clock, self._event)
        self._due: dict[str, float] = {}
        """Paths to read, with the time (anyio's clock) from which they may be."""
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._armed: dict[str, tuple[int, int]] = {}
        """The watched directories that existed when the watch was made: (device, inode)."""
        self._rearm = anyio.Event()
        """Set to make the watch again (:meth:`relist_once` found a directory replaced)."""
        self.watches = 0
        """Watches made so far (tests wait on it)."""
        self._parsed: dict[str, tuple[str, Translation]] = {}
        """The batch's files read ahead: their content's digest and its translation."""
        self.passes = 0
        """Files read so far (tests and benchmarks wait on it)."""
        self._told_unread: set[str] = set()
        """Entries told once as not read though they look meant to be (see :meth:`_scan`)."""

    def statuses(self) -> list[ManifestSource]:
        """Return every file of the watched directories, as last read, sorted by path."""
        return self.owners.statuses()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Apply every file, prune what deleted files left, then follow changes until cancelled.

        Ready (``task_status.started``) once the directories were applied the first time.
        Never raises for a bad file or an unavailable service: the file's status says why.
        """
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # not a line per change
        async with anyio.create_task_group() as tg:
            watching = anyio.Event()
            tg.start_soon(self._watch, watching)
            await watching.wait()  # changes from here on are seen, even during the first pass
            await self._first_pass()
            tg.start_soon(self._relist_forever)
            task_status.started()
            await self._process_due_forever()

    # --- scheduling ------------------------------------------------------

    def _touch(self, path: str, delay: float, *, restart: bool = True) -> None:
        """Read ``path`` once ``delay`` passed; each new change restarts the wait (debounce)."""
        deadline = anyio.current_time() + delay
        if restart or path not in self._due:
            self._due[path] = deadline
        self._wake.set()

    async def _process_due_forever(self) -> None:
        while True:
            now = anyio.current_time()
            # Files that exist go first: a renamed file's objects are handed over to
            # its new name before the old name is forgotten, never deleted in between.
            due = sorted(
                (path for path, at in self._due.items() if at <= now),
                key=lambda path: (not _present(path), path),
            )
            if due:
                for path in due:
                    del self._due[path]
                await self._process_batch(due)
                continue
            wait = min(self._due.values(), default=math.inf) - now
            self._wake = anyio.Event()
            with anyio.move_on_after(wait):
                await self._wake.wait()

    async def _watch(self, watching: anyio.Event) -> None:
        """Turn inotify events into touched paths; falls back to relisting when it cannot watch.

        A watch follows a directory's inode: once a watched directory is replaced
        (``mv new dir``), removed, or one appears that did not exist, the relist
        sees it (:meth:`relist_once`) and the watch is made again.
        """
        while True:
            directories = _existing(self.directories)
            self._armed = _identities(directories)
            self._rearm = anyio.Event()
            stop = anyio.Event()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._follow, directories, stop, watching)
                    try:
                        await self._rearm.wait()
                    finally:
                        stop.set()  # the watch thread returns at once, not at its timeout
                log.info("watching %s again: a directory was replaced", ", ".join(directories))
                continue
            except* Exception as group:  # e.g. no inotify watches left: relisting still works
                log.warning(
                    "cannot watch %s (%s): relisting every %s s instead",
                    ", ".join(self.directories),
                    "; ".join(str(exc) for exc in group.exceptions),
                    self.relist,
                )
            watching.set()
            await anyio.sleep(self.relist)

    async def _follow(
        self, directories: list[str], stop: anyio.Event, watching: anyio.Event
    ) -> None:
        if not directories:
            raise FileNotFoundError("no watched directory exists")
        changes = watchfiles.awatch(
            *directories,
            watch_filter=lambda _change, path: manifest_of(path) is not None,
            recursive=False,
            stop_event=stop,
            rust_timeout=1000,
        )
        # The inotify watches are made as the first iteration starts, before it waits.
        watching.set()
        self.watches += 1
        async for batch in changes:
            for _change, raw in batch:
                path = manifest_of(_absolute(raw))
                if path is not None:
                    self._touch(path, self.debounce)
        if not stop.is_set():  # set: cancelled, the watch ended on purpose
            raise RuntimeError("the watch ended")

    async def _relist_forever(self) -> None:
        while True:
            await anyio.sleep(self.relist)
            try:
                await self.relist_once()
            except Exception:  # a bug must not stop the agent: the next relist tries again
                log.exception("relisting %s failed", ", ".join(self.directories))

    async def relist_once(self) -> None:
        """Touch every file that changed unseen, retry failed applies and prunes.

        Also makes the inotify watch again when a watched directory is no longer
        the one it follows.
        """
        if _identities(_existing(self.directories)) != self._armed:
            self._rearm.set()
        async with self._lock:
            await self.owners.retry_leftovers()
        for path in sorted(self._scan() | set(self.owners.sources)):
            source = self.owners.sources.get(path)
            if source is None or source.retry:
                self._touch(path, 0 if source else self.debounce, restart=False)
            elif await self._differs(source):
                self._touch(path, self.debounce, restart=False)

    def _scan(self) -> set[str]:
        """Return the manifests in the watched directories (and paused ones whose file is gone)."""
        found: set[str] = set()
        for directory in self.directories:
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                path = manifest_of(os.path.join(directory, name))
                if path is not None and (name.endswith(SKIP_SUFFIX) or os.path.isfile(path)):
                    found.add(path)
                elif path is None:
                    self._tell_unread(os.path.join(directory, name))
        return found

    def _tell_unread(self, path: str) -> None:
        """Log, once, an entry that looks meant to be read but is not: what Shoal ignores is said.

        A subdirectory (not watched) and a name a manifest's but for its case
        (``WEB.YAML``) are; dotfiles, editor and backup files are not worth a word.
        """
        name = os.path.basename(path)
        if path in self._told_unread or name.startswith("."):
            return
        if os.path.isdir(path):
            why = "a subdirectory: only the files of a watched directory are read"
        elif name.lower().endswith(MANIFEST_SUFFIXES) and is_manifest_name(name.lower()):
            why = f"a manifest's name ends in {', '.join(MANIFEST_SUFFIXES)}, in lower case"
        else:
            return
        self._told_unread.add(path)
        log.warning("manifests: %s is not read: %s", path, why)

    async def _differs(self, source: Source) -> bool:
        skipped = await anyio.Path(source.path + SKIP_SUFFIX).exists()
        if skipped != source.skipped:
            return True
        if skipped:
            return False
        try:
            content = await _read(source.path)
        except OSError:
            return not source.error  # an unreadable file: once, not every relist
        return content is None or _digest(content) != source.hash

    # --- reading files ---------------------------------------------------

    async def _first_pass(self) -> None:
        paths = self._scan()
        await self.owners.seed(paths)
        await self._process_batch(sorted(paths))
        await self.owners.retry_leftovers()

    async def _process_batch(self, paths: list[str]) -> None:
        """Act on ``paths`` in order, each file's new claims known before the first is applied.

        An object moved from one file to another in one change (a split file, a
        ``git pull``) is then handed over, whichever file comes first, rather than
        pruned by the file that dropped it and applied again by the other.
        """
        async with self._lock:
            for path in paths:
                await self._read_ahead(path)
        try:
            for path in paths:
                await self._process(path)
        finally:
            self.owners.ahead.clear()
            self._parsed.clear()
        async with self._lock:
            await self.owners.settle_handovers()

    async def _read_ahead(self, path: str) -> None:
        """Note what ``path``'s new content defines (``Owners.ahead``), if it reads and parses."""
        source = self.owners.sources.get(path)
        if await anyio.Path(path + SKIP_SUFFIX).exists():
            return
        try:
            content = await _read(path)
        except OSError:
            return
        if content is None:  # gone: from now it claims nothing (a renamed file's new name
            self.owners.ahead[path] = set()  # takes its objects over without a conflict)
            return
        digest = _digest(content)
        if source is not None and digest == source.hash and not source.skipped:
            return  # unchanged: it claims what it did
        try:
            translation = self._parse(path, content)
        except Exception:  # its own pass (_process) reports what went wrong
            return  # a broken file claims what its last good content did
        self._parsed[path] = (digest, translation)
        self.owners.ahead[path] = {Ref.of(spec) for spec in translation.objects}

    async def _process(self, path: str) -> None:
        """Read one file and act on it; never raises (the file's status says what went wrong)."""
        async with self._lock:
            self.owners.ahead.pop(path, None)  # from here, its own sync says what it claims
            try:
                await self._refresh(path)
            except ShoalError as exc:
                await self.owners.failed(path, exc.message, retry=True)
            except Exception as exc:  # a bug must not stop the other files
                log.exception("manifest %s: unexpected error", path)
                await self.owners.failed(
                    path, f"internal error ({type(exc).__name__}); the agent log has the details"
                )
            finally:
                self.passes += 1

    async def _refresh(self, path: str) -> None:
        skipped = await anyio.Path(path + SKIP_SUFFIX).exists()
        try:
            content = await _read(path)
        except OSError as exc:  # unreadable (permissions) or too large: say so, keep what runs
            await self.owners.failed(
                path, f"{path}: cannot be read ({exc.strerror or exc}): fix it; nothing was applied"
            )
            return
        source = self.owners.sources.get(path)
        if content is None and not skipped:
            if source is not None:
                await self.owners.forget(source)
            return
        digest = "" if content is None else _digest(content)
        if source is None:
            source = self.owners.add(path)
        if skipped:
            source.skipped, source.hash = True, digest
            return
        resumed, source.skipped = source.skipped, False
        if digest == source.hash and not resumed and not source.retry:
            return  # touched, or rewritten with the same content: nothing to do
        source.hash = digest
        assert content is not None
        parsed = self._parsed.pop(path, None)
        try:
            translation = (
                parsed[1] if parsed and parsed[0] == digest else self._parse(path, content)
            )
        except InvalidSpec as exc:
            await self.owners.failed(path, exc.message)
            return
        desired = {Ref.of(spec): spec for spec in translation.objects}
        await self.owners.sync(source, desired, translation.warnings, digest)

    def _parse(self, path: str, content: bytes) -> Translation:
        """Parse a file's documents; raise InvalidSpec naming the file (and line, column)."""
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSpec(
                f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8; nothing was applied"
            ) from None
        if path.endswith(".json"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidSpec(
                    f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}; "
                    "nothing was applied"
                ) from None
            documents = data if isinstance(data, list) else [data]
        else:
            documents = load_yaml_documents(text, path)
        return parse_documents(documents, path, strict=self.strict)

    async def _event(self, path: str, reason: str, message: str, warning: bool = False) -> None:
        """Record an event about a file, if the service can; never fails the watcher."""
        record = getattr(self.service, "record_event", None)
        if record is None:
            return
        with suppress(ShoalError):
            await record(
                ObjectRef(kind="Manifest", name=path),
                reason,
                message,
                event_type=EventType.WARNING if warning else EventType.NORMAL,
                details={"node": self.node_name},
            )
