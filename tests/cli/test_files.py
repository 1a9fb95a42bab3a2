"""Reading -f sources: bounded, and every unreadable file named with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli._files import load_documents, load_sources
from shoal.interfaces import MAX_MANIFEST_FILE_BYTES, InvalidSpec


def test_a_source_without_end_is_refused_at_the_limit() -> None:
    with pytest.raises(InvalidSpec, match=r"zero: larger than 8 MiB: split it into files"):
        load_documents("/dev/zero")  # read to the limit, not forever
    assert MAX_MANIFEST_FILE_BYTES == 8 * 1024 * 1024


def test_a_file_that_is_not_text_says_so(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"kind: Workload\n\x85\xff")
    with pytest.raises(
        InvalidSpec, match=r"bin.yaml: not UTF-8 text \(byte 15\): save it as UTF-8"
    ):
        load_documents(str(binary))
    with pytest.raises(InvalidSpec, match="no such file; check the path given to -f"):
        load_sources([str(tmp_path / "missing.yaml")])
