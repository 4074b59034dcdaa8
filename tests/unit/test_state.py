"""The job directory's read side: outcome counts and ``results.parquet`` from committed parts, and
that every reader of "the newest row per position" agrees.

Parts are written by the real sink (``PartSink.commit``), as a run writes them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import atomic
from runner.errors import StateError
from runner.schemas import RESULT_SCHEMA
from runner.sink import PartSink, part_schema, results_table
from runner.state import JobDir
from runner.stats import compute_stats
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


Outcome = tuple[int, str, bool]
"""(input position, status, retryable) of one part row."""

_ROWS = 12
_outcome = st.tuples(st.integers(0, _ROWS - 1), st.sampled_from(["ok", "error"]), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.lists(_outcome, max_size=8), max_size=5))
def test_every_reader_of_the_newest_rows_agrees(
    tmp_path_factory: pytest.TempPathFactory, parts: list[list[Outcome]]
) -> None:
    """Resume, status, results.parquet and stats all see the last-written row of each position."""
    job = JobDir(tmp_path_factory.mktemp("job"))
    job.create()
    job.write_state({"input": {"rows": _ROWS}})

    def result(n: int, position: int, status: str, retryable: bool) -> Result:
        if status == "ok":
            return Result(index=position, id=f"r{position}", key=position, status="ok", completion=f"p{n}")
        return Result(index=position, id=f"r{position}", key=position, status="error",
                      error_message=f"p{n}", retryable=retryable)  # fmt: skip

    expected: dict[int, tuple[str, bool, str]] = {}
    written: list[list[Result]] = []
    for n, part in enumerate(parts):
        rows = [result(n, *row) for row in part]
        written.append(rows)
        for position, status, retryable in part:
            expected[position] = (status, retryable and status == "error", f"p{n}")
    commit(job, *[rows for rows in written if rows])

    latest = job.latest(["status", "retryable"]).to_pylist()
    assert sorted((r["_index"], r["status"]) for r in latest) == sorted(
        (p, e[0]) for p, e in expected.items()
    )
    ok = sum(1 for e in expected.values() if e[0] == "ok")
    done = {p for p, e in expected.items() if e[0] == "ok" or not e[1]}
    assert job.done_rows(retry_failed=False) == done
    p = job.progress()
    assert (p.ok, p.failed, p.failed_retryable) == (
        ok,
        len(expected) - ok,
        sum(e[1] for e in expected.values()),
    )
    assert job.consolidate() == len(expected)
    if expected:
        results = pq.read_table(job.results).to_pylist()
        assert [r["id"] for r in results] == [f"r{p}" for p in sorted(expected)]
        assert [r["completion"] or r["error_message"] for r in results] == [
            expected[p][2] for p in sorted(expected)
        ]
    stats = compute_stats(job.root)
    assert (stats.ok, stats.failed, stats.pending) == (ok, len(expected) - ok, _ROWS - len(expected))


class FixedKept:
    """Kept values by input position, as ``Source.kept_values`` hands them to the rebuild."""

    def __init__(self, teams: list[str]) -> None:
        self.names = ["team"]
        self.teams = teams
        self.asked: list[int] = []

    def take(self, positions: Sequence[int]) -> pa.Table:
        self.asked += positions
        return pa.table({"team": pa.array([self.teams[p] for p in positions], pa.string())})


def commit_kept(job: JobDir, rows: list[Result]) -> None:
    sink = PartSink(
        job.parts, job.journal, schema=part_schema([pa.field("team", pa.string())]), price_table="t",
        next_number=job.next_part_number(), part_rows=1000, part_seconds=60.0,
    )  # fmt: skip
    for r in rows:
        sink.add(r)
    sink.commit(*sink.take_part())
    sink.close()


def test_results_take_kept_columns_from_the_current_input(job: JobDir) -> None:
    """A row that did not run again still shows the input's current `team`, asked in input order."""
    commit_kept(job, [dataclasses.replace(ok(i), keep={"team": "old"}) for i in (2, 0, 1)])
    kept = FixedKept(["a", "b", "c"])
    assert job.consolidate(schema=part_schema([pa.field("team", pa.string())]), kept=kept) == 3
    assert pq.read_table(job.results).column("team").to_pylist() == ["a", "b", "c"]
    assert kept.asked == [0, 1, 2]


