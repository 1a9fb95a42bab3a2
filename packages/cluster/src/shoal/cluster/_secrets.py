"""Cluster secrets: the gossip encryption key and the join token.

``shoal cluster init`` creates both once per cluster and hands them to every
node. The gossip key encrypts Serf's traffic (AES-256-GCM; Serf takes it as
base64 of 32 bytes, the same text ``serf keygen`` prints). The join token
authenticates node-to-node calls alongside each node's ed25519 key. Both come
from :mod:`secrets`, the operating system's CSPRNG.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from shoal.interfaces import InvalidInput

__all__ = ["GOSSIP_KEY_BYTES", "check_gossip_key", "new_gossip_key", "new_join_token"]

GOSSIP_KEY_BYTES = 32
"""Length of a gossip key before base64: 32 bytes selects AES-256."""

_JOIN_TOKEN_BYTES = 32


def new_gossip_key() -> str:
    """Return a new gossip key: base64 of 32 random bytes, as ``serf keygen`` makes."""
    return base64.b64encode(secrets.token_bytes(GOSSIP_KEY_BYTES)).decode("ascii")


def new_join_token() -> str:
    """Return a new join token: 32 random bytes, URL-safe base64 without padding."""
    return secrets.token_urlsafe(_JOIN_TOKEN_BYTES)


def check_gossip_key(key: str, *, field: str = "encrypt_key") -> str:
    """Return ``key`` if it is base64 of exactly 32 bytes.

    Raises:
        InvalidInput: it is not; the message names ``field`` and how to make one.

    """
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != GOSSIP_KEY_BYTES:
        raise InvalidInput(
            f"{field} must be base64 of {GOSSIP_KEY_BYTES} bytes (got {len(key)} characters "
            "that do not decode to that); create one with `shoal cluster init` "
            "or shoal.cluster.new_gossip_key()",
            field=field,
        )
    return key.strip()
