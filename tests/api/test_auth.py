"""The server's signature policy (RequestVerifier), roles, and the signing httpx auth."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from shoal.api._auth import ReplayCache, RequestVerifier, target_uri_from_scope
from shoal.client import CLIENT_COMPONENTS, SignedAuth
from shoal.client._digest import content_digest
from shoal.client._httpsig import RequestParts, SignatureParams, sign_request
from shoal.client._keys import AuthorizedKeys, KeyPair
from shoal.interfaces import Caller, Forbidden, Role, Unauthenticated, Unavailable

T0 = 1_750_000_000
URL = "http://198.18.0.10:8080/v1/workloads?namespace=default"
BODY = b'{"name": "web"}'


def signed_headers(
    keypair: KeyPair,
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    created: int = T0,
    nonce: str | None = "nonce-1",
    components: tuple[str, ...] = CLIENT_COMPONENTS,
    alg: str | None = "ed25519",
) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Content-Digest": content_digest(body)}
    parts = RequestParts.build(method, url, headers, body)
    params = SignatureParams(created=created, keyid=keypair.key_id, nonce=nonce, alg=alg)
    signed = sign_request(parts, components, params, keypair.signing_key)
    return headers | {"Signature-Input": signed.signature_input, "Signature": signed.signature}


def reject_reason(
    verifier: RequestVerifier,
    headers: dict[str, str],
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
) -> tuple[str, str]:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(method, url, headers, body)
    assert caught.value.http_status == 401
    return caught.value.details["reason"], caught.value.message


def at(authorized: AuthorizedKeys, now: float = T0) -> RequestVerifier:
    return RequestVerifier(authorized.lookup, clock=lambda: now)


def test_accepts_a_signed_request(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    principal = at(authorized).verify("POST", URL, signed_headers(alice), BODY)
    assert principal == Caller("alice@laptop", Role.OPERATOR)


def test_accepts_authority_path_query_in_place_of_target_uri(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    components = ("@method", "@authority", "@path", "@query", "content-digest")
    headers = signed_headers(alice, components=components)
    assert at(authorized).verify("POST", URL, headers, BODY).key_id == alice.key_id


def test_client_and_server_urls_agree_after_canonicalisation(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    headers = signed_headers(alice, url="HTTP://Example.COM:80/v1/x?y=1")
    principal = at(authorized).verify("POST", "http://example.com/v1/x?y=1", headers, BODY)
    assert principal.key_id == alice.key_id


def test_missing_signature(authorized: AuthorizedKeys) -> None:
    reason, message = reject_reason(at(authorized), {"Content-Digest": content_digest(BODY)})
    assert reason == "missing_signature"
    assert "shoal keys init" in message


def test_malformed_signature(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    headers = signed_headers(alice) | {"Signature": "sig1=not-a-byte-sequence"}
    assert reject_reason(at(authorized), headers)[0] == "malformed_signature"


def test_nonce_is_required(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    reason, message = reject_reason(at(authorized), signed_headers(alice, nonce=None))
    assert reason == "malformed_signature"
    assert "nonce" in message


def test_unknown_key(mallory: KeyPair, authorized: AuthorizedKeys) -> None:
    reason, message = reject_reason(at(authorized), signed_headers(mallory))
    assert reason == "unknown_key"
    assert "mallory@elsewhere" in message and "authorized_keys" in message


def test_bad_signature_when_the_request_was_altered(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    headers = signed_headers(alice)
    assert reject_reason(at(authorized), headers, method="DELETE")[0] == "bad_signature"
    other_url = URL.replace("default", "prod")
    assert reject_reason(at(authorized), headers, url=other_url)[0] == "bad_signature"


def test_bad_signature_from_a_key_claiming_another_key_id(
    mallory: KeyPair, alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    impostor = KeyPair(alice.key_id, mallory.signing_key)
    assert reject_reason(at(authorized), signed_headers(impostor))[0] == "bad_signature"


def test_algorithms_other_than_ed25519_are_refused(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    reason, message = reject_reason(at(authorized), signed_headers(alice, alg="hmac-sha256"))
    assert reason == "bad_signature"
    assert "ed25519" in message
    # Without alg the key decides, and Shoal keys are ed25519.
    assert at(authorized).verify("POST", URL, signed_headers(alice, alg=None), BODY)


def test_digest_mismatch_when_the_body_was_altered(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    reason, message = reject_reason(at(authorized), signed_headers(alice), body=b'{"name": "evil"}')
    assert reason == "digest_mismatch"
    assert "body changed" in message


def test_digest_mismatch_when_content_digest_is_missing(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    headers = signed_headers(alice)
    del headers["Content-Digest"]
    reason, message = reject_reason(at(authorized), headers)
    assert reason == "digest_mismatch"
    assert "no Content-Digest" in message


def test_stale_when_created_too_long_ago(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    headers = signed_headers(alice, created=T0 - 312)
    reason, message = reject_reason(at(authorized), headers)
    assert reason == "stale"
    assert message == (
        "request created 312 s ago; the server accepts ±60 s: check the client's clock"
    )


def test_stale_when_created_in_the_future(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    reason, message = reject_reason(at(authorized), signed_headers(alice, created=T0 + 75))
    assert reason == "stale"
    assert "75 s in the future" in message


def test_the_window_edge_is_inclusive(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    assert at(authorized, T0 + 60).verify("POST", URL, signed_headers(alice), BODY)
    assert reject_reason(at(authorized, T0 + 61), signed_headers(alice))[0] == "stale"


def test_replayed_nonce_is_refused(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    verifier = at(authorized)
    headers = signed_headers(alice)
    verifier.verify("POST", URL, headers, BODY)
    reason, message = reject_reason(verifier, headers)
    assert reason == "replayed"
    assert "nonce-1" in message


def test_nonce_is_remembered_only_after_the_signature_verified(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    verifier = at(authorized)
    headers = signed_headers(alice)
    assert reject_reason(verifier, headers, body=b"tampered")[0] == "digest_mismatch"
    assert verifier.verify("POST", URL, headers, BODY).key_id == alice.key_id


def test_replay_cache_forgets_expired_nonces(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    now = [float(T0)]
    cache = ReplayCache()
    verifier = RequestVerifier(authorized.lookup, clock=lambda: now[0], replay_cache=cache)
    verifier.verify("POST", URL, signed_headers(alice, nonce="a"), BODY)
    verifier.verify("POST", URL, signed_headers(alice, nonce="b", created=T0 + 30), BODY)
    assert len(cache) == 2
    now[0] = T0 + 61  # "a" (created T0) can no longer be fresh, so it is forgotten
    verifier.verify("POST", URL, signed_headers(alice, nonce="c", created=T0 + 61), BODY)
    assert len(cache) == 2
    # The same nonce may come back in a later, fresh request once forgotten.
    verifier.verify("POST", URL, signed_headers(alice, nonce="a", created=T0 + 61), BODY)


def test_replay_cache_is_bounded_and_fails_closed() -> None:
    cache = ReplayCache(max_entries=2)
    assert cache.remember(("k", "1"), T0 + 60, T0)
    assert cache.remember(("k", "2"), T0 + 60, T0)
    with pytest.raises(Unavailable):
        cache.remember(("k", "3"), T0 + 60, T0)
    assert cache.remember(("k", "3"), T0 + 120, T0 + 61)  # the others expired


@pytest.mark.parametrize(
    "components",
    [
        ("@method", "@target-uri"),
        ("@target-uri", "content-digest"),
        ("@method", "@authority", "@path", "content-digest"),
    ],
)
def test_insufficient_coverage(
    alice: KeyPair, authorized: AuthorizedKeys, components: tuple[str, ...]
) -> None:
    reason, message = reject_reason(at(authorized), signed_headers(alice, components=components))
    assert reason == "insufficient_coverage"
    assert '"@method" "@target-uri" "content-digest"' in message


def test_role_ordering() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.ADMIN.allows(Role.VIEWER)
    assert Role.OPERATOR.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.OPERATOR.allows(Role.ADMIN)
    assert not Role.VIEWER.allows(Role.OPERATOR)
    assert Role.VIEWER.allows(Role.VIEWER)


def test_principal_require_raises_forbidden() -> None:
    viewer = Caller("bob@desk", Role.VIEWER)
    viewer.require(Role.VIEWER)
    with pytest.raises(Forbidden) as caught:
        viewer.require(Role.OPERATOR)
    assert caught.value.details == {"key_id": "bob@desk", "role": "viewer", "required": "operator"}


def test_target_uri_from_asgi_scope() -> None:
    scope = {
        "type": "http",
        "scheme": "http",
        "path": "/v1/a b",
        "raw_path": b"/v1/a%20b",
        "query_string": b"x=1",
        "headers": [(b"host", b"198.18.0.10:8080")],
        "server": ("198.18.0.10", 8080),
    }
    assert target_uri_from_scope(scope) == "http://198.18.0.10:8080/v1/a%20b?x=1"
    bare = {"scheme": "https", "path": "/", "headers": [], "server": ("h", 443)}
    assert target_uri_from_scope(bare) == "https://h:443/"
    six = {"scheme": "http", "path": "/", "headers": [], "server": ("::1", 7070)}
    assert target_uri_from_scope(six) == "http://[::1]:7070/"
    for host in (b"[::1]:7070", b"shoal.example", b"my_host.local:1"):
        named = dict(scope, headers=[(b"host", host)])
        assert target_uri_from_scope(named) == f"http://{host.decode()}/v1/a%20b?x=1"


@pytest.mark.parametrize(
    ("host", "raw_path", "query"),
    [
        (b"a/v1/other#", b"/v1/x", b""),
        (b"a?x=1#", b"/v1/x", b""),
        (b"user@a", b"/v1/x", b""),
        (b"a:80:81", b"/v1/x", b""),
        (b"a b", b"/v1/x", b""),
        (b"a", b"/v1/x#frag", b""),
        (b"a", b"/v1/x", b"y=1#z"),
        (b"a", b"v1/x", b""),
    ],
)
def test_a_target_that_could_name_another_path_is_refused(
    host: bytes, raw_path: bytes, query: bytes
) -> None:
    scope = {
        "scheme": "http",
        "raw_path": raw_path,
        "query_string": query,
        "headers": [(b"host", host)],
    }
    with pytest.raises(Unauthenticated) as caught:
        target_uri_from_scope(scope)
    assert caught.value.details["reason"] == "malformed_request"


def _echo_principal(verifier: RequestVerifier) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        try:
            principal = verifier.verify(
                request.method, str(request.url), request.headers, request.content
            )
        except Unauthenticated as exc:
            return httpx.Response(401, json=exc.to_body().model_dump())
        return httpx.Response(200, json={"key_id": principal.key_id, "role": principal.role})

    return httpx.MockTransport(handle)


def test_signed_auth_requests_are_accepted(alice: KeyPair, authorized: AuthorizedKeys) -> None:
    nonces = iter(["n1", "n2"])
    auth = SignedAuth(alice, clock=lambda: T0 + 0.9, nonce=lambda: next(nonces))
    with httpx.Client(transport=_echo_principal(at(authorized)), auth=auth) as client:
        created = client.post(URL, content=BODY)
        listed = client.get("http://198.18.0.10:8080/v1/workloads")
    assert created.json() == {"key_id": alice.key_id, "role": "operator"}
    assert listed.status_code == 200
    assert created.request.headers["Content-Digest"] == content_digest(BODY)
    assert created.request.headers["Signature-Input"] == (
        'sig1=("@method" "@target-uri" "content-digest");created=1750000000'
        ';keyid="alice@laptop";alg="ed25519";nonce="n1"'
    )


def test_signed_auth_works_with_the_async_client(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    async def main() -> httpx.Response:
        auth = SignedAuth(alice, clock=lambda: T0)
        transport = _echo_principal(at(authorized))
        async with httpx.AsyncClient(transport=transport, auth=auth) as client:
            return await client.put(URL, json={"replicas": 2})

    response = anyio.run(main)
    assert response.status_code == 200, response.text


def test_signed_auth_requests_replayed_are_refused(
    alice: KeyPair, authorized: AuthorizedKeys
) -> None:
    auth = SignedAuth(alice, clock=lambda: T0, nonce=lambda: "same-nonce")
    with httpx.Client(transport=_echo_principal(at(authorized)), auth=auth) as client:
        assert client.post(URL, content=BODY).status_code == 200
        second = client.post(URL, content=BODY)
    assert second.status_code == 401
    assert json.loads(second.content)["details"] == {"reason": "replayed", "key_id": alice.key_id}
