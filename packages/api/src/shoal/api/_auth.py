"""Who is calling: the server's signature policy for RFC 9421 signed requests.

Server side, :class:`RequestVerifier` turns a request into a
:class:`~shoal.interfaces.Caller` or an ``Unauthenticated`` error whose ``details['reason']``
is one of ``missing_signature``, ``malformed_signature``, ``unknown_key``,
``bad_signature``, ``digest_mismatch``, ``stale``, ``replayed`` or
``insufficient_coverage`` (and :func:`target_uri_from_scope`'s
``malformed_request``). The policy, checked cheapest first:

1. a signature must cover ``@method``, ``content-digest`` and the target,
   either as ``@target-uri`` or as ``@authority`` + ``@path`` + ``@query``;
2. ``alg``, when present, must be ``ed25519``; ``keyid``, ``created`` and
   ``nonce`` are required, and the key id must be authorized;
3. ``created`` must be within ±60 s of the server clock (injectable);
4. the ed25519 signature must verify, then Content-Digest must match the body;
5. the ``(keyid, nonce)`` pair must be new. It is remembered only after all
   of the above passed (so forged requests cannot fill the cache) and only
   until ``created + 60 s``, after which a replay is refused as stale anyway.

The client's side, :class:`shoal.client.SignedAuth`, signs what this
policy asks for.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

from nacl.signing import VerifyKey

from shoal.client import (
    ALGORITHM,
    Clock,
    HeadersLike,
    ParsedSignature,
    RequestParts,
    SignatureError,
    check_content_digest,
    parse_signatures,
    verify_signature,
)
from shoal.interfaces import Caller, Role, Unauthenticated, Unavailable

__all__ = [
    "KeyLookup",
    "ReplayCache",
    "RequestVerifier",
    "Verified",
    "target_uri_from_scope",
]

KeyLookup = Callable[[str], tuple[Role, VerifyKey] | None]
"""Map a key id to ``(role, public key)``, or ``None`` when it is not authorized."""
_ALWAYS_REQUIRED = ("@method", "content-digest")
_TARGET_CHOICES = (("@target-uri",), ("@authority", "@path", "@query"))
_MAX_NONCE_LENGTH = 256


class ReplayCache:
    """Remembers ``(key id, nonce)`` pairs until they expire; bounded and thread-safe."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._lock = threading.Lock()  # FastAPI may run sync dependencies in threads

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, key: tuple[str, str], expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; return ``False`` if it is already known.

        Raises:
            Unavailable: the cache is full of unexpired entries. Refusing is
                safer than forgetting a nonce that could then be replayed.
        """
        with self._lock:
            # Strictly before now: at now == created + skew the request is still fresh.
            while self._heap and self._heap[0][0] < now:
                _, old = heapq.heappop(self._heap)
                del self._expiry[old]
            if key in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                raise Unavailable(
                    f"more than {self.max_entries} signed requests arrived within the replay "
                    "window; retry in a minute",
                    reason="replay_cache_full",
                )
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True


def _reject(reason: str, message: str, **details: Any) -> Unauthenticated:
    return Unauthenticated(message, reason=reason, **details)


def _covers(signature: ParsedSignature) -> bool:
    covered = set(signature.components)
    return set(_ALWAYS_REQUIRED) <= covered and any(
        set(choice) <= covered for choice in _TARGET_CHOICES
    )


class Verified(NamedTuple):
    """An authenticated request: who signed it, and what the signature covered."""

    caller: Caller
    covered: frozenset[str]


class RequestVerifier:
    """Checks RFC 9421 signatures on incoming requests against Shoal's policy.

    Args:
        keys: The key lookup, e.g. ``AuthorizedKeys.lookup``.
        clock: The time source.
        max_skew: How far (seconds) ``created`` may be from the server clock.
        replay_cache: Where nonces are remembered; one per server process.
    """

    def __init__(
        self,
        keys: KeyLookup,
        *,
        clock: Clock = time.time,
        max_skew: float = 60.0,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self.max_skew = max_skew
        self._replay = ReplayCache() if replay_cache is None else replay_cache

    def verify(self, method: str, target_uri: str, headers: HeadersLike, body: bytes) -> Caller:
        """Authenticate one request; return its caller (see :meth:`verify_signed`)."""
        return self.verify_signed(method, target_uri, headers, body).caller

    def verify_signed(
        self, method: str, target_uri: str, headers: HeadersLike, body: bytes
    ) -> Verified:
        """Authenticate one request; return its caller and what its signature covered.

        Args:
            method: The request method, as received.
            target_uri: The full URI the client addressed (see :func:`target_uri_from_scope`).
            headers: The request header fields.
            body: The request content, exactly as received.

        Returns:
            The caller, and the components (header names) the signature covered:
            a header outside them may have been added on the way.

        Raises:
            Unauthenticated: the signature is missing or unacceptable;
                ``details['reason']`` says which check failed.
            Unavailable: the replay cache is full.
        """
        try:
            return self._verify(RequestParts.build(method, target_uri, headers, body))
        except SignatureError as exc:
            raise _reject(exc.reason, exc.message) from exc

    def _verify(self, request: RequestParts) -> Verified:
        signature_input = request.fields.get("signature-input")
        signature_value = request.fields.get("signature")
        if signature_input is None or signature_value is None:
            raise _reject(
                "missing_signature",
                "the request is not signed: send Signature-Input and Signature headers "
                "(RFC 9421, ed25519), as the shoal CLI does with the key from `shoal keys init`",
            )
        candidates = parse_signatures(signature_input, signature_value)
        signature = next((sig for sig in candidates if _covers(sig)), None)
        if signature is None:
            covered = "; ".join(
                f"{s.label}: {' '.join(s.components) or '(nothing)'}" for s in candidates
            )
            raise _reject(
                "insufficient_coverage",
                f"no signature covers enough of the request ({covered}); sign "
                '("@method" "@target-uri" "content-digest"), or "@authority" "@path" "@query" '
                "in place of @target-uri",
            )
        params = signature.params
        alg, key_id, created, nonce = (params.get(k) for k in ("alg", "keyid", "created", "nonce"))
        if alg is not None and alg != ALGORITHM:
            raise _reject("bad_signature", f"alg {alg!r} is not accepted; sign with {ALGORITHM}")
        if not isinstance(key_id, str) or not isinstance(created, int):
            raise _reject("malformed_signature", "the signature needs keyid and created parameters")
        if not isinstance(nonce, str) or not 0 < len(nonce) <= _MAX_NONCE_LENGTH:
            raise _reject(
                "malformed_signature",
                f"the signature needs a nonce parameter of 1-{_MAX_NONCE_LENGTH} characters, "
                "fresh for every request",
            )
        entry = self._keys(key_id)
        if entry is None:
            raise _reject(
                "unknown_key",
                f"key id {key_id!r} is not authorized on this server: an admin adds "
                f"`ROLE {key_id} PUBLIC-KEY` to <data-dir>/authorized_keys",
                key_id=key_id,
            )
        role, verify_key = entry
        now = self._clock()
        self._check_fresh(created, params.get("expires"), now)
        if "content-digest" not in request.fields:
            raise _reject(
                "digest_mismatch", "the request has no Content-Digest header; send sha-256=:...:"
            )
        verify_signature(request, signature, verify_key)
        check_content_digest(request.fields["content-digest"], request.body)
        if not self._replay.remember((key_id, nonce), created + self.max_skew, now):
            raise _reject(
                "replayed",
                f"nonce {nonce!r} was already used by key {key_id!r}: this request is a "
                "replay; a client must sign every request afresh",
                key_id=key_id,
            )
        return Verified(Caller(key_id, role), frozenset(signature.components))

    def _check_fresh(self, created: int, expires: object, now: float) -> None:
        age = round(now - created)
        if abs(now - created) > self.max_skew:
            when = f"{age} s ago" if age > 0 else f"{-age} s in the future"
            raise _reject(
                "stale",
                f"request created {when}; the server accepts ±{self.max_skew:g} s: "
                "check the client's clock",
                age_seconds=age,
            )
        if isinstance(expires, int) and expires <= now:
            raise _reject(
                "stale", f"the signature expired {round(now - expires)} s ago; sign again"
            )


def target_uri_from_scope(scope: Mapping[str, Any]) -> str:
    """Rebuild the URI a client addressed from an ASGI HTTP scope.

    Uses the ``Host`` header and the undecoded ``raw_path`` so that the result
    matches what the client signed byte for byte (Starlette's ``request.url``
    re-encodes the decoded path, which can differ).

    Raises:
        Unauthenticated: the Host header is not a plain ``host[:port]``, or the
            path or query holds a ``#``. Either could make the rebuilt URI name
            another path or query than the one served: a ``Host`` of
            ``a/v1/x#`` would pass a signature made for ``/v1/x`` on a request
            for ``/v1/y``.
    """
    headers = {bytes(name).lower(): bytes(value) for name, value in scope.get("headers", [])}
    host = headers.get(b"host", b"").decode("latin-1")
    if not host:
        server_host, server_port = scope.get("server") or ("localhost", None)
        if ":" in server_host:  # an IPv6 address keeps its brackets in an authority
            server_host = f"[{server_host}]"
        host = server_host if server_port is None else f"{server_host}:{server_port}"
    if _AUTHORITY.fullmatch(host) is None:
        raise _reject(
            "malformed_request",
            f"the Host header {host[:100]!r} is not a host[:port]: send the address the "
            "request was signed for",
        )
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(str(scope.get("path", "/")))
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    if not path.startswith("/") or "#" in path or "#" in query:
        raise _reject(
            "malformed_request", "the request target must be a path (and query) without '#'"
        )
    return f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")


_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::[0-9]{1,5})?")
"""A Host header :func:`target_uri_from_scope` accepts: a name or an address, and a port."""
