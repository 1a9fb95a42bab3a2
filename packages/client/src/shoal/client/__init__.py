"""Shoal's signed client: RFC 9421 ed25519 signatures, key files, and the REST client.

What every caller of a Shoal API needs, and nothing of the server:

* :class:`ShoalClient` — the Service protocol over signed HTTP;
* :class:`SignedAuth` — the httpx auth that signs each request;
* key files: :func:`init_keypair`, :func:`load_keypair`, :func:`default_home`,
  and ``authorized_keys`` (:func:`load_authorized_keys`,
  :func:`ensure_authorized_keys`), the format servers trust keys in, with
  :func:`authorize_key` and one-time enrolment codes
  (:func:`create_enrolment_code`, :func:`redeem_enrolment_code`);
* :data:`DEFAULT_SERVER`;
* the RFC 9421 primitives the API's verifier shares: :func:`parse_signatures`,
  :func:`verify_signature`, :func:`check_content_digest`, :class:`RequestParts`.

The CLI, the MCP server's stdio mode and the API (which verifies what this
signs) all use it. Every part is imported on first use (see ``_LAZY``), so
``shoal --help`` loads neither httpx nor nacl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.interfaces import lazy_getattr

from ._defaults import DEFAULT_SERVER

if TYPE_CHECKING:
    from ._client import ShoalClient
    from ._digest import check_content_digest, content_digest
    from ._enrolment import (
        ENROLMENT_CODES_FILE,
        authorize_key,
        create_enrolment_code,
        redeem_enrolment_code,
    )
    from ._httpsig import (
        ALGORITHM,
        HeadersLike,
        ParsedSignature,
        RequestParts,
        SignatureError,
        SignatureParams,
        parse_signatures,
        sign_request,
        verify_signature,
    )
    from ._keys import (
        AUTHORIZED_KEYS_FILE,
        AuthorizedKey,
        AuthorizedKeys,
        KeyPair,
        default_home,
        default_key_id,
        ensure_authorized_keys,
        init_keypair,
        load_authorized_keys,
        load_keypair,
        parse_authorized_keys,
    )
    from ._signer import CLIENT_COMPONENTS, Clock, SignedAuth

_LAZY = {
    "ShoalClient": "._client",
    "check_content_digest": "._digest",
    "content_digest": "._digest",
    "ENROLMENT_CODES_FILE": "._enrolment",
    "authorize_key": "._enrolment",
    "create_enrolment_code": "._enrolment",
    "redeem_enrolment_code": "._enrolment",
    "ALGORITHM": "._httpsig",
    "HeadersLike": "._httpsig",
    "ParsedSignature": "._httpsig",
    "RequestParts": "._httpsig",
    "SignatureError": "._httpsig",
    "SignatureParams": "._httpsig",
    "parse_signatures": "._httpsig",
    "sign_request": "._httpsig",
    "verify_signature": "._httpsig",
    "AUTHORIZED_KEYS_FILE": "._keys",
    "AuthorizedKey": "._keys",
    "AuthorizedKeys": "._keys",
    "KeyPair": "._keys",
    "default_home": "._keys",
    "default_key_id": "._keys",
    "ensure_authorized_keys": "._keys",
    "init_keypair": "._keys",
    "load_authorized_keys": "._keys",
    "load_keypair": "._keys",
    "parse_authorized_keys": "._keys",
    "CLIENT_COMPONENTS": "._signer",
    "Clock": "._signer",
    "SignedAuth": "._signer",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "ALGORITHM",
    "AUTHORIZED_KEYS_FILE",
    "CLIENT_COMPONENTS",
    "DEFAULT_SERVER",
    "ENROLMENT_CODES_FILE",
    "AuthorizedKey",
    "AuthorizedKeys",
    "Clock",
    "HeadersLike",
    "KeyPair",
    "ParsedSignature",
    "RequestParts",
    "ShoalClient",
    "SignatureError",
    "SignatureParams",
    "SignedAuth",
    "authorize_key",
    "check_content_digest",
    "content_digest",
    "create_enrolment_code",
    "default_home",
    "default_key_id",
    "ensure_authorized_keys",
    "init_keypair",
    "load_authorized_keys",
    "load_keypair",
    "parse_authorized_keys",
    "parse_signatures",
    "redeem_enrolment_code",
    "sign_request",
    "verify_signature",
]
