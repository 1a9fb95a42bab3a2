"""The node-to-node API's generated modules are what protoc makes of shoal_node.proto today."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protoc import assert_in_sync, regenerate

PROTO = Path("packages/cluster/proto/shoal_node.proto")
GENERATED = Path("packages/cluster/src/shoal/cluster/grpc/_pb")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    regenerate(PROTO, out)
    return out


@pytest.mark.parametrize("name", ["shoal_node_pb2.py", "shoal_node_pb2.pyi"])
def test_generated_module_is_in_sync_with_the_proto(regenerated: Path, name: str) -> None:
    assert_in_sync(PROTO, regenerated, GENERATED, name)
