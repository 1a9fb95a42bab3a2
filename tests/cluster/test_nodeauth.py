"""Node-to-node call authentication: signing, verifying, and the node's identity file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from shoal.cluster import CallVerifier, NodeIdentity, fingerprint
from shoal.cluster.grpc._nodeauth import sign_call
from shoal.interfaces import InvalidInput, Unauthenticated

TOKEN = "the-join-token"
METHOD = "/shoal.cluster.v1.NodeState/ListAssignments"
REQUEST = b"\n\x0b/nodes/w1"
NOW = 1_800_000_000.0


def verifier(now: float = NOW, token: str = TOKEN) -> CallVerifier:
    return CallVerifier(token, max_skew=60.0, now=lambda: now)


def identity(name: str = "w1") -> NodeIdentity:
    return NodeIdentity(name, SigningKey.generate())


def signed(ident: NodeIdentity, *, token: str = TOKEN, at: float = NOW) -> list[tuple[str, str]]:
    return sign_call(ident, token, METHOD, REQUEST, now=at)


def test_a_signed_call_verifies_as_its_node() -> None:
    ident = identity()
    caller = verifier().verify(signed(ident), METHOD, REQUEST)
    assert (caller.name, caller.node_id, caller.public_key) == (
        "w1",
        ident.node_id,
        ident.public_key,
    )
    assert ident.node_id == fingerprint(ident.public_key)
    assert len(ident.node_id) == 16 and int(ident.node_id, 16) >= 0


def test_metadata_values_may_arrive_as_bytes_and_are_ignored_then() -> None:
    metadata: list[tuple[str, str | bytes]] = [*signed(identity()), ("other-bin", b"\x00")]
    assert verifier().verify(metadata, METHOD, REQUEST).name == "w1"


def test_a_tampered_request_is_refused() -> None:
    metadata = signed(identity())
    with pytest.raises(Unauthenticated):
        verifier().verify(metadata, METHOD, REQUEST + b"\x10\x01")


def test_a_call_signed_for_another_method_is_refused() -> None:
    metadata = signed(identity())
    with pytest.raises(Unauthenticated):
        verifier().verify(metadata, "/shoal.cluster.v1.NodeState/ReportInstance", REQUEST)


def test_a_wrong_join_token_is_refused_with_the_fix() -> None:
    metadata = signed(identity(), token="another-token")
    with pytest.raises(Unauthenticated, match="wrong join token: start the node with"):
        verifier().verify(metadata, METHOD, REQUEST)


def test_a_signature_by_another_key_is_refused() -> None:
    # Whoever holds the token still cannot speak for a key it does not hold.
    victim, thief = identity(), identity()
    metadata = dict(signed(victim))
    metadata["shoal-signature"] = dict(signed(thief))["shoal-signature"]
    with pytest.raises(Unauthenticated, match="bad signature for its key"):
        verifier().verify(list(metadata.items()), METHOD, REQUEST)


@pytest.mark.parametrize("offset", [-61.0, 61.0])
def test_a_call_outside_the_clock_skew_is_refused(offset: float) -> None:
    metadata = signed(identity(), at=NOW + offset)
    with pytest.raises(Unauthenticated, match=r"allowed ±60s\): synchronise the clocks"):
        verifier().verify(metadata, METHOD, REQUEST)


def test_a_call_inside_the_clock_skew_is_accepted() -> None:
    assert verifier().verify(signed(identity(), at=NOW - 59), METHOD, REQUEST).name == "w1"


def test_a_replayed_call_is_refused() -> None:
    check = verifier()
    metadata = signed(identity())
    check.verify(metadata, METHOD, REQUEST)
    with pytest.raises(Unauthenticated, match="replayed call"):
        check.verify(metadata, METHOD, REQUEST)


def test_missing_metadata_is_named() -> None:
    metadata = [(k, v) for k, v in signed(identity()) if k not in ("shoal-nonce", "shoal-key")]
    with pytest.raises(Unauthenticated, match="missing shoal-key, shoal-nonce"):
        verifier().verify(metadata, METHOD, REQUEST)
    with pytest.raises(Unauthenticated, match="not an authenticated Shoal node call"):
        verifier().verify([], METHOD, REQUEST)


def test_malformed_metadata_is_refused() -> None:
    metadata = dict(signed(identity()))
    metadata["shoal-time"] = "yesterday"
    with pytest.raises(Unauthenticated, match="malformed auth metadata"):
        verifier().verify(list(metadata.items()), METHOD, REQUEST)


def test_an_empty_join_token_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="the join token is empty"):
        CallVerifier("")


def test_the_identity_file_is_created_private_and_keeps_the_node_id(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    first = NodeIdentity.load_or_create("w1", key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    again = NodeIdentity.load_or_create("w1", key_file)
    assert again.node_id == first.node_id
    assert again.public_key == first.public_key
    # A call signed by the reloaded identity verifies as the same node.
    assert verifier().verify(signed(again), METHOD, REQUEST).node_id == first.node_id


def test_a_corrupt_identity_file_says_how_to_recover(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    key_file.write_bytes(b"short")
    with pytest.raises(InvalidInput, match=r"is corrupt .*restore it from a backup, or remove it"):
        NodeIdentity.load_or_create("w1", key_file)


TRACE_A = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
TRACE_B = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_the_trace_context_a_call_carries_is_signed_with_it() -> None:
    ident = identity()
    traced = sign_call(ident, TOKEN, METHOD, REQUEST, now=NOW, trace=TRACE_A)
    assert ("traceparent", TRACE_A["traceparent"]) in traced
    assert verifier().verify(traced, METHOD, REQUEST).name == "w1"
    swapped = [(k, TRACE_B["traceparent"] if k == "traceparent" else v) for k, v in traced]
    added = [*signed(ident), ("traceparent", TRACE_A["traceparent"])]
    baggage = [*sign_call(ident, TOKEN, METHOD, REQUEST, now=NOW + 1, trace=TRACE_A)]
    baggage.append(("baggage", "shoal.origin=forged"))
    for forged in (swapped, added, baggage):
        with pytest.raises(Unauthenticated, match="bad signature"):
            verifier().verify(forged, METHOD, REQUEST)
