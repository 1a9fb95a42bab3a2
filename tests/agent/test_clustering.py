"""The clustered node's addresses: what it advertises to the others."""

from __future__ import annotations

import socket

import pytest

from shoal.agent._clustering import advertised_host, with_port
from shoal.interfaces import InvalidInput


def test_a_specific_address_is_advertised_as_it_is() -> None:
    assert advertised_host("198.18.0.7") == "198.18.0.7"


def test_an_unspecified_bind_advertises_what_the_host_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "worker1")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "198.18.1.5")
    assert advertised_host("0.0.0.0") == "198.18.1.5"


@pytest.mark.parametrize("resolved", ["127.0.1.1", None])
def test_an_unspecified_bind_without_a_reachable_name_asks_for_grpc_addr(
    monkeypatch: pytest.MonkeyPatch, resolved: str | None
) -> None:
    def resolve(name: str) -> str:
        if resolved is None:
            raise socket.gaierror("Name or service not known")
        return resolved

    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    monkeypatch.setattr(socket, "gethostbyname", resolve)
    with pytest.raises(InvalidInput, match=r"--grpc-addr HOST:PORT") as raised:
        advertised_host("0.0.0.0")
    assert "'box' resolves to" in raised.value.message


def test_addresses_get_their_default_port() -> None:
    assert with_port("127.0.0.2", 7946, field="--bind") == "127.0.0.2:7946"
    assert with_port("127.0.0.2:8000", 7946, field="--bind") == "127.0.0.2:8000"
    with pytest.raises(InvalidInput, match="--bind 'host:port' is not HOST"):
        with_port("host:port", 7946, field="--bind")
