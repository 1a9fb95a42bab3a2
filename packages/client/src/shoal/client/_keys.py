"""ed25519 key pairs for clients and the ``authorized_keys`` file servers trust.

Files, in the spirit of OpenSSH:

* ``$SHOAL_HOME/id_ed25519`` (default ``~/.config/shoal``): a comment line and
  ``KEY-ID SEED-BASE64``, the 32-byte private seed. Mode 0600 in a 0700
  directory; :func:`load_keypair` refuses a file others can read.
* ``$SHOAL_HOME/id_ed25519.pub``: ``KEY-ID PUBLIC-KEY-BASE64``, so that
  ``echo "operator $(cat id_ed25519.pub)" >> authorized_keys`` authorizes it.
* ``<data-dir>/authorized_keys``: ``ROLE KEY-ID PUBLIC-KEY`` per line, ``#``
  comments and blank lines allowed. A bad line is an error naming the file,
  the line and the fix; nothing is half-loaded.

Files are written to a temporary name with mode 0600 and renamed into place,
so a crash never leaves a truncated or world-readable key behind. All errors
are ``shoal.interfaces`` errors whose message says what to run or edit.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import getpass
import os
import re
import socket
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from shoal.interfaces import Conflict, InvalidInput, Role

__all__ = [
    "AUTHORIZED_KEYS_FILE",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "AuthorizedKey",
    "AuthorizedKeys",
    "KeyPair",
    "default_home",
    "default_key_id",
    "ensure_authorized_keys",
    "init_keypair",
    "load_authorized_keys",
    "load_keypair",
    "parse_authorized_keys",
]

PRIVATE_KEY_FILE = "id_ed25519"
PUBLIC_KEY_FILE = "id_ed25519.pub"
AUTHORIZED_KEYS_FILE = "authorized_keys"
_KEY_ID = re.compile(r"[A-Za-z0-9._@:+=-]{1,128}")
_KEY_ID_RULE = "1-128 characters from letters, digits and . _ @ : + = -"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_key(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


@dataclass(frozen=True)
class KeyPair:
    """A key id and its ed25519 signing key."""

    key_id: str
    signing_key: SigningKey

    @property
    def verify_key(self) -> VerifyKey:
        """The public half."""
        return self.signing_key.verify_key

    @property
    def public_key_b64(self) -> str:
        """The raw 32-byte public key, base64 (the form authorized_keys takes)."""
        return _b64(bytes(self.verify_key))

    @property
    def public_line(self) -> str:
        """The ``KEY-ID PUBLIC-KEY`` line of ``id_ed25519.pub``."""
        return f"{self.key_id} {self.public_key_b64}"


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """Return ``$SHOAL_HOME``, or ``~/.config/shoal`` when it is unset or empty."""
    env = os.environ if environ is None else environ
    home = env.get("SHOAL_HOME")
    return Path(home) if home else Path.home() / ".config" / "shoal"


def default_key_id() -> str:
    """Return ``<user>@<hostname>``, with characters a key id cannot hold replaced by ``-``."""
    raw = f"{getpass.getuser()}@{socket.gethostname()}"
    return re.sub(r"[^A-Za-z0-9._@:+=-]", "-", raw)[:128]


def _check_key_id(key_id: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        raise InvalidInput(f"key id {key_id!r} is not valid: use {_KEY_ID_RULE}", field="key_id")
    return key_id


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically.

    Raises:
        InvalidInput: it cannot be written there (nothing is left behind).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask may only narrow, but be explicit
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a private key must not linger under another name
            tmp.unlink()
        raise _unwritable(path, exc) from exc


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 if it is missing.

    Raises:
        InvalidInput: it cannot be a directory (a file is in the way, or no permission).
    """
    try:
        if not path.exists():
            path.mkdir(mode=0o700, parents=True)
            path.chmod(0o700)
        elif not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
    except OSError as exc:
        raise _unwritable(path, exc) from exc


def _unwritable(path: Path, exc: OSError) -> InvalidInput:
    where = exc.filename2 or exc.filename or path  # a rename's target, not its temporary file
    return InvalidInput(
        f"cannot write {path} ({where}: {exc.strerror or exc}): give a directory you can write "
        "(--home or SHOAL_HOME for your key, --data-dir for a node's)",
        path=str(path),
    )


