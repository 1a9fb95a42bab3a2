"""Authentication of node-to-node calls: the node's ed25519 key and the join token.

Every gRPC call between nodes carries six metadata entries (and, made inside
a trace, the W3C ``traceparent`` and ``baggage``)::

    shoal-node       the caller's node name
    shoal-key        its ed25519 public key (URL-safe base64)
    shoal-time       unix seconds when the call was signed
    shoal-nonce      16 random bytes (hex), accepted once per receiving process
    shoal-signature  ed25519 signature of the call string (URL-safe base64)
    shoal-token-mac  HMAC-SHA256 of the call string keyed by the join token

The call string binds all of it to one call::

    "shoal-node-call-v1", method, node, key, time, nonce, sha256(request),
    "traceparent=…", "baggage=…"   joined by newlines (empty values when absent)

So the signature proves the caller holds the node key whose fingerprint is
its node id, the MAC proves it was given the cluster's join token (which never
travels), the trace context it carries is its own, and neither can be moved
to another request (digest) or replayed
to the same process (nonce) or later than the ``max_skew`` window. The call
string does not name the receiver, so within that window a captured call
could be replayed to another node; every write a worker makes is a
compare-and-swap, which such a replay cannot win twice. The receiving side
then decides whether *that* node may do what it asks (a server checks the
node record that binds the name to the key; a worker checks that gossip
lists the caller as a server — a role any holder of the join token can
claim: the token is the trust boundary).

Written here rather than taken from a library: gRPC's own auth is TLS or
bearer tokens, and neither signs requests with a key the node already has.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from shoal.interfaces import TRACEPARENT_HEADER, InvalidInput, Unauthenticated

__all__ = [
    "SIGNED_TRACE_FIELDS",
    "CallVerifier",
    "Caller",
    "NodeIdentity",
    "fingerprint",
    "sign_call",
]

_PREFIX = "shoal-node-call-v1"
_NODE, _KEY, _TIME, _NONCE, _SIG, _MAC = (
    "shoal-node",
    "shoal-key",
    "shoal-time",
    "shoal-nonce",
    "shoal-signature",
    "shoal-token-mac",
)
SIGNED_TRACE_FIELDS = (TRACEPARENT_HEADER, "baggage")
"""The W3C trace-context metadata a call may carry; covered by its signature."""
_FIX_TOKEN = (
    "start the node with the join token of this cluster (the file `shoal cluster init` wrote)"
)


def fingerprint(public_key: bytes) -> str:
    """Return the node id of ``public_key``: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class NodeIdentity:
    """A node's name and ed25519 key: who it is to the other nodes."""

    name: str
    key: SigningKey

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return bytes(self.key.verify_key)

    @property
    def node_id(self) -> str:
        """The fingerprint of the public key, stable across restarts."""
        return fingerprint(self.public_key)

    @classmethod
    def load_or_create(cls, name: str, key_file: Path) -> NodeIdentity:
        """Load the key seed from ``key_file`` (mode 0600), creating it on first use.

        Raises:
            InvalidInput: the file exists but does not hold a 32-byte seed.
        """
        if key_file.exists():
            seed = key_file.read_bytes()
            if len(seed) != 32:
                raise InvalidInput(
                    f"{key_file} is corrupt (expected a 32-byte seed): restore it from a "
                    "backup, or remove it to give this node a new identity",
                    path=str(key_file),
                )
            return cls(name, SigningKey(seed))
        key = SigningKey.generate()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(key))
        return cls(name, key)


def _call_string(
    method: str,
    node: str,
    key: str,
    at: str,
    nonce: str,
    request: bytes,
    fields: Mapping[str, str],
) -> bytes:
    digest = hashlib.sha256(request).hexdigest()
    # The trace context a call carries is signed too: it is honoured only from a node.
    traced = [f"{name}={fields.get(name, '')}" for name in SIGNED_TRACE_FIELDS]
    return "\n".join((_PREFIX, method, node, key, at, nonce, digest, *traced)).encode()