def test_older_parts_fit_the_current_schema(job: JobDir) -> None:
    """A part an older version wrote (no content columns, text ids) is rebuilt into the current
    schema: the new columns null, the id cast to the input's integer type."""
    old_schema = part_schema([]).remove(part_schema([]).get_field_index("content"))
    old_schema = old_schema.remove(old_schema.get_field_index("tool_input"))
    table = results_table([dataclasses.replace(ok(0), id="7")], part_schema([]), ["t"]).select(
        old_schema.names
    )
    job.parts.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, job.parts / "part-00000.parquet")
    assert job.consolidate(schema=part_schema([], pa.int64())) == 1
    out = pq.read_table(job.results)
    assert out.schema.field("id").type == pa.int64()
    assert out.to_pylist()[0]["id"] == 7
    assert out.to_pylist()[0]["content"] is None


def test_stats_read_the_rebuilt_results_while_they_are_current(job: JobDir) -> None:
    """After the rebuild, stats group by the kept column's current values; a part committed after it
    sends stats back to the parts."""
    commit_kept(job, [dataclasses.replace(ok(i), keep={"team": "old"}) for i in range(3)])
    job.consolidate(schema=part_schema([pa.field("team", pa.string())]), kept=FixedKept(["a", "a", "b"]))
    assert job.results_current()
    groups = compute_stats(job.root, by="team").groups
    assert groups is not None
    assert {k: v.rows for k, v in groups.items()} == {"a": 2, "b": 1}
    commit_kept(job, [dataclasses.replace(ok(3), keep={"team": "new"})])
    assert not job.results_current()
    groups = compute_stats(job.root, by="team").groups
    assert groups is not None
    assert {k: v.rows for k, v in groups.items()} == {"old": 3, "new": 1}


class TestEmulatedRuns:
    def test_a_real_run_refuses_a_dry_runs_directory(self, tmp_path: Path) -> None:
        """A directory a dry run made is refused to a real run, naming why."""
        job = JobDir(tmp_path / "out")
        job.create()
        job.start_run(spec={}, fingerprint={"rows": 1, "ids_digest": "x"}, force=False, emulated=True)
        assert job.is_emulated()
        with pytest.raises(StateError, match="dry run"):
            job.start_run(spec={}, fingerprint={"rows": 1, "ids_digest": "x"}, force=False)

    def test_a_dry_run_refuses_a_real_directory(self, tmp_path: Path) -> None:
        """A dry run never writes into a real job's directory."""
        job = JobDir(tmp_path / "out")
        job.create()
        job.start_run(spec={}, fingerprint={"rows": 1, "ids_digest": "x"}, force=False)
        with pytest.raises(StateError, match="real job"):
            job.start_run(spec={}, fingerprint={"rows": 1, "ids_digest": "x"}, force=False, emulated=True)
        job.start_run(spec={}, fingerprint={"rows": 1, "ids_digest": "x"}, force=False)  # a real rerun

    def test_a_dry_runs_rows_are_marked_in_lane(self, tmp_path: Path) -> None:
        """The sink of a dry run marks every row's lane, ok or error, on-demand or batch."""
        job = JobDir(tmp_path / "out")
        job.create()
        sink = PartSink(
            job.parts, job.journal, schema=part_schema([]), price_table="t", next_number=0,
            part_rows=10, part_seconds=60.0, emulated=True,
        )  # fmt: skip
        sink.add(ok(0))
        sink.add(error(1, retryable=False))
        sink.add(dataclasses.replace(ok(2), lane="batch"))
        sink.commit(*sink.take_part())
        sink.close()
        lanes = pq.read_table(job.part_files()[0]).column("lane").to_pylist()
        assert lanes == ["emulated_on_demand", "emulated_on_demand", "emulated_batch"]


class TestPrivacy:
    def test_new_job_directory_is_private(self, tmp_path: Path, umask_022: None) -> None:
        """A new job directory and its working directories are 0700 under umask 022."""
        job = JobDir(tmp_path / "out")
        job.create()
        for d in (job.root, job.work, job.parts, job.journal):
            assert d.stat().st_mode & 0o777 == 0o700, d

    def test_existing_directory_keeps_its_permissions(self, tmp_path: Path, umask_022: None) -> None:
        """A job directory the user made keeps its mode; the working directory inside is still private."""
        (tmp_path / "out").mkdir(mode=0o755)
        job = JobDir(tmp_path / "out")
        job.create()
        assert job.root.stat().st_mode & 0o777 == 0o755
        assert job.work.stat().st_mode & 0o777 == 0o700

    def test_files_are_written_0600(self, tmp_path: Path, umask_022: None) -> None:
        """Atomic writes create 0600 files; one that exists keeps its permissions when replaced."""
        new = tmp_path / "new.txt"
        atomic.write_text(new, "a")
        assert new.stat().st_mode & 0o777 == 0o600
        shared = tmp_path / "shared.txt"
        shared.write_text("old")
        shared.chmod(0o640)
        atomic.write_text(shared, "b")
        assert (shared.read_text(), shared.stat().st_mode & 0o777) == ("b", 0o640)

    def test_parts_journal_and_lock_are_private(self, job: JobDir, umask_022: None) -> None:
        """Part files, journals and the lock file are 0600."""
        sink = PartSink(
            job.parts, job.journal, schema=part_schema([]), price_table="test",
            next_number=0, part_rows=1000, part_seconds=60.0,
        )  # fmt: skip
        sink.add(ok(0))
        assert (job.journal / "journal-00000.jsonl").stat().st_mode & 0o777 == 0o600
        number, rows = sink.take_part()
        sink.commit(number, rows)
        sink.close()
        assert (job.parts / "part-00000.parquet").stat().st_mode & 0o777 == 0o600
        with job.lock():
            assert (job.work / "lock").stat().st_mode & 0o777 == 0o600


