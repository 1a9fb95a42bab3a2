"""A pod's record on disk: created whole, marked complete once its containers exist."""

from datetime import UTC, datetime
from pathlib import Path

from shoal.runtime.oci._ocifiles import PodFiles, PodRecord, write_json
from tests.runtime.oci.harness import new_pod


def record() -> PodRecord:
    return PodRecord(spec=new_pod(), created_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_a_pod_is_complete_once_marked_and_stays_so_for_a_new_reader(tmp_path: Path) -> None:
    files = PodFiles(tmp_path)
    made = record()
    files.create(made)
    loaded = files.load(made.spec.uid)
    assert loaded is not None and not loaded.complete  # a crash now: never created
    files.mark_complete(made)
    assert made.complete
    reread = PodFiles(tmp_path).load(made.spec.uid)  # an agent started again
    assert reread is not None and reread.complete
    assert reread.spec == made.spec


def test_a_record_written_complete_by_an_earlier_agent_still_reads_complete(
    tmp_path: Path,
) -> None:
    files = PodFiles(tmp_path)
    made = record()
    files.create(made)
    write_json(files.record_path(made.spec.uid), made.model_copy(update={"complete": True}))
    loaded = files.load(made.spec.uid)
    assert loaded is not None and loaded.complete
