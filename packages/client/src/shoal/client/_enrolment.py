"""Authorizing keys on a server node: by an admin's command, or by a one-time enrolment code.

* :func:`authorize_key` appends ``ROLE KEY-ID PUBLIC-KEY`` to
  ``<data-dir>/authorized_keys`` (``shoal keys authorize``); a running agent
  picks the change up at its next request.
* :func:`create_enrolment_code` makes a random code an admin hands to whoever
  enrols a browser (``shoal keys enrol-code``); ``<data-dir>/enrolment_codes``
  keeps only its SHA-256, its role and its expiry, one ``HASH ROLE EXPIRES``
  line per code, mode 0600.
* :func:`redeem_enrolment_code` authorizes a key with a code's role, once:
  the code is removed as it is used, and refused once expired.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from shoal.interfaces import InvalidInput, Role, Unauthenticated

from ._keys import AUTHORIZED_KEYS_FILE, _write_private, load_authorized_keys, parse_authorized_keys

__all__ = [
    "ENROLMENT_CODES_FILE",
    "authorize_key",
    "create_enrolment_code",
    "redeem_enrolment_code",
]

ENROLMENT_CODES_FILE = "enrolment_codes"
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed by hand
_CODE_LENGTH = 16


def authorize_key(data_dir: Path, role: Role | str, key_id: str, public_key: str) -> bool:
    """Authorize ``key_id`` with ``role`` in ``<data_dir>/authorized_keys``.

    Returns:
        True if the line was added; False if the key was already there with
        the same role and public key.

    Raises:
        InvalidInput: the file is missing or unsafe, the role, key id or public
            key is not valid, or the key id is there with another role or key.
    """
    role_text = role.value if isinstance(role, Role) else role
    path = data_dir / AUTHORIZED_KEYS_FILE
    keys = load_authorized_keys(path)
    line = f"{role_text} {key_id} {public_key}"
    new = parse_authorized_keys(line, "the new line")
    if new.problems:
        raise InvalidInput(new.problems[0].message.removeprefix("the new line:1: "))
    if key_id in keys:
        known, wanted = keys[key_id], new[key_id]
        if known.role == wanted.role and bytes(known.public_key) == bytes(wanted.public_key):
            return False
        raise InvalidInput(
            f"{key_id} is already in {path} with another role or key: edit its line there "
            "(or remove it and authorize again)",
            key_id=key_id,
        )
    text = path.read_text("utf-8")
    separator = "" if not text or text.endswith("\n") else "\n"
    _write_private(path, f"{text}{separator}{line}\n")
    return True


def _digest(code: str) -> str:
    normalized = code.strip().upper().replace("-", "").replace(" ", "")
    return hashlib.sha256(normalized.encode()).hexdigest()


def _read_codes(path: Path) -> list[tuple[str, str, int]]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text("utf-8").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].isdigit():
            entries.append((fields[0], fields[1], int(fields[2])))
    return entries


def _write_codes(path: Path, entries: list[tuple[str, str, int]]) -> None:
    _write_private(path, "".join(f"{h} {role} {expires}\n" for h, role, expires in entries))


def create_enrolment_code(
    data_dir: Path, role: Role, ttl: float, *, now: float | None = None
) -> str:
    """Make a one-time code that authorizes one key with ``role`` for ``ttl`` seconds.

    Returns:
        The code, as ``XXXX-XXXX-XXXX-XXXX``; only its hash is kept.

    Raises:
        InvalidInput: ``ttl`` is not positive, or the data dir does not exist.
    """
    if ttl <= 0:
        raise InvalidInput("the code's lifetime must be positive", field="ttl")
    if not data_dir.is_dir():
        raise InvalidInput(
            f"{data_dir} is not a data dir: start the agent once, or pass --data-dir"
        )
    clock = time.time() if now is None else now
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
    path = data_dir / ENROLMENT_CODES_FILE
    live = [entry for entry in _read_codes(path) if entry[2] > clock]
    _write_codes(path, [*live, (_digest(code), role.value, int(clock + ttl))])
    return "-".join(code[i : i + 4] for i in range(0, _CODE_LENGTH, 4))


def redeem_enrolment_code(
    data_dir: Path, code: str, key_id: str, public_key: str, *, now: float | None = None
) -> Role:
    """Authorize ``key_id`` with the role of ``code``, and forget the code.

    Returns:
        The role the key now has.

    Raises:
        Unauthenticated: the code is unknown, already used or expired
            (``reason``: ``bad_enrolment_code``).
        InvalidInput: the key id or public key is not valid, or the key id is
            already authorized with another key (the code is not used up).
    """
    clock = time.time() if now is None else now
    path = data_dir / ENROLMENT_CODES_FILE
    entries = _read_codes(path)
    wanted = _digest(code)
    match = next((e for e in entries if hmac.compare_digest(e[0], wanted)), None)
    live = [e for e in entries if e[2] > clock and e is not match]
    if match is None or match[2] <= clock:
        if path.is_file():
            _write_codes(path, live)
        raise Unauthenticated(
            "this enrolment code is unknown, used or expired: ask an admin for a new one "
            "(`shoal keys enrol-code`)",
            reason="bad_enrolment_code",
        )
    role = Role(match[1])
    authorize_key(data_dir, role, key_id, public_key)
    _write_codes(path, live)
    return role
