"""What the cluster benchmarks share: argument parsing helpers."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def bounded(name: str, low: int, high: int) -> Callable[[str], int]:
    """Return an argparse type that accepts integers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be {low} to {high}")
        return value

    return parse