def sign_call(
    identity: NodeIdentity,
    token: str,
    method: str,
    request: bytes,
    *,
    now: float | None = None,
    trace: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Return the metadata that authenticates ``identity`` calling ``method`` with ``request``.

    ``request`` is the serialized request message; ``method`` the full gRPC
    method path (``/shoal.cluster.v1.NodeState/Register``). ``trace`` holds
    the W3C trace context the call carries (``traceparent``, ``baggage``):
    signed with the rest, and sent with it.
    """
    trace = trace or {}
    key = _b64(identity.public_key)
    at = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    message = _call_string(method, identity.name, key, at, nonce, request, trace)
    signature = identity.key.sign(message).signature
    mac = hmac.new(token.encode(), message, hashlib.sha256).digest()
    return [
        (_NODE, identity.name),
        (_KEY, key),
        (_TIME, at),
        (_NONCE, nonce),
        (_SIG, _b64(signature)),
        (_MAC, _b64(mac)),
        *((name, value) for name, value in trace.items() if name in SIGNED_TRACE_FIELDS),
    ]


@dataclass(frozen=True)
class Caller:
    """A node whose call was authenticated."""

    name: str
    node_id: str
    public_key: bytes


class CallVerifier:
    """Checks the metadata of incoming calls against the join token.

    Args:
        token: the cluster's join token.
        max_skew: seconds a call's time may differ from ours (and how long
            its nonce is remembered).
        now: the wall clock, replaceable in tests.
    """

    def __init__(
        self, token: str, *, max_skew: float = 60.0, now: Callable[[], float] = time.time
    ) -> None:
        if not token:
            raise InvalidInput("the join token is empty: " + _FIX_TOKEN, field="join_token")
        self._token = token.encode()
        self._max_skew = max_skew
        self._now = now
        self._seen: dict[str, float] = {}

    def verify(
        self, metadata: Iterable[tuple[str, str | bytes]], method: str, request: bytes
    ) -> Caller:
        """Return the caller of ``method`` if ``metadata`` authenticates ``request``.

        Raises:
            Unauthenticated: metadata missing or malformed, a wrong join token,
                a bad signature, a time outside the allowed skew, or a replay.
        """
        fields = {k: v for k, v in metadata if isinstance(v, str)}
        missing = [k for k in (_NODE, _KEY, _TIME, _NONCE, _SIG, _MAC) if not fields.get(k)]
        if missing:
            raise Unauthenticated(
                f"not an authenticated Shoal node call (missing {', '.join(missing)}): "
                "only Shoal nodes of this cluster may call this port",
                method=method,
            )
        node, key, at, nonce = fields[_NODE], fields[_KEY], fields[_TIME], fields[_NONCE]
        try:
            public = _unb64(key)
            signature = _unb64(fields[_SIG])
            mac = _unb64(fields[_MAC])
            signed_at = int(at)
        except (binascii.Error, ValueError):
            raise Unauthenticated(
                f"call from {node!r} has malformed auth metadata", node=node
            ) from None
        now = self._now()
        if abs(now - signed_at) > self._max_skew:
            raise Unauthenticated(
                f"call from {node!r} was signed {now - signed_at:+.0f}s away from this "
                f"node's clock (allowed ±{self._max_skew:.0f}s): synchronise the clocks (NTP)",
                node=node,
            )
        # The signature first: a call altered in transit is reported as
        # such, and only an intact call with a bad MAC means a wrong token.
        message = _call_string(method, node, key, at, nonce, request, fields)
        try:
            VerifyKey(public).verify(message, signature)
        except (BadSignatureError, ValueError):
            raise Unauthenticated(
                f"call from {node!r} has a bad signature for its key (altered in transit, "
                "or signed for another request)",
                node=node,
            ) from None
        expected = hmac.new(self._token, message, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise Unauthenticated(
                f"node {node!r} presented a wrong join token: {_FIX_TOKEN}", node=node
            )
        self._remember(nonce, now)
        return Caller(node, fingerprint(public), public)

    def _remember(self, nonce: str, now: float) -> None:
        if nonce in self._seen:
            raise Unauthenticated("replayed call: its nonce was seen before", nonce=nonce)
        horizon = 2 * self._max_skew
        if len(self._seen) > 4096:
            self._seen = {n: t for n, t in self._seen.items() if now - t <= horizon}
        self._seen[nonce] = now
