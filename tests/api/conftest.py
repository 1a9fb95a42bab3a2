"""Shared fixtures for the REST API's signing tests: keys, authorized keys, a clock."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from shoal.client._keys import AuthorizedKey, AuthorizedKeys, KeyPair
from shoal.interfaces import Role


@pytest.fixture
def alice() -> KeyPair:
    """An operator's key pair, deterministic so failures reproduce."""
    return KeyPair("alice@laptop", SigningKey(bytes(range(32))))


@pytest.fixture
def mallory() -> KeyPair:
    """A key nobody authorized."""
    return KeyPair("mallory@elsewhere", SigningKey(bytes(range(100, 132))))


@pytest.fixture
def authorized(alice: KeyPair) -> AuthorizedKeys:
    """authorized_keys trusting alice as operator."""
    entry = AuthorizedKey(Role.OPERATOR, alice.key_id, alice.verify_key)
    return AuthorizedKeys({alice.key_id: entry})
