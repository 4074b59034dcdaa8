"""The source: input checks at open, the fingerprint, and Record batches streamed from Parquet."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import demo_data
from runner.demo_data import MAX_CHARS, MIN_CHARS, make_demo_dataset
from runner.errors import SourceError
from runner.request import RequestBuilder
from runner.source import InputFingerprint, Source
from runner.spec import JobSpec, load_spec, spec_from_dict
from runner.types import Record
from tests.helpers import corrupt_row_group, text_with_invalid_utf8

HAIKU45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF\n"
REPO = Path(__file__).resolve().parents[2]


def make_spec(input: Path | str, columns: dict[str, Any] | None = None, batch_rows: int = 1024) -> JobSpec:
    return spec_from_dict(
        {
            "job": {"input": str(input), "output": "out"},
            "model": {"id": HAIKU45},
            "columns": columns if columns is not None else {"id": "id", "prompt": "text"},
            "output": {"read_batch_rows": batch_rows},
        },
        source="jobs/test.toml",
    )


def write(path: Path, data: dict[str, Any] | pa.Table, row_group_size: int | None = None) -> Path:
    table = data if isinstance(data, pa.Table) else pa.table(data)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def prompts(n: int, start: int = 0) -> dict[str, list[Any]]:
    return {
        "id": [f"r{i}" for i in range(start, start + n)],
        "text": [f"prompt {i}" for i in range(start, start + n)],
        "team": ["ads" if i % 2 else "risk" for i in range(start, start + n)],
    }


def flat(source: Source, done: Any = frozenset()) -> list[Record]:
    return [r for batch in source.records(done) for r in batch]


@pytest.fixture(name="input_file")
def fixture_input_file(tmp_path: Path) -> Path:
    return write(tmp_path / "in.parquet", prompts(10))


class TestOpen:
    def test_missing_input(self, tmp_path: Path) -> None:
        """A missing input path is a SourceError naming it."""
        missing = tmp_path / "nope.parquet"
        with pytest.raises(SourceError, match="no such file") as info:
            Source(make_spec(missing))
        assert str(missing) in str(info.value)

    def test_not_parquet(self, tmp_path: Path) -> None:
        """A file that is not Parquet is a SourceError naming the file."""
        bad = tmp_path / "in.parquet"
        bad.write_text("id,text\n1,hello\n")
        with pytest.raises(SourceError, match="not a Parquet file") as info:
            Source(make_spec(bad))
        assert str(bad) in str(info.value)

    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
    def test_unreadable_file(self, input_file: Path) -> None:
        """A file without read permission is a SourceError naming the file."""
        input_file.chmod(0)
        try:
            with pytest.raises(SourceError, match="cannot read") as info:
                Source(make_spec(input_file))
        finally:
            input_file.chmod(0o644)
        assert str(input_file) in str(info.value)

    def test_empty_directory(self, tmp_path: Path) -> None:
        """A directory without Parquet files is a SourceError."""
        (tmp_path / "notes.txt").write_text("x")
        with pytest.raises(SourceError, match=r"no \*\.parquet files"):
            Source(make_spec(tmp_path))

    @pytest.mark.parametrize(
        ("columns", "column", "key"),
        [
            ({"id": "key", "prompt": "text"}, "key", "`id`"),
            ({"id": "id", "prompt": "body"}, "body", "`prompt`"),
            ({"id": "id", "template": "{text} for {audience}"}, "audience", "`template`"),
            ({"id": "id", "prompt": "text", "keep": ["owner"]}, "owner", "`keep`"),
            ({"id": "id", "prompt": "text", "system_column": "sys"}, "sys", "`system_column`"),
            ({"id": "id", "prompt": "text", "document": "pdf"}, "pdf", "`document`"),
            ({"id": "id", "messages": "turns"}, "turns", "`messages`"),
            (
                {"id": "id", "prompt": "text", "overrides": {"max_tokens": "mt"}},
                "mt",
                "`overrides.max_tokens`",
            ),
        ],
    )
    def test_missing_column_is_named(
        self, input_file: Path, columns: dict[str, Any], column: str, key: str
    ) -> None:
        """A column the spec names but the file lacks: the message names column, key, file and columns."""
        with pytest.raises(SourceError) as info:
            Source(make_spec(input_file, columns))
        message = str(info.value)
        assert repr(column) in message
        assert key in message
        assert str(input_file) in message
        assert "jobs/test.toml" in message
        assert "id, text, team" in message

    def test_template_placeholder_message_names_placeholder(self, input_file: Path) -> None:
        """A missing template column is reported as that template placeholder."""
        with pytest.raises(SourceError, match=r"template placeholder \{audience\}"):
            Source(make_spec(input_file, {"id": "id", "template": "{text} for {audience}"}))

    def test_wrong_prompt_type(self, tmp_path: Path) -> None:
        """A prompt column that is not text is refused at open, naming column and key."""
        path = write(tmp_path / "in.parquet", {"id": ["a"], "text": [1]})
        with pytest.raises(SourceError, match=r"'text' \(\[columns\] `prompt`\) must hold text, not int64"):
            Source(make_spec(path))

    def test_wrong_id_type(self, tmp_path: Path) -> None:
        """An id column of floats is refused: ids are text or integers."""
        path = write(tmp_path / "in.parquet", {"id": [1.5], "text": ["a"]})
        with pytest.raises(SourceError, match="must hold text or integers"):
            Source(make_spec(path))

    def test_all_null_prompt_column_is_accepted(self, tmp_path: Path) -> None:
        """A prompt column of Arrow type null opens; each row then becomes an error row."""
        path = write(tmp_path / "in.parquet", {"id": ["a"], "text": pa.nulls(1)})
        assert [r.error_type for r in flat(Source(make_spec(path)))] == ["NullPrompt"]

    def test_duplicate_ids(self, tmp_path: Path) -> None:
        """A repeated id is a SourceError naming the id and both rows."""
        data = prompts(5)
        data["id"][3] = "r1"
        path = write(tmp_path / "in.parquet", data)
        with pytest.raises(SourceError, match="appears more than once") as info:
            Source(make_spec(path))
        assert "'r1'" in str(info.value)
        assert "row 1 and" in str(info.value)
        assert "row 3" in str(info.value)

    def test_duplicate_ids_across_files(self, tmp_path: Path) -> None:
        """An id repeated in a second file names both files."""
        write(tmp_path / "a.parquet", prompts(3))
        write(tmp_path / "b.parquet", prompts(3, start=2))
        with pytest.raises(SourceError, match="'r2'") as info:
            Source(make_spec(tmp_path))
        assert "a.parquet row 2" in str(info.value)
        assert "b.parquet row 0" in str(info.value)

    def test_null_id(self, tmp_path: Path) -> None:
        """A null id is a SourceError naming the file and row."""
        data = prompts(4)
        data["id"][2] = None
        path = write(tmp_path / "in.parquet", data)
        with pytest.raises(SourceError, match="is null at row 2"):
            Source(make_spec(path))

    def test_duplicates_beyond_limit_still_stop_the_job(self, tmp_path: Path) -> None:
        """The whole input is the job, so a duplicate id past `limit` is found at once, not tomorrow."""
        data = prompts(5)
        data["id"][4] = "r0"
        path = write(tmp_path / "in.parquet", data)
        with pytest.raises(SourceError, match="appears more than once"):
            Source(make_spec(path), limit=4)

    def test_kept_column_types_must_agree(self, tmp_path: Path) -> None:
        """A kept column with different types in two files is a SourceError."""
        write(tmp_path / "a.parquet", {"id": ["a"], "text": ["x"], "n": [1]})
        write(tmp_path / "b.parquet", {"id": ["b"], "text": ["y"], "n": ["1"]})
        with pytest.raises(SourceError, match="kept column 'n'"):
            Source(make_spec(tmp_path, {"id": "id", "prompt": "text", "keep": ["n"]}))

    def test_negative_limit(self, input_file: Path) -> None:
        """A negative limit is a programming error."""
        with pytest.raises(ValueError, match="negative"):
            Source(make_spec(input_file), limit=-1)


class TestFingerprint:
    def test_rows_and_files(self, input_file: Path) -> None:
        """The fingerprint counts rows and names the file relative to the input."""
        fp = Source(make_spec(input_file)).fingerprint()
        assert (fp.rows, fp.files) == (10, ("in.parquet",))

    def test_independent_of_batches_and_files(self, tmp_path: Path) -> None:
        """The same ids in the same order give the same digest however they are split and read."""
        one = write(tmp_path / "one.parquet", prompts(10))
        parts = tmp_path / "parts"
        parts.mkdir()
        write(parts / "a.parquet", prompts(4))
        write(parts / "b.parquet", prompts(6, start=4))
        a = Source(make_spec(one, batch_rows=3)).fingerprint()
        b = Source(make_spec(parts, batch_rows=1024)).fingerprint()
        assert a.ids_digest == b.ids_digest

    def test_ids_change_the_digest(self, tmp_path: Path) -> None:
        """Reordered or renamed ids change the digest."""
        data = prompts(3)
        base = Source(make_spec(write(tmp_path / "a.parquet", data))).fingerprint().ids_digest
        data["id"] = ["r1", "r0", "r2"]
        swapped = Source(make_spec(write(tmp_path / "b.parquet", data))).fingerprint().ids_digest
        data["id"] = ["r0", "r1r", "2"]
        shifted = Source(make_spec(write(tmp_path / "c.parquet", data))).fingerprint().ids_digest
        assert len({base, swapped, shifted}) == 3

    def test_integer_ids_hash_like_their_text(self, tmp_path: Path) -> None:
        """Integer ids fingerprint like the same ids written as text."""
        ints = write(tmp_path / "a.parquet", {"id": [1, 22, 333], "text": ["a", "b", "c"]})
        strs = write(tmp_path / "b.parquet", {"id": ["1", "22", "333"], "text": ["a", "b", "c"]})
        assert (
            Source(make_spec(ints)).fingerprint().ids_digest
            == Source(make_spec(strs)).fingerprint().ids_digest
        )

    def test_limit_does_not_change_the_fingerprint(self, input_file: Path) -> None:
        """A run with --limit and a full run are the same job: same fingerprint."""
        limited = Source(make_spec(input_file), limit=4).fingerprint()
        full = Source(make_spec(input_file)).fingerprint()
        assert limited == full

    def test_without_id_column(self, tmp_path: Path) -> None:
        """Without an id column the fingerprint takes the row count from metadata."""
        path = write(tmp_path / "in.parquet", {"text": ["a", "b"]})
        fp = Source(make_spec(path, {"prompt": "text"})).fingerprint()
        assert fp.rows == 2
        assert fp.ids_digest

    def test_dict_round_trip(self, input_file: Path) -> None:
        """to_dict gives JSON-able data that from_dict turns back into the same fingerprint."""
        fp = Source(make_spec(input_file)).fingerprint()
        assert InputFingerprint.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp

    @pytest.mark.parametrize(
        "data",
        [{}, {"rows": "3", "ids_digest": "x", "files": []}, {"rows": 3, "ids_digest": "x", "files": [1]}],
    )
    def test_from_dict_refuses_other_data(self, data: dict[str, Any]) -> None:
        """from_dict raises ValueError for data to_dict did not write."""
        with pytest.raises(ValueError, match="not an input fingerprint"):
            InputFingerprint.from_dict(data)


class TestRecords:
    def test_records_carry_index_id_key_body_keep(self, input_file: Path) -> None:
        """Each record has its position, id, the builder's key and body, and the kept values."""
        spec = make_spec(input_file, {"id": "id", "prompt": "text", "keep": ["team"]})
        records = flat(Source(spec))
        builder = RequestBuilder(spec)
        third = records[3]
        assert (third.index, third.id, third.keep) == (3, "r3", {"team": "ads"})
        assert third.key == builder.key("r3", {"text": "prompt 3"})
        assert third.body == builder.build({"text": "prompt 3"}).body
        assert json.loads(third.body or b"")["messages"][0]["content"] == "prompt 3"
        assert third.error_type is None

    def test_batches_follow_read_batch_rows(self, tmp_path: Path) -> None:
        """Batches hold `read_batch_rows` rows, whatever the file's row groups are."""
        path = write(tmp_path / "in.parquet", prompts(10), row_group_size=4)
        sizes = [len(b) for b in Source(make_spec(path, batch_rows=3)).records()]
        assert sizes == [3, 3, 3, 1]

    def test_directory_reads_files_in_name_order(self, tmp_path: Path) -> None:
        """A directory's *.parquet files are read by name; index runs on across files."""
        write(tmp_path / "b.parquet", prompts(2, start=2))
        write(tmp_path / "a.parquet", prompts(2))
        records = flat(Source(make_spec(tmp_path, batch_rows=3)))
        assert [(r.index, r.id) for r in records] == [(0, "r0"), (1, "r1"), (2, "r2"), (3, "r3")]
        assert Source(make_spec(tmp_path)).fingerprint().files == ("a.parquet", "b.parquet")

    def test_directory_skips_hidden_other_and_nested_files(self, tmp_path: Path) -> None:
        """Hidden and underscore files, other extensions and subdirectories are not read."""
        write(tmp_path / "a.parquet", prompts(2))
        write(tmp_path / ".tmp.parquet", prompts(1, start=10))
        write(tmp_path / "_partial.parquet", prompts(1, start=20))
        (tmp_path / "_SUCCESS").write_text("")
        (tmp_path / "nested").mkdir()
        write(tmp_path / "nested" / "c.parquet", prompts(1, start=30))
        assert [r.id for r in flat(Source(make_spec(tmp_path)))] == ["r0", "r1"]

    def test_done_rows_skip_by_position_across_groups_and_files(self, tmp_path: Path) -> None:
        """A trusted resume skips done positions, whole row groups included, and keeps indices right."""
        write(tmp_path / "a.parquet", prompts(10), row_group_size=4)
        write(tmp_path / "b.parquet", prompts(5, start=10), row_group_size=2)
        spec = make_spec(tmp_path, batch_rows=3)
        done = set(range(0, 8)) | {10, 11, 13}
        records = [r for batch in Source(spec).records(done_rows=done) for r in batch]
        assert [(r.index, r.id) for r in records] == [(8, "r8"), (9, "r9"), (12, "r12"), (14, "r14")]

    def test_done_rows_give_the_same_records_as_done_keys(self, tmp_path: Path) -> None:
        """Skipping by position and skipping by resume key agree on an unchanged input."""
        path = write(tmp_path / "in.parquet", prompts(30), row_group_size=7)
        source = Source(make_spec(path, batch_rows=4))
        every = flat(source)
        done_keys = {r.key for r in every if r.index % 3}
        done_rows = {r.index for r in every if r.index % 3}
        by_key = flat(source, done_keys)
        by_row = [r for batch in source.records(done_rows=done_rows) for r in batch]
        assert by_key == by_row

    def test_stamp_changes_with_the_file(self, tmp_path: Path) -> None:
        """Rewriting the input changes the stamp, so a resume falls back to checking keys."""
        path = write(tmp_path / "in.parquet", prompts(3))
        before = Source(make_spec(path)).stamp()
        data = prompts(3)
        data["text"][1] = "edited"
        write(path, data)
        assert Source(make_spec(path)).stamp() != before

    def test_stamp_sees_an_edit_that_keeps_size_and_mtime(self, tmp_path: Path) -> None:
        """An edit that keeps the file's size and modification time (cp -p, rsync -t) changes the stamp."""
        path = tmp_path / "in.parquet"
        plain = {"compression": "none", "use_dictionary": False, "write_statistics": False}
        pq.write_table(pa.table(prompts(3)), path, **plain)
        before = Source(make_spec(path)).stamp()
        stat = path.stat()
        data = prompts(3)
        data["text"][1] = "PROMPT 1"  # as long as "prompt 1"
        pq.write_table(pa.table(data), path, **plain)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        assert Source(make_spec(path)).stamp() != before

    def test_stamp_is_stable_for_the_same_bytes(self, tmp_path: Path) -> None:
        """The same bytes under a new modification time give the same stamp (a trusted resume stays fast)."""
        path = write(tmp_path / "in.parquet", prompts(3))
        before = Source(make_spec(path)).stamp()
        os.utime(path, (1, 1))
        assert Source(make_spec(path)).stamp() == before

    def test_limit_stops_across_files(self, tmp_path: Path) -> None:
        """A limit stops after that many rows, counted across files."""
        write(tmp_path / "a.parquet", prompts(3))
        write(tmp_path / "b.parquet", prompts(3, start=3))
        records = flat(Source(make_spec(tmp_path, batch_rows=2), limit=4))
        assert [r.id for r in records] == ["r0", "r1", "r2", "r3"]

    def test_limit_zero_yields_nothing(self, input_file: Path) -> None:
        """A limit of zero reads no rows."""
        assert flat(Source(make_spec(input_file), limit=0)) == []

    def test_done_keys_are_skipped(self, input_file: Path) -> None:
        """Rows whose keys are done are skipped and the rest keep their input positions."""
        source = Source(make_spec(input_file, batch_rows=4))
        first = flat(source)
        done = {r.key for r in first if r.index % 3 == 0}
        rest = flat(source, done)
        assert [r.index for r in rest] == [1, 2, 4, 5, 7, 8]

    def test_all_done_yields_no_batches(self, input_file: Path) -> None:
        """When every key is done, no batch comes out at all."""
        source = Source(make_spec(input_file, batch_rows=4))
        done = {r.key for r in flat(source)}
        assert list(source.records(done)) == []

    def test_changed_prompt_runs_again(self, tmp_path: Path) -> None:
        """A row whose prompt changed gets a new key, so old done keys do not skip it."""
        data = prompts(3)
        done = {r.key for r in flat(Source(make_spec(write(tmp_path / "a.parquet", data))))}
        data["text"][1] = "changed"
        rest = flat(Source(make_spec(write(tmp_path / "b.parquet", data))), done)
        assert [r.id for r in rest] == ["r1"]

    def test_row_errors_flow_as_records(self, tmp_path: Path) -> None:
        """A row that cannot become a request comes out with no body and its error type."""
        path = write(tmp_path / "in.parquet", {"id": ["a", "b"], "text": ["fine", None]})
        ok, bad = flat(Source(make_spec(path)))
        assert ok.body is not None
        assert (bad.body, bad.error_type, bad.index, bad.id) == (None, "NullPrompt", 1, "b")
        assert bad.error_message

    def test_integer_ids_keep_their_type(self, tmp_path: Path) -> None:
        """Integer ids stay integers, and the id result column takes the id column's type."""
        path = write(tmp_path / "in.parquet", {"id": pa.array([7, 42], pa.int64()), "text": ["a", "b"]})
        source = Source(make_spec(path))
        assert [r.id for r in flat(source)] == [7, 42]
        assert source.id_type() == pa.int64()

    def test_integer_ids_keep_their_resume_keys(self, tmp_path: Path) -> None:
        """An integer id hashes as its text did, so jobs begun with text ids resume without paying again."""
        ints = write(tmp_path / "a.parquet", {"id": pa.array([7], pa.int32()), "text": ["a"]})
        texts = write(tmp_path / "b.parquet", {"id": ["7"], "text": ["a"]})
        assert [r.key for r in flat(Source(make_spec(ints)))] == [
            r.key for r in flat(Source(make_spec(texts)))
        ]

    def test_id_type_of_mixed_files(self, tmp_path: Path) -> None:
        """int32 in one file and int64 in another give int64; text ids and row numbers give text."""
        (tmp_path / "d").mkdir()
        write(tmp_path / "d" / "a.parquet", {"id": pa.array([1], pa.int32()), "text": ["a"]})
        write(tmp_path / "d" / "b.parquet", {"id": pa.array([2], pa.int64()), "text": ["b"]})
        assert Source(make_spec(tmp_path / "d")).id_type() == pa.int64()
        path = write(tmp_path / "t.parquet", {"id": ["x"], "text": ["a"]})
        assert Source(make_spec(path)).id_type() == pa.string()
        assert Source(make_spec(path, {"prompt": "text"})).id_type() == pa.string()

    def test_row_numbers_without_id_column(self, tmp_path: Path) -> None:
        """Without an id column, a row's id is its global row number."""
        write(tmp_path / "a.parquet", {"text": ["a", "b"]})
        write(tmp_path / "b.parquet", {"text": ["c"]})
        assert [r.id for r in flat(Source(make_spec(tmp_path, {"prompt": "text"})))] == ["0", "1", "2"]

    def test_template_without_columns(self, tmp_path: Path) -> None:
        """A template with no placeholders and no id column still yields one record per row."""
        path = write(tmp_path / "in.parquet", {"text": ["a", "b", "c"]}, row_group_size=2)
        records = flat(Source(make_spec(path, {"template": "Tell a joke."}, batch_rows=2)))
        assert [r.id for r in records] == ["0", "1", "2"]
        assert records[0].key != records[1].key

    def test_kept_values_are_python_objects(self, tmp_path: Path) -> None:
        """Kept columns arrive as Python values, structs as dicts, dictionary columns decoded."""
        table = pa.table(
            {
                "id": ["a"],
                "text": ["x"],
                "meta": pa.array([{"k": 1, "v": "w"}]),
                "team": pa.array(["ads"]).dictionary_encode(),
            }
        )
        path = write(tmp_path / "in.parquet", table)
        source = Source(make_spec(path, {"id": "id", "prompt": "text", "keep": ["meta", "team"]}))
        assert flat(source)[0].keep == {"meta": {"k": 1, "v": "w"}, "team": "ads"}
        assert [f.type for f in source.keep_fields()] == [table.schema.field("meta").type, pa.string()]

    def test_list_of_struct_messages_column(self, tmp_path: Path) -> None:
        """A list<struct{role, content}> column becomes the body's turns."""
        turns = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]
        path = write(tmp_path / "in.parquet", {"id": ["a"], "turns": turns})
        (record,) = flat(Source(make_spec(path, {"id": "id", "messages": "turns"})))
        assert json.loads(record.body or b"")["messages"] == turns[0]

    def test_json_messages_column(self, tmp_path: Path) -> None:
        """A text messages column is parsed as JSON turns; a bad one becomes an error record."""
        turns = [{"role": "user", "content": "Hi"}]
        path = write(tmp_path / "in.parquet", {"id": ["a", "b"], "turns": [json.dumps(turns), "[oops"]})
        good, bad = flat(Source(make_spec(path, {"id": "id", "messages": "turns"})))
        assert json.loads(good.body or b"")["messages"] == turns
        assert bad.error_type == "MalformedMessages"

    def test_pdf_bytes_column(self, tmp_path: Path) -> None:
        """A binary PDF column becomes a document block."""
        path = write(tmp_path / "in.parquet", {"id": ["a", "b"], "text": ["S", "S"], "pdf": [PDF, b"GIF89a"]})
        good, bad = flat(Source(make_spec(path, {"id": "id", "prompt": "text", "document": "pdf"})))
        assert json.loads(good.body or b"")["messages"][0]["content"][0]["type"] == "document"
        assert bad.error_type == "BadDocument"

    def test_pdf_path_column(self, tmp_path: Path) -> None:
        """A text PDF column is read as file paths."""
        pdf = tmp_path / "doc.pdf"
        pdf.write_bytes(PDF)
        path = write(tmp_path / "in.parquet", {"id": ["a"], "text": ["S"], "pdf": [str(pdf)]})
        (record,) = flat(Source(make_spec(path, {"id": "id", "prompt": "text", "document": "pdf"})))
        assert json.loads(record.body or b"")["messages"][0]["content"][0]["type"] == "document"

    def test_overrides_from_columns(self, tmp_path: Path) -> None:
        """Override columns set each record's max_tokens."""
        path = write(tmp_path / "in.parquet", {"id": ["a", "b"], "text": ["x", "y"], "mt": [10, None]})
        spec = make_spec(path, {"id": "id", "prompt": "text", "overrides": {"max_tokens": "mt"}})
        assert [r.max_tokens for r in flat(Source(spec))] == [10, 1024]

    def test_ids_in_input_order(self, tmp_path: Path) -> None:
        """ids() gives all the input's ids as text in input order, whatever the limit."""
        write(tmp_path / "a.parquet", {"id": [5, 3], "text": ["a", "b"]})
        write(tmp_path / "b.parquet", {"id": [9], "text": ["c"]})
        assert Source(make_spec(tmp_path), limit=2).ids().to_pylist() == ["5", "3", "9"]
        assert Source(make_spec(tmp_path, {"prompt": "text"}), limit=2).ids().to_pylist() == ["0", "1", "2"]


