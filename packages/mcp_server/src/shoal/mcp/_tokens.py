"""Bearer tokens for the MCP endpoint: EdDSA JWTs signed by an authorized ed25519 key.

``shoal token create --role viewer --ttl 1h`` signs a token with the user's
key (the one the CLI signs REST requests with)::

    header  {"alg": "EdDSA", "typ": "JWT", "kid": KEY-ID}
    claims  {"sub": KEY-ID, "role": ROLE, "aud": "shoal-mcp", "iat": ..., "exp": ..., "jti": ...}

The agent accepts a token when, checked in this order: it parses, its key id
is in authorized_keys, the signature verifies with that key, the audience is
``shoal-mcp``, it has not expired (and was not issued in the future), its
lifetime is at most :data:`MAX_TTL`, and the key's authorized role is at
least the token's role. The token's role is then the caller's role. Removing
a key from authorized_keys revokes every token it signed. Refusals are
:class:`Unauthenticated` with ``details['reason']`` one of
``malformed_token``, ``unknown_key``, ``bad_signature``, ``wrong_audience``,
``expired``, ``not_yet_valid``, ``lifetime_too_long`` or ``role_not_allowed``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.signing import VerifyKey

from shoal.client import KeyPair
from shoal.interfaces import InvalidInput, Role, Unauthenticated

__all__ = [
    "AUDIENCE",
    "MAX_TTL",
    "MIN_TTL",
    "KeyLookup",
    "TokenClaims",
    "TokenVerifier",
    "create_token",
    "parse_ttl",
]

AUDIENCE = "shoal-mcp"
"""The ``aud`` claim every MCP token carries."""
MIN_TTL = 60
"""Shortest token lifetime, in seconds."""
MAX_TTL = 30 * 86400
"""Longest token lifetime (30 days), in seconds: long-lived access is a key, not a token."""
ALGORITHM = "EdDSA"

KeyLookup = Callable[[str], tuple[Role, VerifyKey] | None]
"""Map a key id to ``(role, public key)`` from authorized_keys, or ``None``."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?P<amount>\d+)(?P<unit>[smhd]?)")


def parse_ttl(text: str) -> int:
    """Parse a lifetime such as ``90s``, ``15m``, ``1h``, ``7d`` or a number of seconds.

    Raises:
        InvalidInput: not a duration, or outside ``MIN_TTL``..``MAX_TTL``.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(
            f"--ttl {text!r} is not a duration: write e.g. 15m, 1h or 7d", field="ttl"
        )
    seconds = int(match["amount"]) * _UNITS[match["unit"] or "s"]
    _check_ttl(seconds)
    return seconds


def _check_ttl(seconds: float) -> None:
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise InvalidInput(
            f"a token lifetime must be between 1m and 30d, got {seconds:g} s", field="ttl"
        )


def create_token(
    keypair: KeyPair, role: Role, ttl: float, *, issued_at: float | None = None
) -> str:
    """Sign a bearer token for the MCP endpoint.

    Args:
        keypair: The signing key; the agent must authorize it with ``role`` or higher.
        role: The role the token grants.
        ttl: Lifetime in seconds (``MIN_TTL``..``MAX_TTL``).
        issued_at: The ``iat`` time (now by default; tests make expired tokens with it).

    Raises:
        InvalidInput: ``ttl`` is out of range.
    """
    _check_ttl(ttl)
    now = int(time.time() if issued_at is None else issued_at)
    claims = {
        "sub": keypair.key_id,
        "role": role.value,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + int(ttl),
        "jti": secrets.token_hex(8),
    }
    key = Ed25519PrivateKey.from_private_bytes(bytes(keypair.signing_key))
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": keypair.key_id})


@dataclass(frozen=True)
class TokenClaims:
    """A verified token."""

    key_id: str
    """The key that signed it (``sub`` and ``kid``)."""
    role: Role
    """The role it grants."""
    issued_at: int
    """``iat``, seconds since the epoch."""
    expires_at: int
    """``exp``, seconds since the epoch."""


def _reject(reason: str, message: str, **details: Any) -> Unauthenticated:
    return Unauthenticated(message, reason=reason, **details)


class TokenVerifier:
    """Checks MCP bearer tokens against authorized_keys.

    Args:
        keys: The authorized_keys lookup (the agent passes its live, reloading one).
        leeway: Seconds of clock skew tolerated on ``iat`` and ``exp``.
    """

    def __init__(self, keys: KeyLookup, *, leeway: float = 30.0) -> None:
        self._keys = keys
        self.leeway = leeway

    def verify(self, token: str) -> TokenClaims:
        """Return the claims of a valid token.

        Raises:
            Unauthenticated: the token is refused; ``details['reason']`` says why.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _reject(
                "malformed_token",
                "the bearer token is not a JWT: create one with `shoal token create`",
            ) from None
        key_id = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(key_id, str):
            raise _reject(
                "malformed_token",
                f"the bearer token must be an {ALGORITHM} JWT with a kid header, as "
                "`shoal token create` makes",
            )
        entry = self._keys(key_id)
        if entry is None:
            raise _reject(
                "unknown_key",
                f"key id {key_id!r} that signed the token is not authorized on this server: an "
                f"admin adds `ROLE {key_id} PUBLIC-KEY` to <data-dir>/authorized_keys",
                key_id=key_id,
            )
        key_role, verify_key = entry
        claims = self._decode(token, verify_key)
        role_text, subject = claims.get("role"), claims.get("sub")
        if subject != key_id or role_text not in {r.value for r in Role}:
            raise _reject(
                "malformed_token",
                "the token's sub must equal its kid and its role be admin, operator or viewer",
            )
        role = Role(role_text)
        issued_at, expires_at = int(claims["iat"]), int(claims["exp"])
        if expires_at - issued_at > MAX_TTL:
            raise _reject(
                "lifetime_too_long",
                "the token lives longer than 30 days: create a shorter one with --ttl",
            )
        if not key_role.allows(role):
            raise _reject(
                "role_not_allowed",
                f"the token claims role {role.value}, but key {key_id!r} is authorized as "
                f"{key_role.value} only: create a token with --role {key_role.value}",
                key_id=key_id,
            )
        return TokenClaims(key_id, role, issued_at, expires_at)

    def _decode(self, token: str, verify_key: VerifyKey) -> dict[str, Any]:
        public = Ed25519PublicKey.from_public_bytes(bytes(verify_key))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                leeway=self.leeway,
                options={"require": ["sub", "aud", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise _reject(
                "expired",
                "the bearer token has expired: create a new one with `shoal token create`",
            ) from None
        except jwt.InvalidSignatureError:
            raise _reject(
                "bad_signature", "the bearer token's signature does not verify with its key"
            ) from None
        except jwt.InvalidAudienceError:
            raise _reject(
                "wrong_audience", f"the bearer token is not for {AUDIENCE} (its aud claim)"
            ) from None
        except jwt.ImmatureSignatureError:
            raise _reject(
                "not_yet_valid", "the bearer token was issued in the future: check the clocks"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise _reject("malformed_token", f"the bearer token is invalid: {exc}") from None
        return claims
