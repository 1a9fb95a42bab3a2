"""RFC 9530 Content-Digest, checked against the values published in the RFCs."""

from __future__ import annotations

import pytest

from shoal.client._digest import check_content_digest, content_digest
from shoal.client._httpsig import SignatureError

# The test body of RFC 9421 Appendix B.2 and its published digests (RFC 9421 B.2, §7.2).
BODY = b'{"hello": "world"}'
SHA_512 = (
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+T"
    "aPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
)
SHA_256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def test_content_digest_matches_the_rfc_values() -> None:
    assert content_digest(BODY, "sha-512") == SHA_512
    assert content_digest(BODY) == SHA_256


@pytest.mark.parametrize(
    "value",
    [SHA_256, SHA_512, f"{SHA_256}, {SHA_512}", f"unixsum=:AAAA:, {SHA_256}"],
)
def test_check_content_digest_accepts(value: str) -> None:
    check_content_digest(value, BODY)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (content_digest(b"other"), "digest_mismatch"),
        (f"{SHA_256}, {content_digest(b'other', 'sha-512')}", "digest_mismatch"),
        ("md5=:AAAA:", "digest_mismatch"),
        ("sha-256=not-bytes", "malformed_signature"),
        ("sha-256", "malformed_signature"),
        ("((", "malformed_signature"),
    ],
)
def test_check_content_digest_rejects(value: str, reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        check_content_digest(value, BODY)
    assert caught.value.reason == reason


def test_a_mismatch_says_what_the_body_hashes_to() -> None:
    with pytest.raises(SignatureError, match="X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="):
        check_content_digest(content_digest(b""), BODY)
