"""RFC 9421 HTTP Message Signatures: ed25519 signatures over HTTP requests.

This module is the protocol mechanics only; the policy (which components
must be covered, clock window, replay, key lookup) lives in the API
(``shoal.api.RequestVerifier``).

Design:

* A request is reduced to :class:`RequestParts`: method, a canonical
  :class:`TargetUri` and header fields grouped by lowercased name, each
  field's lines trimmed, unfolded and joined with ``", "`` (RFC 9421 §2.1).
* The target URI is canonicalised the RFC 3986 way (lowercase scheme and
  host, default port dropped, empty path becomes ``/``), so the URL a client
  signed and the URL the server rebuilds from ``Host`` and the raw path agree.
* The signature base (§2.5) is built from an http-sfv ``InnerList``: the
  signer builds one from :class:`SignatureParams`, the verifier re-serialises
  the one it parsed from ``Signature-Input``, so both sides print
  ``@signature-params`` with the same code.
* Covered components are bare names: the derived components ``@method``,
  ``@target-uri``, ``@authority``, ``@scheme``, ``@path``, ``@query`` and
  header fields. Component parameters (``sf``, ``key``, ``bs``, ``req``) are
  refused rather than half-supported.
* Failures raise :class:`SignatureError` carrying a ``reason`` code; the
  verifier translates it to ``Unauthenticated`` at the boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList, Item
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "ALGORITHM",
    "DERIVED_COMPONENTS",
    "HeadersLike",
    "ParsedSignature",
    "RequestParts",
    "SignatureError",
    "SignatureHeaders",
    "SignatureParams",
    "TargetUri",
    "parse_dictionary",
    "parse_signatures",
    "sign_request",
    "signature_base",
    "verify_signature",
]

ALGORITHM = "ed25519"
"""The only signature algorithm Shoal speaks (RFC 9421 §3.3.6)."""

MALFORMED = "malformed_signature"
BAD_SIGNATURE = "bad_signature"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_OBS_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")
_FIELD_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")

HeadersLike = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
"""A mapping (``httpx.Headers``, Starlette ``Headers``) or raw ``(name, value)`` pairs."""


class SignatureError(ValueError):
    """A signature, its headers or the message it covers is not acceptable.

    Attributes:
        reason: ``malformed_signature``, ``bad_signature`` or ``digest_mismatch``.
        message: What was wrong, in words a person can act on.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TargetUri:
    """An absolute request target, canonicalised for signing (RFC 9421 §2.2.2)."""

    scheme: str
    authority: str
    path: str
    query: str | None

    @classmethod
    def parse(cls, uri: str) -> TargetUri:
        """Split and canonicalise ``uri``; userinfo and fragment are dropped.

        Raises:
            SignatureError: the URI is not absolute or its port is not a number.
        """
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as exc:
            raise SignatureError(MALFORMED, f"target URI {uri!r} is not valid: {exc}") from exc
        scheme, host = parts.scheme.lower(), parts.hostname
        if not scheme or not host:
            raise SignatureError(
                MALFORMED, f"target URI {uri!r} must be absolute, like https://host:port/path"
            )
        if ":" in host:  # an IPv6 literal keeps its brackets in the authority
            host = f"[{host}]"
        default = _DEFAULT_PORTS.get(scheme)
        authority = host if port is None or port == default else f"{host}:{port}"
        has_query = "?" in uri.split("#", 1)[0]
        return cls(scheme, authority, parts.path or "/", parts.query if has_query else None)

    def __str__(self) -> str:
        query = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}://{self.authority}{self.path}{query}"


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _normalise_field_value(value: str) -> str:
    # RFC 9421 §2.1: unfold obsolete line folding, then trim surrounding whitespace.
    # A bare CR or LF is not a fold; it stays and the signature base rejects it.
    return _OBS_FOLD.sub(" ", value).strip(" \t")


