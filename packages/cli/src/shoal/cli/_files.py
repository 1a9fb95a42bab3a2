"""Read workload files: YAML (several documents per file) or JSON (an object or a list)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shoal.interfaces import InvalidSpec, load_yaml_documents

__all__ = ["load_documents"]


def load_documents(path: str) -> tuple[list[Any], str]:
    """Return the documents of ``path`` (``-`` for stdin) and a name for messages.

    Raises:
        InvalidSpec: the file cannot be read, or is not valid YAML/JSON; the
            message names the file and, for syntax errors, the line.
    """
    if path == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        file = Path(path)
        source = file.name
        try:
            text = file.read_text("utf-8")
        except FileNotFoundError:
            raise InvalidSpec(f"{path}: no such file; check the path given to -f") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidSpec(f"{path}: cannot read it ({exc})") from None
    if path.endswith(".json"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidSpec(
                f"{source}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
            ) from None
        documents = loaded if isinstance(loaded, list) else [loaded]
    else:
        documents = load_yaml_documents(text, source)
    if not documents:
        raise InvalidSpec(f"{source}: no documents found: write at least one workload")
    return documents, source
