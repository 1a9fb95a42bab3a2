"""Bearer tokens: what `shoal token create` signs and what the agent accepts."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey, VerifyKey

from shoal.client import AuthorizedKey, AuthorizedKeys, KeyPair
from shoal.interfaces import InvalidInput, Role, Unauthenticated
from shoal.mcp import AUDIENCE, TokenVerifier, create_token, parse_ttl

ALICE = KeyPair("alice@laptop", SigningKey(bytes(range(32))))
BOB = KeyPair("bob@laptop", SigningKey(bytes(range(1, 33))))
MALLORY = KeyPair("alice@laptop", SigningKey(bytes(range(100, 132))))  # claims alice's id


@pytest.fixture
def verifier() -> TokenVerifier:
    keys = AuthorizedKeys(
        {
            ALICE.key_id: AuthorizedKey(Role.OPERATOR, ALICE.key_id, ALICE.verify_key),
        }
    )
    return TokenVerifier(keys.lookup)


def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    return str(info.value.details["reason"])


def test_a_token_carries_key_role_audience_and_expiry(verifier: TokenVerifier) -> None:
    before = int(time.time())
    token = create_token(ALICE, Role.VIEWER, 3600)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": "alice@laptop", "typ": "JWT"}
    claims = verifier.verify(token)
    assert (claims.key_id, claims.role) == ("alice@laptop", Role.VIEWER)
    assert before <= claims.issued_at and claims.expires_at == claims.issued_at + 3600
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["aud"] == AUDIENCE and payload["sub"] == "alice@laptop"


def test_an_independent_jwt_library_verifies_the_signature() -> None:
    token = create_token(ALICE, Role.OPERATOR, 600)
    public = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience=AUDIENCE)
    assert claims["role"] == "operator"


def test_refusals_name_their_reason(verifier: TokenVerifier) -> None:
    assert reason(verifier, "not-a-token") == "malformed_token"
    assert reason(verifier, create_token(BOB, Role.VIEWER, 600)) == "unknown_key"
    assert reason(verifier, create_token(MALLORY, Role.VIEWER, 600)) == "bad_signature"
    expired = create_token(ALICE, Role.VIEWER, 600, issued_at=time.time() - 7200)
    assert reason(verifier, expired) == "expired"
    future = create_token(ALICE, Role.VIEWER, 600, issued_at=time.time() + 3600)
    assert reason(verifier, future) == "not_yet_valid"
    assert reason(verifier, create_token(ALICE, Role.ADMIN, 600)) == "role_not_allowed"


def hand_made(claims: dict[str, object], key: KeyPair = ALICE, alg: str = "EdDSA") -> str:
    signer = Ed25519PrivateKey.from_private_bytes(bytes(key.signing_key))
    return jwt.encode(claims, signer, algorithm=alg, headers={"kid": key.key_id})


def test_hand_made_tokens_must_follow_the_rules(verifier: TokenVerifier) -> None:
    now = int(time.time())
    good = {"sub": "alice@laptop", "role": "viewer", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    assert verifier.verify(hand_made(good)).role == Role.VIEWER
    assert reason(verifier, hand_made({**good, "aud": "someone-else"})) == "wrong_audience"
    assert reason(verifier, hand_made({**good, "sub": "bob@laptop"})) == "malformed_token"
    assert reason(verifier, hand_made({**good, "role": "root"})) == "malformed_token"
    no_exp = {k: v for k, v in good.items() if k != "exp"}
    assert reason(verifier, hand_made(no_exp)) == "malformed_token"
    forever = {**good, "exp": now + 400 * 86400}
    assert reason(verifier, hand_made(forever)) == "lifetime_too_long"
    hs256 = jwt.encode(good, "shared-secret-that-is-long-enough!", algorithm="HS256")
    assert reason(verifier, hs256) == "malformed_token"


def test_removing_the_key_revokes_its_tokens() -> None:
    keys: dict[str, tuple[Role, VerifyKey]] = {ALICE.key_id: (Role.ADMIN, ALICE.verify_key)}
    verifier = TokenVerifier(keys.get)
    token = create_token(ALICE, Role.ADMIN, 600)
    assert verifier.verify(token).role == Role.ADMIN
    del keys[ALICE.key_id]
    assert reason(verifier, token) == "unknown_key"


def test_ttls_are_parsed_and_bounded() -> None:
    assert [parse_ttl(t) for t in ("90s", "15m", "1h", "7d", "3600")] == [
        90,
        900,
        3600,
        604800,
        3600,
    ]
    with pytest.raises(InvalidInput, match=r"not a duration: write e\.g\. 15m, 1h or 7d"):
        parse_ttl("soon")
    with pytest.raises(InvalidInput, match="between 1m and 30d"):
        parse_ttl("31d")
    with pytest.raises(InvalidInput, match="between 1m and 30d"):
        create_token(ALICE, Role.VIEWER, 10)
