"""RFC 9421 mechanics: the RFC's own ed25519 example, canonical URIs, Content-Digest, interop."""

from __future__ import annotations

import base64
import datetime
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from nacl.signing import SigningKey, VerifyKey

from shoal.api._auth import RequestVerifier
from shoal.client import CLIENT_COMPONENTS
from shoal.client._digest import content_digest
from shoal.client._httpsig import (
    RequestParts,
    SignatureError,
    SignatureParams,
    TargetUri,
    parse_signatures,
    sign_request,
    signature_base,
    verify_signature,
)
from shoal.client._keys import AuthorizedKeys, KeyPair
from shoal.interfaces import Role

# --- RFC 9421 Appendix B, copied from the RFC text (B.1.4 key, B.2 request, B.2.6 case) ---
# B.1.4 test-key-ed25519, PKCS#8 / SPKI DER in base64; the raw keys are the last 32 bytes.
RFC_PRIVATE_PKCS8 = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
RFC_PUBLIC_SPKI = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
RFC_BODY = b'{"hello": "world"}'
RFC_HEADERS = [
    ("Host", "example.com"),
    ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("Content-Type", "application/json"),
    (
        "Content-Digest",
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    ),
    ("Content-Length", "18"),
]
B26_COMPONENTS = ("date", "@method", "@path", "@authority", "content-type", "content-length")
B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1"
    "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)


def rfc_request() -> RequestParts:
    return RequestParts.build(
        "POST", "https://example.com/foo?param=Value&Pet=dog", RFC_HEADERS, RFC_BODY
    )


def rfc_keys() -> tuple[SigningKey, VerifyKey]:
    private = SigningKey(base64.b64decode(RFC_PRIVATE_PKCS8)[-32:])
    public = VerifyKey(base64.b64decode(RFC_PUBLIC_SPKI)[-32:])
    return private, public


B26_PARAMS = SignatureParams(created=1618884473, keyid="test-key-ed25519", alg=None)


def test_rfc9421_b26_signature_base_is_byte_exact() -> None:
    assert signature_base(rfc_request(), B26_COMPONENTS, B26_PARAMS) == B26_BASE.encode()


def test_rfc9421_b26_signer_reproduces_the_rfc_signature() -> None:
    private, public = rfc_keys()
    assert private.verify_key == public  # the B.1.4 private and public halves belong together
    headers = sign_request(rfc_request(), B26_COMPONENTS, B26_PARAMS, private, label="sig-b26")
    assert headers.signature_input == B26_SIGNATURE_INPUT
    assert headers.signature == B26_SIGNATURE


def test_rfc9421_b26_rfc_signature_verifies() -> None:
    _, public = rfc_keys()
    [parsed] = parse_signatures(B26_SIGNATURE_INPUT, B26_SIGNATURE)
    assert parsed.label == "sig-b26"
    assert parsed.components == B26_COMPONENTS
    assert parsed.params == {"created": 1618884473, "keyid": "test-key-ed25519"}
    verify_signature(rfc_request(), parsed, public)


def test_rfc9421_b26_signature_fails_on_a_changed_request() -> None:
    _, public = rfc_keys()
    [parsed] = parse_signatures(B26_SIGNATURE_INPUT, B26_SIGNATURE)
    moved = RequestParts.build("POST", "https://example.com/bar", RFC_HEADERS, RFC_BODY)
    with pytest.raises(SignatureError) as caught:
        verify_signature(moved, parsed, public)
    assert caught.value.reason == "bad_signature"
    assert "give one its own with `shoal keys init --key-id NAME`" in caught.value.message


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        ("HTTP://Example.COM:80/a?b=C", "http://example.com/a?b=C"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("http://user:pw@198.18.0.1/x#frag", "http://198.18.0.1/x"),
        ("http://h/x?", "http://h/x?"),
        ("http://h/a%2Fb?q=%20", "http://h/a%2Fb?q=%20"),
    ],
)
def test_target_uri_is_canonicalised(uri: str, canonical: str) -> None:
    assert str(TargetUri.parse(uri)) == canonical


@pytest.mark.parametrize("uri", ["/relative/path", "http:///nohost", "http://h:port/"])
def test_target_uri_must_be_absolute_and_valid(uri: str) -> None:
    with pytest.raises(SignatureError, match="target URI"):
        TargetUri.parse(uri)


def test_derived_components() -> None:
    request = RequestParts.build("GET", "HTTPS://Example.com:443/p/q?x=1&y=2", {})
    values = {
        name: request.component_value(name)
        for name in ("@method", "@target-uri", "@authority", "@scheme", "@path", "@query")
    }
    assert values == {
        "@method": "GET",
        "@target-uri": "https://example.com/p/q?x=1&y=2",
        "@authority": "example.com",
        "@scheme": "https",
        "@path": "/p/q",
        "@query": "?x=1&y=2",
    }
    assert RequestParts.build("GET", "http://h", {}).component_value("@query") == "?"


