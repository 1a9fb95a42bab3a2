"""The client's side of RFC 9421: an ``httpx.Auth`` that signs every request with a Shoal key.

It adds Content-Digest and signs ``("@method" "@target-uri" "content-digest")``
(and the ``shoal-via`` header, when the client declares its front door) with
the caller's ed25519 key, a ``created`` time and a fresh nonce: what the API's
verifier (``shoal.api.RequestVerifier``) asks of a request.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Generator

import httpx

from shoal.interfaces import IF_MATCH_HEADER, TRACEPARENT_HEADER, VIA_HEADER, InvalidInput

from ._digest import content_digest
from ._httpsig import RequestParts, SignatureError, SignatureParams, sign_request
from ._keys import KeyPair

__all__ = ["CLIENT_COMPONENTS", "Clock", "SignedAuth"]

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""

CLIENT_COMPONENTS = ("@method", "@target-uri", "content-digest")
"""What :class:`SignedAuth` covers, and :data:`~shoal.interfaces.VIA_HEADER`,
:data:`~shoal.interfaces.TRACEPARENT_HEADER` and :data:`~shoal.interfaces.IF_MATCH_HEADER`
when sent."""


def _new_nonce() -> str:
    return secrets.token_urlsafe(16)


class SignedAuth(httpx.Auth):
    """Signs every httpx request with a Shoal key pair (sync and async clients).

    Args:
        keypair: The caller's key pair (see ``load_keypair``).
        clock: The time source for ``created``.
        nonce: Makes a fresh nonce per request.
        label: The signature label.
    """

    requires_request_body = True

    def __init__(
        self,
        keypair: KeyPair,
        *,
        clock: Clock = time.time,
        nonce: Callable[[], str] = _new_nonce,
        label: str = "sig1",
    ) -> None:
        self._keypair = keypair
        self._clock = clock
        self._nonce = nonce
        self._label = label

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add Content-Digest, Signature-Input and Signature, then send."""
        body = request.content
        request.headers["Content-Digest"] = content_digest(body)
        parts = RequestParts.build(
            request.method, str(request.url), request.headers.multi_items(), body
        )
        params = SignatureParams(
            created=int(self._clock()), keyid=self._keypair.key_id, nonce=self._nonce()
        )
        components: tuple[str, ...] = CLIENT_COMPONENTS
        if VIA_HEADER in request.headers:
            components = (*components, VIA_HEADER)
        if TRACEPARENT_HEADER in request.headers:
            components = (*components, TRACEPARENT_HEADER)
        if IF_MATCH_HEADER in request.headers:
            components = (*components, IF_MATCH_HEADER)
        try:
            signed = sign_request(
                parts, components, params, self._keypair.signing_key, label=self._label
            )
        except SignatureError as exc:
            raise InvalidInput(
                f"cannot sign {request.method} {request.url}: {exc.message}"
            ) from exc
        request.headers["Signature-Input"] = signed.signature_input
        request.headers["Signature"] = signed.signature
        yield request