class TestEmptyResults:
    def test_no_rows_writes_an_empty_results_file_with_the_full_schema(self, job: JobDir) -> None:
        """With no part at all, consolidate writes results.parquet with no rows and every column."""
        schema = part_schema([pa.field("team", pa.string())])
        assert job.consolidate(schema) == 0
        table = pq.read_table(job.results)
        assert table.num_rows == 0
        assert table.schema.names == [*RESULT_SCHEMA.names, "team"]
        assert table.schema.field("input_tokens").type == pa.int64()

    def test_without_a_schema_nothing_is_written(self, job: JobDir) -> None:
        """A caller that cannot say the schema (no part, no spec) gets no file rather than a wrong one."""
        assert job.consolidate() == 0
        assert not job.results.exists()


class TestRemap:
    def test_remap_twice_is_remap_once(self, job: JobDir) -> None:
        """A remap killed halfway and run again gives what one remap gives: positions follow the ids."""
        commit(job, [ok(0), ok(1), ok(2)], [ok(3), ok(4)])
        ids = pa.array(["r4", "r9", "r0", "r2"])  # r1 and r3 are gone, the rest moved
        job.remap(ids)
        once = [pq.read_table(p).to_pydict() for p in job.part_files()]
        job.remap(ids)
        assert [pq.read_table(p).to_pydict() for p in job.part_files()] == once
        assert job.latest(["id"]).to_pydict() == {"_index": [2, 3, 0], "id": ["r0", "r2", "r4"]}

    def test_force_marks_a_remap_pending_until_it_is_done(self, job: JobDir) -> None:
        """start_run with --force on new ids records a pending remap; remap() clears it."""
        job.write_state({"input": {"rows": 6, "ids_digest": "old"}, "runs": []})
        state = job.start_run(spec={}, fingerprint={"rows": 4, "ids_digest": "new"}, force=True)
        assert state["remap_pending"] is True
        assert job.read_state()["remap_pending"] is True
        job.remap(pa.array(["r0", "r1", "r2", "r3"]))
        assert "remap_pending" not in job.read_state()


class TestJournalCounts:
    def test_progress_counts_results_still_in_the_journal(self, job: JobDir) -> None:
        """Results journalled but not committed (a kill, a double Ctrl-C) count as done, newest wins."""
        commit(job, [ok(0), error(1, retryable=True)])
        sink = PartSink(
            job.parts, job.journal, schema=part_schema([]), price_table="test",
            next_number=job.next_part_number(), part_rows=1000, part_seconds=60.0,
        )  # fmt: skip
        for r in (ok(1), ok(2), error(3, retryable=False)):
            sink.add(r)
        os.close(sink._fd)  # killed: the journal stays behind, no part
        p = job.progress()
        assert (p.ok, p.failed, p.failed_retryable, p.pending) == (3, 1, 0, 2)

    def test_a_journal_whose_part_exists_is_not_counted_twice(self, job: JobDir) -> None:
        """A journal left beside its committed part (killed between rename and unlink) adds nothing."""
        commit(job, [ok(0), ok(1)])
        (job.journal / "journal-00000.jsonl").write_bytes(b'[0, "r0"]\\n')
        assert job.progress().ok == 2

    def test_a_torn_last_line_is_skipped(self, job: JobDir) -> None:
        """A journal line cut by a kill does not break the count."""
        sink = PartSink(
            job.parts, job.journal, schema=part_schema([]), price_table="test",
            next_number=0, part_rows=1000, part_seconds=60.0,
        )  # fmt: skip
        sink.add(ok(0))
        os.write(sink._fd, b'[1, "r1", 1, "o')
        os.close(sink._fd)
        assert job.progress().ok == 1