@dataclass(frozen=True)
class RequestParts:
    """The parts of an HTTP request that a signature can cover."""

    method: str
    target: TargetUri
    fields: Mapping[str, str]
    """Header fields by lowercased name, multiple lines combined with ``", "``."""
    body: bytes = b""

    @classmethod
    def build(
        cls, method: str, target_uri: str, headers: HeadersLike, body: bytes = b""
    ) -> RequestParts:
        """Reduce a request to its signable parts.

        Args:
            method: The request method, exactly as sent (``POST``).
            target_uri: The full target URI, e.g. ``https://host:8443/v1/x?y=1``.
            headers: Header fields; repeated names are combined in order.
            body: The request content, as sent.

        Raises:
            SignatureError: the target URI is not absolute.
        """
        pairs: Iterable[tuple[str | bytes, str | bytes]] = (
            headers.items() if isinstance(headers, Mapping) else headers
        )
        lines: dict[str, list[str]] = {}
        for name, value in pairs:
            lines.setdefault(_text(name).lower(), []).append(_normalise_field_value(_text(value)))
        fields = {name: ", ".join(values) for name, values in lines.items()}
        return cls(method, TargetUri.parse(target_uri), fields, body)

    def component_value(self, name: str) -> str:
        """Return the value of one covered component (RFC 9421 §2.1, §2.2).

        Raises:
            SignatureError: the component is unknown or the header is absent.
        """
        if name.startswith("@"):
            derive = _DERIVED.get(name)
            if derive is None:
                supported = ", ".join(_DERIVED)
                raise SignatureError(
                    MALFORMED, f"derived component {name!r} is not supported; use {supported}"
                )
            return derive(self)
        value = self.fields.get(name)
        if value is None:
            raise SignatureError(
                MALFORMED,
                f"the signature covers header {name!r}, but the request has no such header",
            )
        return value


_DERIVED: dict[str, Callable[[RequestParts], str]] = {
    "@method": lambda request: request.method,
    "@target-uri": lambda request: str(request.target),
    "@authority": lambda request: request.target.authority,
    "@scheme": lambda request: request.target.scheme,
    "@path": lambda request: request.target.path,
    "@query": lambda request: f"?{request.target.query or ''}",
}
DERIVED_COMPONENTS = frozenset(_DERIVED)
"""Derived components this implementation can cover (RFC 9421 §2.2)."""


@dataclass(frozen=True)
class SignatureParams:
    """Signature metadata parameters (RFC 9421 §2.3), serialised in field order."""

    created: int
    keyid: str
    alg: str | None = ALGORITHM
    nonce: str | None = None
    expires: int | None = None
    tag: str | None = None

    def inner_list(self, components: Sequence[str]) -> InnerList:
        """Return the ``@signature-params`` inner list covering ``components``."""
        inner = InnerList([Item(_check_component_name(name)) for name in components])
        for key in ("created", "expires", "keyid", "alg", "nonce", "tag"):
            value = getattr(self, key)
            if value is not None:
                inner.params[key] = value
        return inner


@dataclass(frozen=True)
class SignatureHeaders:
    """The two header values a signer adds to a request."""

    signature_input: str
    signature: str


@dataclass(frozen=True)
class ParsedSignature:
    """One labelled signature read from ``Signature-Input`` and ``Signature``."""

    label: str
    components: tuple[str, ...]
    params: Mapping[str, Any]
    """Signature parameters as parsed (types checked for the well-known ones)."""
    signature: bytes
    inner: InnerList = field(repr=False, compare=False)
    """The parsed inner list, re-serialised verbatim as ``@signature-params``."""


def _check_component_name(name: str) -> str:
    bare = name[1:] if name.startswith("@") else name
    if not bare or not set(bare) <= _FIELD_NAME_CHARS:
        raise SignatureError(
            MALFORMED, f"component {name!r} must be a lowercase header name or a derived component"
        )
    return name


def _base_from_inner_list(request: RequestParts, inner: InnerList) -> bytes:
    lines: list[str] = []
    seen: set[str] = set()
    for item in inner:
        if type(item.value) is not str or item.params:
            raise SignatureError(
                MALFORMED, f"covered component {item} must be a plain string without parameters"
            )
        name = _check_component_name(item.value)
        if name in seen:
            raise SignatureError(MALFORMED, f"component {name!r} is covered twice")
        seen.add(name)
        value = request.component_value(name)
        if any(char in value for char in "\r\n\0"):
            raise SignatureError(MALFORMED, f"component {name!r} contains a line break")
        lines.append(f"{item}: {value}")
    lines.append(f'"@signature-params": {inner}')
    base = "\n".join(lines)
    if not base.isascii():
        raise SignatureError(MALFORMED, "the signature base contains non-ASCII characters")
    return base.encode("ascii")


