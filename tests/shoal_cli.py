"""Running the real `shoal` CLI as a fresh process, as an operator would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping


def run_shoal(
    env: Mapping[str, str], *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``shoal ARGS`` with ``env``; with ``check``, fail the test on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, f"shoal {' '.join(args)} failed:\n{result.stderr}"
    return result
