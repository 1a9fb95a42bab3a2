"""Secrets sealed at rest: a StateStore wrapper that encrypts the values under some prefixes.

The server wraps its store in :class:`SealedStore` so that every Secret
(``/secrets/...``) is written as AES-256-GCM ciphertext, whatever the backend
(SQLite file, etcd): a copy of ``state.db`` or an etcd snapshot holds no
Secret in clear. Readers through the wrapper — the service, the server's
gateway that answers workers — see plain values; everything else passes
through unchanged.

A sealed value is ``shoal-sealed:v1:<key id>:<base64 nonce + ciphertext>``
and the store key is the AEAD's associated data, so a sealed value copied
under another key does not open. Keys live in a :class:`Keyring` file in the
server's data dir (``secrets.keyring``, mode 0600): new writes use the
active key; every key of the ring opens what it sealed, so
:meth:`Keyring.rotate` then :meth:`SealedStore.reseal` moves every Secret to a
new key without downtime. A value that is not sealed (written before sealing
was on) is read as it is, and sealed by the next write or reseal.

``cryptography``'s AESGCM does the cryptography; this module only frames it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal.interfaces import (
    SECRETS,
    Compare,
    CompareTarget,
    DeleteOp,
    InternalError,
    InvalidInput,
    KeyValue,
    ListResult,
    PutOp,
    StateStore,
    StoreWrapper,
    TxnResult,
    WatchEvent,
)

__all__ = ["KEYRING_FILE", "Keyring", "SealedStore"]

KEYRING_FILE = "secrets.keyring"
"""The keyring's file name in a server's data dir."""

_MAGIC = b"shoal-sealed:v1:"
_NONCE = 12


class Keyring:
    """AES-256-GCM keys by id, one of them active; kept in a JSON file readable by root only."""

    def __init__(self, keys: dict[str, bytes], active: str, path: Path | None = None) -> None:
        if active not in keys:
            raise InvalidInput(f"the keyring's active key {active!r} is not in it")
        self.keys = keys
        self.active = active
        self.path = path
        self.created = False
        """Made by this process (no keyring file existed): see SealedStore's check on open."""

    @classmethod
    def load(cls, path: Path, *, create: bool = True) -> Keyring:
        """Read the keyring at ``path``; make one with a fresh key if it does not exist.

        Raises:
            InvalidInput: the file exists but is not a keyring (its path and the fix).

        """
        if not path.exists():
            if not create:
                raise InvalidInput(f"no secrets keyring at {path}")
            ring = cls._fresh(path)
            ring.save()
            ring.created = True
            return ring
        try:
            document = json.loads(path.read_text())
            keys = {kid: base64.b64decode(k) for kid, k in document["keys"].items()}
            ring = cls(keys, document["active"], path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                f"{path} is not a Shoal secrets keyring ({exc}): restore it from a backup; "
                "without it, stored Secrets cannot be read"
            ) from None
        if any(len(k) != 32 for k in keys.values()):
            raise InvalidInput(f"{path}: every key must be 32 bytes (AES-256)")
        return ring

    @classmethod
    def _fresh(cls, path: Path | None) -> Keyring:
        kid = secrets.token_hex(4)
        return cls({kid: AESGCM.generate_key(bit_length=256)}, kid, path)

    def save(self) -> None:
        """Write the keyring to its file (mode 0600), atomically."""
        if self.path is None:
            return
        document = {
            "active": self.active,
            "keys": {kid: base64.b64encode(k).decode() for kid, k in self.keys.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)  # a leftover would keep its own mode
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before any value is sealed with it
        temporary.replace(self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def derive(self, label: str) -> bytes:
        """Return a 32-byte secret for ``label``, derived from the ring's first key.

        The first key stays in the ring across rotations, so what is derived
        from it (the configuration-hash key) does not change when keys rotate.
        """
        first = next(iter(self.keys.values()))
        return hmac.new(first, f"shoal derive {label}".encode(), hashlib.sha256).digest()

    def rotate(self) -> str:
        """Add a new key, make it active, save; return its id (old keys still open old values)."""
        kid = secrets.token_hex(4)
        while kid in self.keys:
            kid = secrets.token_hex(4)
        self.keys[kid] = AESGCM.generate_key(bit_length=256)
        self.active = kid
        self.save()
        return kid

    def seal(self, key: str, value: bytes) -> bytes:
        """Return ``value`` encrypted with the active key, bound to store key ``key``."""
        nonce = secrets.token_bytes(_NONCE)
        sealed = AESGCM(self.keys[self.active]).encrypt(nonce, value, key.encode())
        return _MAGIC + self.active.encode() + b":" + base64.b64encode(nonce + sealed)

    def open(self, key: str, value: bytes) -> bytes:
        """Return the plain value of a sealed one (an unsealed value as it is).

        Raises:
            InternalError: the value was sealed with a key this ring lacks, or
                does not open (tampered with, or moved from another key).

        """
        if not value.startswith(_MAGIC):
            return value
        kid, _, body = value[len(_MAGIC) :].partition(b":")
        secret = self.keys.get(kid.decode(errors="replace"))
        if secret is None:
            raise InternalError(
                f"{key} was sealed with key {kid.decode(errors='replace')!r}, which this "
                "server's secrets keyring does not hold: restore the keyring that sealed it"
            )
        raw = base64.b64decode(body)
        try:
            return AESGCM(secret).decrypt(raw[:_NONCE], raw[_NONCE:], key.encode())
        except InvalidTag:
            raise InternalError(
                f"{key} does not open with its key: it was altered, or copied from another key"
            ) from None

    def sealed_by_active(self, value: bytes) -> bool:
        """Whether ``value`` is sealed with the active key."""
        return value.startswith(_MAGIC + self.active.encode() + b":")


Ops = list[PutOp | DeleteOp]


class SealedStore(StoreWrapper):
    """``store`` with the values under ``prefixes`` sealed by ``keyring`` (see module docstring)."""

    def __init__(
        self, store: StateStore, keyring: Keyring, prefixes: Sequence[str] = (SECRETS,)
    ) -> None:
        super().__init__(store)
        self.keyring = keyring
        self.prefixes = tuple(prefixes)

    async def __aenter__(self) -> Self:
        """Open the wrapped store (if it is opened as a context manager).

        Raises:
            InvalidInput: the keyring was just made, yet the store holds values
                sealed by another one (a server started without the shared
                keyring): nothing it wrote could be read by the others.
        """
        if isinstance(self.inner, contextlib.AbstractAsyncContextManager):
            await self.inner.__aenter__()
        if self.keyring.created and await self._sealed_elsewhere():
            if self.keyring.path is not None:  # so the next start refuses too
                self.keyring.path.unlink(missing_ok=True)
            await self.__aexit__(None, None, None)
            raise InvalidInput(
                f"this server made a new secrets keyring ({self.keyring.path}), but the "
                "store holds Secrets sealed by another one: copy the keyring of the "
                "server that sealed them there (or point --secrets-keyring at it), then "
                "start again"
            )
        return self

    async def _sealed_elsewhere(self) -> bool:
        """Whether the store holds a sealed value (any: this keyring has sealed none yet)."""
        for prefix in self.prefixes:
            if any(kv.value.startswith(_MAGIC) for kv in (await self.inner.list(prefix)).items):
                return True
        return False

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the wrapped store."""
        if isinstance(self.inner, contextlib.AbstractAsyncContextManager):
            await self.inner.__aexit__(exc_type, exc, traceback)
        else:
            await self.inner.aclose()

    def _sealed(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def _seal(self, key: str, value: bytes) -> bytes:
        return self.keyring.seal(key, value) if self._sealed(key) else value

    def _open(self, kv: KeyValue) -> KeyValue:
        if not self._sealed(kv.key) or not kv.value:
            return kv
        return KeyValue(
            kv.key,
            self.keyring.open(kv.key, kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease,
        )

    async def get(self, key: str) -> KeyValue | None:
        """Return the key's value, opened."""
        kv = await self.inner.get(key)
        return None if kv is None else self._open(kv)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write the value, sealed when its key is under a sealed prefix."""
        return await self.inner.put(
            key, self._seal(key, value), expected_revision=expected_revision, lease=lease
        )

    async def list(self, prefix: str) -> ListResult:
        """List, with sealed values opened."""
        listed = await self.inner.list(prefix)
        return ListResult([self._open(kv) for kv in listed.items], listed.revision)

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Watch, with sealed values (and previous values) opened.

        The wrapped watch starts now (as the protocol's "from now" needs), not
        on the first iteration.
        """
        return self._opened(self.inner.watch(prefix, start_revision))

    async def _opened(self, events: AsyncIterator[WatchEvent]) -> AsyncIterator[WatchEvent]:
        try:
            async for event in events:
                if not self._sealed(event.kv.key):
                    yield event
                    continue
                prev = event.prev_value
                if prev:
                    prev = self.keyring.open(event.kv.key, prev)
                yield WatchEvent(event.kind, self._open(event.kv), prev)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[PutOp | DeleteOp],
        failure: Sequence[PutOp | DeleteOp] = (),
    ) -> TxnResult:
        """Run the transaction with sealed puts; a value compare on a sealed key is refused.

        Raises:
            InvalidInput: a Compare of the VALUE of a sealed key (ciphertexts
                differ on every write, so it could never hold).

        """
        for compare in compares:
            if compare.target == CompareTarget.VALUE and self._sealed(compare.key):
                raise InvalidInput(
                    f"{compare.key} is sealed: compare its mod_revision, not its value"
                )
        return await self.inner.txn(compares, self._sealed_ops(success), self._sealed_ops(failure))

    def _sealed_ops(self, operations: Sequence[PutOp | DeleteOp]) -> Ops:
        return [
            PutOp(op.key, self._seal(op.key, op.value), op.lease) if isinstance(op, PutOp) else op
            for op in operations
        ]

    async def aclose(self) -> None:
        """Close the wrapped store."""
        await self.inner.aclose()

    async def reseal(self) -> int:
        """Seal every value under the prefixes with the active key; return how many changed.

        Each rewrite is a compare-and-swap on the value's revision, so a
        concurrent write wins and is already sealed with the active key.
        """
        changed = 0
        for prefix in self.prefixes:
            for kv in (await self.inner.list(prefix)).items:
                if self.keyring.sealed_by_active(kv.value):
                    continue
                plain = self.keyring.open(kv.key, kv.value)
                result = await self.inner.txn(
                    [Compare(kv.key, CompareTarget.MOD_REVISION, kv.mod_revision)],
                    [PutOp(kv.key, self.keyring.seal(kv.key, plain), kv.lease)],
                )
                changed += result.succeeded
        return changed
