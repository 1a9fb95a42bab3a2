"""The generated CRI v1 modules are what protoc makes of the vendored cri_api.proto today."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protoc import assert_in_sync, regenerate

PROTO = Path("packages/runtime/proto/cri_api.proto")
GENERATED = Path("packages/runtime/src/shoal/runtime/cri/_pb")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    regenerate(PROTO, out)
    return out


@pytest.mark.parametrize("name", ["cri_api_pb2.py", "cri_api_pb2.pyi"])
def test_generated_module_is_in_sync_with_the_proto(regenerated: Path, name: str) -> None:
    assert_in_sync(PROTO, regenerated, GENERATED, name)
