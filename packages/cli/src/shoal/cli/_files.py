"""Read manifest files: YAML (several documents per file) or JSON (an object or a list).

``-f`` names a file, ``-`` (stdin) or a directory, whose ``*.yaml``, ``*.yml``
and ``*.json`` files are read in name order (others, dotfiles included, are
skipped, as the agent's watched directories do).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shoal.interfaces import MAX_MANIFEST_FILE_BYTES, InvalidSpec, load_yaml_documents

__all__ = ["MANIFEST_SUFFIXES", "load_documents", "load_sources"]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""The files of a directory that ``-f DIR`` reads."""


def load_sources(paths: list[str]) -> list[tuple[list[Any], str]]:
    """Return ``(documents, source)`` per file of ``paths`` (files, directories or ``-``).

    Raises:
        InvalidSpec: a path does not exist, a directory holds no manifest file,
            or a file cannot be read or parsed (its name and line in the message).
    """
    sources: list[tuple[list[Any], str]] = []
    for path in paths:
        directory = Path(path)
        if path != "-" and directory.is_dir():
            files = sorted(
                f
                for f in directory.iterdir()
                if f.is_file() and f.suffix in MANIFEST_SUFFIXES and not f.name.startswith(".")
            )
            if not files:
                raise InvalidSpec(
                    f"{path}: the directory holds no *.yaml, *.yml or *.json file; "
                    "check the path given to -f"
                )
            sources += [load_documents(str(f), name=str(f)) for f in files]
        else:
            sources.append(load_documents(path))
    return sources


def load_documents(path: str, name: str | None = None) -> tuple[list[Any], str]:
    """Return the documents of ``path`` (``-`` for stdin) and a name for messages.

    ``name`` is that name; the file's own name by default.

    Raises:
        InvalidSpec: the file cannot be read, or is not valid YAML/JSON; the
            message names the file and, for syntax errors, the line.
    """
    limit = MAX_MANIFEST_FILE_BYTES
    if path == "-":
        content, source = sys.stdin.buffer.read(limit + 1), "<stdin>"
    else:
        file = Path(path)
        source = name or file.name
        try:
            with file.open("rb") as opened:  # at most the limit: /dev/zero has no end
                content = opened.read(limit + 1)
        except FileNotFoundError:
            raise InvalidSpec(f"{path}: no such file; check the path given to -f") from None
        except OSError as exc:
            raise InvalidSpec(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(content) > limit:
        raise InvalidSpec(
            f"{source}: larger than {limit // (1024 * 1024)} MiB: split it into files"
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSpec(
            f"{source}: not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
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
        raise InvalidSpec(f"{source}: no documents found: write at least one object")
    return documents, source