def signature_base(
    request: RequestParts, components: Sequence[str], params: SignatureParams
) -> bytes:
    """Return the RFC 9421 §2.5 signature base for ``components`` of ``request``.

    Raises:
        SignatureError: a component is unsupported, absent or duplicated.
    """
    return _base_from_inner_list(request, params.inner_list(components))


def sign_request(
    request: RequestParts,
    components: Sequence[str],
    params: SignatureParams,
    signing_key: SigningKey,
    *,
    label: str = "sig1",
) -> SignatureHeaders:
    """Sign ``components`` of ``request`` with ed25519 (deterministic, RFC 8032).

    Args:
        request: The request to sign.
        components: Covered component names, in order.
        params: Metadata; ``alg=None`` omits the ``alg`` parameter.
        signing_key: The private key.
        label: The dictionary key of both headers.

    Returns:
        The ``Signature-Input`` and ``Signature`` header values.

    Raises:
        SignatureError: a component is unsupported or absent, or the label is invalid.
    """
    inner = params.inner_list(components)
    signature = signing_key.sign(_base_from_inner_list(request, inner)).signature
    try:
        return SignatureHeaders(
            signature_input=str(Dictionary({label: inner})),
            signature=str(Dictionary({label: Item(signature)})),
        )
    except ValueError as exc:
        raise SignatureError(
            MALFORMED, f"cannot serialise signature {label!r} (check the label and key id): {exc}"
        ) from exc


def parse_dictionary(header: str, value: str) -> Dictionary:
    """Parse a structured-field dictionary header (RFC 8941).

    Raises:
        SignatureError: ``malformed_signature``, naming ``header``.
    """
    parsed = Dictionary()
    try:
        parsed.parse(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise SignatureError(
            MALFORMED, f"the {header} header is not a valid structured-field dictionary"
        ) from exc
    return parsed


_PARAM_TYPES = {"created": int, "expires": int, "keyid": str, "alg": str, "nonce": str, "tag": str}


def parse_signatures(signature_input: str, signature: str) -> list[ParsedSignature]:
    """Parse the two signature headers into one :class:`ParsedSignature` per label.

    Raises:
        SignatureError: either header is malformed, or their labels differ.
    """
    inputs = parse_dictionary("Signature-Input", signature_input)
    signatures = parse_dictionary("Signature", signature)
    if set(inputs) != set(signatures):
        raise SignatureError(
            MALFORMED,
            f"Signature-Input labels {sorted(inputs)} do not match Signature labels "
            f"{sorted(signatures)}",
        )
    parsed: list[ParsedSignature] = []
    for label, inner in inputs.items():
        sig = signatures[label]
        if not isinstance(inner, InnerList):
            raise SignatureError(MALFORMED, f"Signature-Input {label!r} must be an inner list")
        if not isinstance(sig, Item) or type(sig.value) is not bytes:
            raise SignatureError(MALFORMED, f"Signature {label!r} must be a byte sequence (:...:)")
        for key, expected in _PARAM_TYPES.items():
            if key in inner.params and type(inner.params[key]) is not expected:
                kind = "an integer" if expected is int else "a quoted string"
                raise SignatureError(MALFORMED, f"signature parameter {key!r} must be {kind}")
        names = tuple(str(item.value) for item in inner)
        parsed.append(ParsedSignature(label, names, dict(inner.params), sig.value, inner))
    return parsed


def verify_signature(
    request: RequestParts, signature: ParsedSignature, verify_key: VerifyKey
) -> None:
    """Rebuild the signature base from ``request`` and check it with ``verify_key``.

    Raises:
        SignatureError: ``malformed_signature`` when the base cannot be built,
            ``bad_signature`` when the ed25519 check fails.
    """
    base = _base_from_inner_list(request, signature.inner)
    try:
        verify_key.verify(base, signature.signature)
    except (BadSignatureError, ValueError) as exc:
        raise SignatureError(
            BAD_SIGNATURE,
            f"signature {signature.label!r} does not match the request: it was altered, or "
            "signed with a different key than the one authorized for its key id (two keys "
            "with one id, e.g. the default user@host on two machines: give one its own with "
            "`shoal keys init --key-id NAME`)",
        ) from exc