def init_keypair(home: Path, key_id: str | None = None, *, force: bool = False) -> KeyPair:
    """Create a new key pair in ``home`` (what ``shoal keys init`` runs).

    Args:
        home: The Shoal home directory; created with mode 0700 when missing.
        key_id: The key id; ``<user>@<hostname>`` when ``None``.
        force: Replace an existing key pair.

    Returns:
        The new key pair.

    Raises:
        Conflict: a key pair exists and ``force`` is false.
        InvalidInput: ``key_id`` is not a valid key id.
    """
    key_id = _check_key_id(default_key_id() if key_id is None else key_id)
    private, public = home / PRIVATE_KEY_FILE, home / PUBLIC_KEY_FILE
    existing = [p for p in (private, public) if p.exists()]
    if existing and not force:
        raise Conflict(
            f"{existing[0]} already exists; keep using it, or run `shoal keys init --force` "
            "to replace it (the old key then stops working wherever it is authorized)",
            path=str(existing[0]),
        )
    _ensure_private_dir(home)
    keypair = KeyPair(key_id, SigningKey.generate())
    seed = _b64(bytes(keypair.signing_key))
    _write_private(private, f"# Shoal ed25519 private key: keep it secret.\n{key_id} {seed}\n")
    _write_private(public, keypair.public_line + "\n")
    return keypair


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror}; run shoal as the user who owns it",
            path=str(path),
        ) from exc


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _check_not_exposed(path: Path, *, writable_only: bool) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    mask = 0o022 if writable_only else 0o077
    if mode & mask:
        who = "written" if writable_only else "read"
        raise InvalidInput(
            f"{path} has mode {mode:04o}, so other users can {who} it: run `chmod 600 {path}`",
            path=str(path),
        )


def load_keypair(home: Path) -> KeyPair:
    """Load the key pair from ``home``.

    Raises:
        InvalidInput: the key is missing (run ``shoal keys init``), readable by
            other users, corrupt, or does not match ``id_ed25519.pub``.
    """
    path = home / PRIVATE_KEY_FILE
    if not path.is_file():
        raise InvalidInput(
            f"no key pair at {path}: run `shoal keys init` (or set SHOAL_HOME to where it is)",
            path=str(path),
        )
    _check_not_exposed(path, writable_only=False)
    corrupt = f"{path} is corrupt: run `shoal keys init --force` to make a new key pair"
    lines = list(_content_lines(_read(path)))
    fields = lines[0][1].split() if len(lines) == 1 else []
    seed = _decode_key(fields[1]) if len(fields) == 2 and _KEY_ID.fullmatch(fields[0]) else None
    if seed is None:
        raise InvalidInput(corrupt, path=str(path))
    keypair = KeyPair(fields[0], SigningKey(seed))
    public = home / PUBLIC_KEY_FILE
    if public.is_file() and _read(public).split() != [
        keypair.key_id,
        keypair.public_key_b64,
    ]:
        raise InvalidInput(
            f"{public} does not belong to {path}: restore the matching pair, or run "
            "`shoal keys init --force` to make a new one",
            path=str(public),
        )
    return keypair


@dataclass(frozen=True)
class AuthorizedKey:
    """One trusted key: who it is, what it may do, and how to check it."""

    role: Role
    key_id: str
    public_key: VerifyKey


class AuthorizedKeys(Mapping[str, AuthorizedKey]):
    """The parsed authorized_keys file: a read-only mapping of key id to entry."""

    def __init__(
        self,
        entries: Mapping[str, AuthorizedKey],
        source: str = "<memory>",
        problems: Sequence[InvalidInput] = (),
    ) -> None:
        self._entries = dict(entries)
        self.source = source
        """Where the entries came from (a path), for messages."""
        self.problems = tuple(problems)
        """The lines that were skipped, each error naming its file, line and fix."""

    def __getitem__(self, key_id: str) -> AuthorizedKey:
        return self._entries[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key_id: str) -> tuple[Role, VerifyKey] | None:
        """Return ``(role, public key)`` for ``key_id``, or ``None``; a verifier's key lookup."""
        entry = self._entries.get(key_id)
        return None if entry is None else (entry.role, entry.public_key)