class TestDemoData:
    def test_shape_and_determinism(self, tmp_path: Path) -> None:
        """The demo file has the documented columns and lengths, and the same seed gives the same rows."""
        a = pq.read_table(make_demo_dataset(tmp_path / "a.parquet", rows=300, seed=1))
        b = pq.read_table(make_demo_dataset(tmp_path / "b.parquet", rows=300, seed=1))
        assert a.column_names == ["id", "text", "audience", "team"]
        assert a.equals(b)
        assert a.column("id").to_pylist()[:2] == ["row-000001", "row-000002"]
        lengths = [len(t) for t in a.column("text").to_pylist()]
        assert min(lengths) >= MIN_CHARS
        assert max(lengths) <= MAX_CHARS
        assert set(a.column("audience").to_pylist()) == {"general", "expert"}

    def test_written_in_row_groups(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rows are generated and written one row group at a time (50,000 by default)."""
        assert demo_data.ROW_GROUP_ROWS == 50_000
        monkeypatch.setattr(demo_data, "ROW_GROUP_ROWS", 100)
        meta = pq.ParquetFile(make_demo_dataset(tmp_path / "d.parquet", rows=250)).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100, 100, 50]

    def test_no_temporary_file_left(self, tmp_path: Path) -> None:
        """The file is renamed into place, leaving nothing else in its directory."""
        make_demo_dataset(tmp_path / "d.parquet", rows=3)
        assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]

    def test_demo_job_reads_demo_data(self, tmp_path: Path) -> None:
        """jobs/demo.toml over the demo data yields one valid body per row with the team kept."""
        path = make_demo_dataset(tmp_path / "demo.parquet", rows=50)
        spec = load_spec(REPO / "jobs" / "demo.toml", {"job.input": str(path)})
        records = flat(Source(spec))
        assert len(records) == 50
        assert all(r.body is not None and r.keep["team"] for r in records)
        body = json.loads(records[0].body or b"")
        assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


class TestDamagedInput:
    def test_invalid_utf8_becomes_an_error_row(self, tmp_path: Path) -> None:
        """A prompt that is not valid UTF-8 makes its row an InvalidText error record; the others build."""
        data = prompts(6)
        data["text"] = text_with_invalid_utf8(data["text"], [4])
        records = flat(Source(make_spec(write(tmp_path / "in.parquet", data), batch_rows=4)))
        assert [r.id for r in records] == [f"r{i}" for i in range(6)]
        bad = records[4]
        assert (bad.body, bad.error_type) == (None, "InvalidText")
        assert "'text'" in str(bad.error_message) and "UTF-8" in str(bad.error_message)
        assert all(r.body is not None for r in records if r is not bad)

    def test_invalid_utf8_in_a_kept_column(self, tmp_path: Path) -> None:
        """A kept value that is not UTF-8 is an error row too, its kept value null, not a crash."""
        data = prompts(3)
        data["team"] = text_with_invalid_utf8(data["team"], [1])
        spec = make_spec(
            write(tmp_path / "in.parquet", data), {"id": "id", "prompt": "text", "keep": ["team"]}
        )
        records = flat(Source(spec))
        assert [r.error_type for r in records] == [None, "InvalidText", None]
        assert records[1].keep == {"team": None}

    def test_invalid_utf8_id_is_refused_at_open(self, tmp_path: Path) -> None:
        """Ids are the job's key: one that is not valid UTF-8 stops the job before any call."""
        data = prompts(5)
        data["id"] = text_with_invalid_utf8(data["id"], [3])
        with pytest.raises(SourceError, match=r"id column 'id' holds text that is not valid UTF-8 at row 3"):
            Source(make_spec(write(tmp_path / "in.parquet", data)))

    def test_corrupt_row_group_becomes_error_rows(self, tmp_path: Path) -> None:
        """A row group whose prompt pages are corrupt becomes UnreadableInput records (ids read again);
        the row groups before and after it build as usual, batches spanning the bad one included."""
        path = write(tmp_path / "in.parquet", prompts(300), row_group_size=100)
        corrupt_row_group(path, 1, "text")
        records = flat(Source(make_spec(path, batch_rows=64)))
        assert [r.id for r in records] == [f"r{i}" for i in range(300)]
        assert [r.index for r in records] == list(range(300))
        bad = [r for r in records if r.body is None]
        assert [r.id for r in bad] == [f"r{i}" for i in range(100, 200)]
        assert {r.error_type for r in bad} == {"UnreadableInput"}
        assert "row group 1" in str(bad[0].error_message)

    def test_unreadable_rows_that_have_a_result_keep_it(self, tmp_path: Path) -> None:
        """Rows of an unreadable row group that already have a result are not replaced by error rows."""
        path = write(tmp_path / "in.parquet", prompts(300), row_group_size=100)
        corrupt_row_group(path, 1, "text")
        source = Source(make_spec(path))
        records = [r for b in source.records(answered=lambda: set(range(100, 150))) for r in b]
        assert [r.index for r in records if r.body is None] == list(range(150, 200))
        assert len(records) == 250

    def test_corrupt_id_column_is_refused_at_open(self, tmp_path: Path) -> None:
        """The id column is read whole at open: a corrupt page there stops the job before any call."""
        path = write(tmp_path / "in.parquet", prompts(300), row_group_size=100)
        corrupt_row_group(path, 2, "id")
        with pytest.raises(SourceError, match="cannot read the input file"):
            Source(make_spec(path))

    def test_limit_holds_when_done_rows_skip_a_row_group(self, tmp_path: Path) -> None:
        """With --limit and a trusted resume that skips whole row groups, no row past the limit comes out."""
        path = write(tmp_path / "in.parquet", prompts(10), row_group_size=4)
        source = Source(make_spec(path), limit=6)
        records = [r for b in source.records(done_rows=set(range(4))) for r in b]
        assert [r.id for r in records] == ["r4", "r5"]
