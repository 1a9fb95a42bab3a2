"""The generated protobuf modules must be what protoc makes of their .proto today.

Both generated packages (the node-to-node API of ``shoal.cluster`` and the
vendored CRI API of ``shoal.runtime``) are checked the same way: the command
of the Makefile's ``proto`` target runs into a temporary directory and its
outputs are compared byte for byte with the committed ones, so an edit of a
``.proto`` without ``make proto`` fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def regenerate(proto: Path, out: Path) -> None:
    """Run protoc on ``proto`` (relative to the repository) into ``out``, as `make proto` does."""
    # The same working directory and -I as `make proto`: protoc records the
    # .proto's path relative to -I in what it generates.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            str(proto),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"protoc failed on {proto}:\n{done.stderr}"


def assert_in_sync(proto: Path, regenerated: Path, generated: Path, name: str) -> None:
    """Fail, naming the fix, if the committed ``generated/name`` differs from protoc's."""
    fresh = (regenerated / name).read_bytes()
    committed = (ROOT / generated / name).read_bytes()
    assert fresh == committed, (
        f"{generated / name} is not what protoc makes of {proto}: run `make proto`"
    )
