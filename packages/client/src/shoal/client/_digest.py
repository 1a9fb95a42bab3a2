"""RFC 9530 Content-Digest: binds a request's body to its signature.

The signature covers the ``Content-Digest`` header, and the server checks that
header against the bytes it actually received, so a signed request's body
cannot be swapped. Shoal sends ``sha-256``; on receipt every supported
algorithm present (``sha-256``, ``sha-512``) must match, unknown ones are
ignored as RFC 9530 allows, and at least one supported one is required.
Comparison is constant-time. Failures raise
:class:`~shoal.client._httpsig.SignatureError` with reason ``digest_mismatch``
(or ``malformed_signature`` for an unparsable header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from http_sfv.dictionary import Dictionary
from http_sfv.item import Item

from ._httpsig import MALFORMED, SignatureError, parse_dictionary

__all__ = ["DIGEST_ALGORITHMS", "DIGEST_MISMATCH", "check_content_digest", "content_digest"]

DIGEST_MISMATCH = "digest_mismatch"
DIGEST_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
"""Digest algorithms Shoal creates and checks (RFC 9530 §5)."""


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """Return an RFC 9530 ``Content-Digest`` value, e.g. ``sha-256=:...:``."""
    digest = DIGEST_ALGORITHMS[algorithm](body).digest()
    return str(Dictionary({algorithm: Item(digest)}))


def check_content_digest(value: str, body: bytes) -> None:
    """Check a ``Content-Digest`` value against ``body``.

    Every supported algorithm present (sha-256, sha-512) must match; unknown
    algorithms are ignored, but at least one supported one is required.

    Raises:
        SignatureError: ``digest_mismatch`` on a mismatch or no usable digest,
            ``malformed_signature`` when the header cannot be parsed.
    """
    members = parse_dictionary("Content-Digest", value)
    checked = 0
    for algorithm, member in members.items():
        hasher = DIGEST_ALGORITHMS.get(algorithm)
        if hasher is None:
            continue
        if not isinstance(member, Item) or type(member.value) is not bytes:
            raise SignatureError(MALFORMED, f"Content-Digest {algorithm} must be a byte sequence")
        actual = hasher(body).digest()
        if not hmac.compare_digest(member.value, actual):
            raise SignatureError(
                DIGEST_MISMATCH,
                f"Content-Digest {algorithm} does not match the {len(body)}-byte body (which "
                f"hashes to {base64.b64encode(actual).decode()}): the body changed after signing",
            )
        checked += 1
    if not checked:
        raise SignatureError(
            DIGEST_MISMATCH, "Content-Digest has no sha-256 or sha-512 member; send sha-256"
        )
