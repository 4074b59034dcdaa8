"""The job directory's read side: outcome counts and ``results.parquet`` from committed parts.

Parts are written by the real sink (``PartSink.commit``), as a run writes them.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runner.errors import StateError
from runner.sink import PartSink, part_schema
from runner.state import JobDir
from runner.types import Result, Usage


def ok(index: int) -> Result:
    return Result(index=index, id=f"r{index}", key=index, status="ok", completion=f"answer {index}",
                  usage=Usage(10, 5))  # fmt: skip


def error(index: int, *, retryable: bool) -> Result:
    return Result(index=index, id=f"r{index}", key=index, status="error", error_type="X",
                  error_message="no", retryable=retryable)  # fmt: skip


def commit(job: JobDir, *parts: list[Result]) -> None:
    sink = PartSink(
        job.parts, job.journal, schema=part_schema([]), price_table="test",
        next_number=job.next_part_number(), part_rows=1000, part_seconds=60.0,
    )  # fmt: skip
    for rows in parts:
        for r in rows:
            sink.add(r)
        number, taken = sink.take_part()
        sink.commit(number, taken)
    sink.close()


@pytest.fixture
def job(tmp_path: Path) -> JobDir:
    j = JobDir(tmp_path / "job")
    j.create()
    j.write_state({"input": {"rows": 6}})
    return j


def test_progress_counts_the_newest_outcome_of_each_row(job: JobDir) -> None:
    """A row retried into a later part counts once, as its latest outcome."""
    commit(
        job, [ok(0), error(1, retryable=True), error(2, retryable=False)], [ok(1), error(3, retryable=True)]
    )
    p = job.progress()
    assert (p.rows, p.ok, p.failed, p.failed_retryable, p.pending) == (6, 2, 2, 1, 2)


def test_progress_in_scope_counts_only_the_first_rows(job: JobDir) -> None:
    """``--limit N`` reports on the first N input rows only."""
    commit(job, [ok(0), ok(4), error(5, retryable=True)])
    p = job.progress(scope=2)
    assert (p.rows, p.ok, p.failed, p.pending) == (2, 1, 0, 1)


def test_progress_of_a_new_job_is_all_pending(job: JobDir) -> None:
    p = job.progress()
    assert (p.ok, p.failed, p.pending) == (0, 0, 6)


def test_an_unreadable_part_says_what_to_do(job: JobDir) -> None:
    """A damaged part file is a StateError naming it and the way out, not a pyarrow traceback."""
    commit(job, [ok(0)])
    part = job.part_files()[0]
    part.write_bytes(b"not parquet")
    with pytest.raises(StateError, match=r"unreadable.*move it away"):
        job.progress()


def test_results_hold_the_newest_row_per_position_in_input_order(job: JobDir) -> None:
    """Parts out of order and a row redone later: one row per position, input order, newest kept."""
    commit(job, [ok(3), error(1, retryable=True), ok(0)], [ok(2)], [ok(1)], [ok(5)])
    assert job.consolidate() == 5
    table = pq.read_table(job.results)
    assert table.column("id").to_pylist() == ["r0", "r1", "r2", "r3", "r5"]
    assert table.column("status").to_pylist() == ["ok"] * 5


def test_results_from_more_parts_than_are_kept_open(job: JobDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows scattered over more parts than the rebuild keeps decoded, in small chunks: all there, in order."""
    import runner.state

    monkeypatch.setattr(runner.state, "CONSOLIDATE_CHUNK_ROWS", 2)
    job.write_state({"input": {"rows": 8}})
    commit(job, *[[ok(i)] for i in (7, 5, 3, 1, 6, 4, 2, 0)])
    assert job.consolidate() == 8
    assert pq.read_table(job.results).column("id").to_pylist() == [f"r{i}" for i in range(8)]