def parse_authorized_keys(text: str, source: str = "authorized_keys") -> AuthorizedKeys:
    """Parse authorized_keys text: ``ROLE KEY-ID PUBLIC-KEY`` per line.

    A bad line is skipped, not the whole file: the valid lines take effect and
    each bad one is kept in :attr:`AuthorizedKeys.problems`, as an error whose
    message names ``source``, the line number and the fix (a line repeating an
    earlier key id is such a line: the first one counts).
    """
    entries: dict[str, AuthorizedKey] = {}
    first_seen: dict[str, int] = {}
    problems: list[InvalidInput] = []
    for number, line in _content_lines(text):
        try:
            entry = _parse_line(line, first_seen)
        except ValueError as exc:
            problems.append(InvalidInput(f"{source}:{number}: {exc}", path=source, line=number))
            continue
        first_seen[entry.key_id] = number
        entries[entry.key_id] = entry
    return AuthorizedKeys(entries, source, problems)


def _parse_line(line: str, first_seen: Mapping[str, int]) -> AuthorizedKey:
    """Parse one authorized_keys line.

    Raises:
        ValueError: what is wrong with it and the fix.
    """
    role_names = [role.value for role in Role]
    fields = line.split()
    if len(fields) != 3:
        raise ValueError(
            f"expected `ROLE KEY-ID PUBLIC-KEY` (3 fields), found {len(fields)}; "
            "e.g. `operator alice@laptop <base64 public key>` (`shoal keys show` prints "
            "KEY-ID PUBLIC-KEY; `shoal keys init` first if you have no key)"
        )
    role_text, key_id, key_text = fields
    if role_text not in role_names:
        raise ValueError(f"unknown role {role_text!r}; use one of {', '.join(role_names)}")
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r} is not valid: use {_KEY_ID_RULE}")
    raw = _decode_key(key_text)
    if raw is None:
        raise ValueError(
            "the public key is not a base64 32-byte ed25519 key; copy the second "
            "field of the client's id_ed25519.pub"
        )
    if key_id in first_seen:
        raise ValueError(
            f"key id {key_id!r} is already on line {first_seen[key_id]}; "
            "key ids must be unique: remove or rename one"
        )
    return AuthorizedKey(Role(role_text), key_id, VerifyKey(raw))


def load_authorized_keys(path: Path) -> AuthorizedKeys:
    """Read and parse an authorized_keys file.

    Bad lines are skipped (see :func:`parse_authorized_keys`).

    Raises:
        InvalidInput: the file is missing or writable by other users.
    """
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise InvalidInput(
            f"{path} {what}: it is the agent's list of authorized keys, which the agent "
            "creates at its first start (move what is there aside, then start it once)",
            path=str(path),
        )
    _check_not_exposed(path, writable_only=True)
    return parse_authorized_keys(_read(path), str(path))


def ensure_authorized_keys(data_dir: Path, home: Path) -> tuple[AuthorizedKeys, bool]:
    """Load ``<data_dir>/authorized_keys``, creating it on first start.

    When the file is missing, the local user's key (from ``home``, generated if
    missing) is authorized as admin, so whoever started the agent can drive it.

    Returns:
        The authorized keys, and whether the file was just created (to log it).

    Raises:
        InvalidInput: the existing file, or the local key pair, is invalid.
    """
    path = data_dir / AUTHORIZED_KEYS_FILE
    if path.exists():
        return load_authorized_keys(path), False
    keypair = load_keypair(home) if (home / PRIVATE_KEY_FILE).exists() else init_keypair(home)
    _ensure_private_dir(data_dir)
    text = (
        "# Shoal authorized keys: ROLE KEY-ID PUBLIC-KEY (roles: admin, operator, viewer).\n"
        '# Add a client with: echo "operator $(cat ~/.config/shoal/id_ed25519.pub)" >> this file\n'
        f"{Role.ADMIN.value} {keypair.public_line}\n"
    )
    _write_private(path, text)
    return parse_authorized_keys(text, str(path)), True
