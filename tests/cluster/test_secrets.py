"""Cluster secrets: gossip keys serf accepts, join tokens fit for URLs and headers."""

from __future__ import annotations

import base64
import re

import pytest

from shoal.cluster import check_gossip_key, new_gossip_key, new_join_token
from shoal.interfaces import InvalidInput


def test_a_gossip_key_is_base64_of_32_fresh_random_bytes() -> None:
    keys = {new_gossip_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 32
        assert check_gossip_key(key) == key


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"x" * 16).decode()])
def test_a_malformed_gossip_key_is_refused_with_the_fix(key: str) -> None:
    with pytest.raises(InvalidInput, match=r"encrypt_key must be base64 of 32 bytes.*init"):
        check_gossip_key(key)


def test_a_join_token_is_url_safe_and_unguessable() -> None:
    tokens = {new_join_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
