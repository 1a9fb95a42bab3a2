"""The generated CRI v1 modules are what protoc makes of the vendored api.proto today.

Runs the command of the Makefile's ``proto`` target into a temporary
directory and compares the outputs byte for byte with the committed ones, so
an edit of the vendored ``cri_api.proto`` without ``make proto`` fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = Path("packages/runtime/proto")
PROTO = PROTO_DIR / "cri_api.proto"
GENERATED = ROOT / "packages/runtime/src/shoal/runtime/cri/_pb"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    # The same command and working directory as `make proto`: protoc records
    # the .proto's path relative to -I in what it generates.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            str(PROTO),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"protoc failed on {PROTO}:\n{done.stderr}"
    return out


@pytest.mark.parametrize("name", ["cri_api_pb2.py", "cri_api_pb2.pyi"])
def test_generated_module_is_in_sync_with_the_proto(regenerated: Path, name: str) -> None:
    fresh = (regenerated / name).read_bytes()
    committed = (GENERATED / name).read_bytes()
    assert fresh == committed, (
        f"{GENERATED.relative_to(ROOT) / name} is not what protoc makes of {PROTO}: "
        "run `make proto`"
    )
