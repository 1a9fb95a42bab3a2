"""Authorizing keys in a data dir: by command, and by one-time enrolment codes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from shoal.client import (
    AUTHORIZED_KEYS_FILE,
    ENROLMENT_CODES_FILE,
    authorize_key,
    create_enrolment_code,
    ensure_authorized_keys,
    load_authorized_keys,
    redeem_enrolment_code,
)
from shoal.interfaces import InvalidInput, Role, Unauthenticated


def public_key() -> str:
    return base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    ensure_authorized_keys(tmp_path / "data", tmp_path / "home")
    return tmp_path / "data"


def test_authorize_key_appends_once_and_refuses_another_key_under_the_same_id(
    data_dir: Path,
) -> None:
    key = public_key()
    assert authorize_key(data_dir, Role.VIEWER, "browser-1", key)
    assert not authorize_key(data_dir, "viewer", "browser-1", key)
    with pytest.raises(InvalidInput, match=r"already in .* with another role or key"):
        authorize_key(data_dir, Role.OPERATOR, "browser-1", key)
    with pytest.raises(InvalidInput, match="not a base64 32-byte ed25519 key"):
        authorize_key(data_dir, Role.VIEWER, "browser-2", "not-a-key")
    keys = load_authorized_keys(data_dir / AUTHORIZED_KEYS_FILE)
    assert keys.lookup("browser-1") is not None and keys["browser-1"].role == Role.VIEWER
    assert (data_dir / AUTHORIZED_KEYS_FILE).stat().st_mode & 0o777 == 0o600


def test_an_enrolment_code_works_once_and_only_before_it_expires(data_dir: Path) -> None:
    code = create_enrolment_code(data_dir, Role.OPERATOR, 60, now=1000)
    assert code not in (data_dir / ENROLMENT_CODES_FILE).read_text()  # only its hash is kept
    late = create_enrolment_code(data_dir, Role.VIEWER, 60, now=1000)
    assert redeem_enrolment_code(data_dir, code.lower(), "browser-1", public_key(), now=1030) == (
        Role.OPERATOR
    )
    with pytest.raises(Unauthenticated) as refused:
        redeem_enrolment_code(data_dir, code, "browser-2", public_key(), now=1031)
    assert refused.value.details["reason"] == "bad_enrolment_code"
    with pytest.raises(Unauthenticated, match="unknown, used or expired"):
        redeem_enrolment_code(data_dir, late, "browser-late", public_key(), now=1061)
    keys = load_authorized_keys(data_dir / AUTHORIZED_KEYS_FILE)
    assert keys["browser-1"].role == Role.OPERATOR and "browser-2" not in keys


def test_a_code_is_not_used_up_by_a_key_that_cannot_be_authorized(data_dir: Path) -> None:
    code = create_enrolment_code(data_dir, Role.VIEWER, 60, now=0)
    with pytest.raises(InvalidInput):
        redeem_enrolment_code(data_dir, code, "browser 1", public_key(), now=1)
    assert redeem_enrolment_code(data_dir, code, "browser-1", public_key(), now=2) == Role.VIEWER