def test_header_fields_are_lowercased_trimmed_and_combined() -> None:
    request = RequestParts.build(
        "GET",
        "http://h/",
        [
            ("X-Multi", "  one  "),
            (b"x-multi", b"two\r\n  folded"),
            ("Cache-Control", "\tmax-age=60 "),
        ],
    )
    assert request.component_value("x-multi") == "one, two folded"
    assert request.component_value("cache-control") == "max-age=60"


@pytest.mark.parametrize(
    ("components", "message"),
    [
        (("x-absent",), "no such header"),
        (("@query-param",), "not supported"),
        (("@method", "@method"), "covered twice"),
        (("Date",), "lowercase"),
    ],
)
def test_signature_base_rejects_bad_components(components: tuple[str, ...], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        signature_base(rfc_request(), components, B26_PARAMS)


@pytest.mark.parametrize(
    ("signature_input", "signature", "message"),
    [
        ('sig1=("@method"', "sig1=:AAAA:", "not a valid structured-field"),
        ('sig1=("@method");created=1', "sig2=:AAAA:", "do not match"),
        ('sig1="@method"', "sig1=:AAAA:", "inner list"),
        ('sig1=("@method")', 'sig1="text"', "byte sequence"),
        ('sig1=("@method");created="now"', "sig1=:AAAA:", "'created' must be an integer"),
        ('sig1=("@method");keyid=token', "sig1=:AAAA:", "'keyid' must be a quoted string"),
    ],
)
def test_parse_signatures_rejects_malformed_headers(
    signature_input: str, signature: str, message: str
) -> None:
    with pytest.raises(SignatureError, match=message) as caught:
        parse_signatures(signature_input, signature)
    assert caught.value.reason == "malformed_signature"


def test_parsed_component_with_parameters_is_refused() -> None:
    [parsed] = parse_signatures('sig1=("content-digest";key="sha-256")', "sig1=:AAAA:")
    with pytest.raises(SignatureError, match="without parameters"):
        verify_signature(rfc_request(), parsed, rfc_keys()[1])


# --- Interoperability with http-message-signatures, an independent implementation ---

INTEROP_URL = "http://198.18.0.10:8443/v1/workloads?namespace=default"
INTEROP_BODY = b'{"name": "web", "replicas": 3}'


def _prepared(body: bytes) -> requests.PreparedRequest:
    prepared = requests.Request(
        "POST", INTEROP_URL, data=body, headers={"Content-Type": "application/json"}
    ).prepare()
    prepared.headers["Content-Digest"] = content_digest(body)
    return prepared


def test_request_signed_by_http_message_signatures_is_accepted(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    now = int(time.time())
    prepared = _prepared(INTEROP_BODY)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={},
            private_keys={
                alice.key_id: Ed25519PrivateKey.from_private_bytes(bytes(alice.signing_key))
            },
        ),
    )
    signer.sign(
        prepared,
        key_id=alice.key_id,
        created=datetime.datetime.fromtimestamp(now, tz=datetime.UTC),
        nonce="interop-nonce-1",
        label="sig1",
        covered_component_ids=CLIENT_COMPONENTS,
        use_existing_digest=True,
    )
    assert 'alg="ed25519"' in prepared.headers["Signature-Input"]
    verifier = RequestVerifier(authorized.lookup, clock=lambda: now)
    principal = verifier.verify("POST", INTEROP_URL, prepared.headers, INTEROP_BODY)
    assert (principal.key_id, principal.role) == (alice.key_id, Role.OPERATOR)


def test_request_signed_by_shoal_verifies_with_http_message_signatures(alice: KeyPair) -> None:
    prepared = _prepared(INTEROP_BODY)
    parts = RequestParts.build("POST", INTEROP_URL, prepared.headers, INTEROP_BODY)
    params = SignatureParams(created=int(time.time()), keyid=alice.key_id, nonce="n-0001")
    signed = sign_request(parts, CLIENT_COMPONENTS, params, alice.signing_key)
    prepared.headers["Signature-Input"] = signed.signature_input
    prepared.headers["Signature"] = signed.signature
    public = Ed25519PublicKey.from_public_bytes(bytes(alice.verify_key))
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={alice.key_id: public}, private_keys={}),
    )
    [result] = verifier.verify(prepared, require_components=CLIENT_COMPONENTS, body=INTEROP_BODY)
    assert result.parameters["keyid"] == alice.key_id
    assert result.nonce == "n-0001"
    assert result.covered_components['"@target-uri"'] == INTEROP_URL

    # And the independent verifier notices a body that is not the one signed.
    with pytest.raises(InvalidSignature):
        verifier.verify(prepared, require_components=CLIENT_COMPONENTS, body=b"{}")
