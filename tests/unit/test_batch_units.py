"""The batch lane's pure parts: record ids, shard planning, names, output lines, lane state, the S3
resolver, and the batch settings of the spec and the emulator (no server)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import storage
from runner.batch.shards import (
    Manifest,
    client_request_token,
    job_name,
    jsonl_line,
    output_name,
    parse_output_line,
    plan_shards,
    record_id,
    record_index,
)
from runner.batch.state import BatchState, ShardState, lane_summary
from runner.emulator import ConfigError, EmulatorConfig
from runner.schemas import INDEX_COLUMN
from runner.types import Record

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"


def body(i: int, *, pad: int = 0) -> bytes:
    data = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": f"item {i}" + "x" * pad}],
    }
    return json.dumps(data, separators=(",", ":")).encode()


def record(i: int, *, pad: int = 0, bad: bool = False) -> Record:
    return Record(
        index=i,
        id=f"r{i}",
        key=1000 + i,
        body=None if bad else body(i, pad=pad),
        max_tokens=16,
        estimated_input_tokens=3,
        error_type="RowError" if bad else None,
        keep={"team": f"t{i % 2}"},
    )


def plan(tmp_path: Path, records: list[Record], **limits: int) -> list[Any]:
    settings = {"min_records": 2, "max_records": 4, "max_bytes": 10_000, **limits}
    return list(
        plan_shards(
            [records],
            tmp_path,
            first_number=0,
            min_records=settings["min_records"],
            max_records=settings["max_records"],
            max_bytes=settings["max_bytes"],
            keep_fields=[pa.field("team", pa.string())],
        )
    )


class TestRecordIds:
    def test_round_trip(self) -> None:
        """A recordId is the input position in eleven digits, and reads back as it."""
        assert record_id(42) == "00000000042"
        assert record_index(record_id(123_456)) == 123_456

    def test_foreign_ids_are_refused(self) -> None:
        """A recordId the runner did not write is a ValueError, not a wrong row."""
        with pytest.raises(ValueError):
            record_index("abc")

    def test_line_carries_the_body_unchanged(self) -> None:
        """A JSONL line is {recordId, modelInput} with the exact InvokeModel body."""
        line = jsonl_line(record(7))
        assert line.endswith(b"\n")
        assert json.loads(line) == {"recordId": "00000000007", "modelInput": json.loads(body(7))}


class TestPlanning:
    def test_shards_split_at_max_records(self, tmp_path: Path) -> None:
        """Ten records in shards of at most four: 4, 4 and a last shard of 2."""
        shards = plan(tmp_path, [record(i) for i in range(10)])
        assert [s.records for s in shards] == [4, 4, 2]
        assert [(s.first_index, s.last_index) for s in shards] == [(0, 3), (4, 7), (8, 9)]
        lines = (tmp_path / shards[1].file).read_bytes().splitlines()
        assert [json.loads(x)["recordId"] for x in lines] == [record_id(i) for i in range(4, 8)]

    def test_short_remainder_is_left_for_on_demand(self, tmp_path: Path) -> None:
        """A last shard below min_records is deleted; its rows are in no shard."""
        shards = plan(tmp_path, [record(i) for i in range(9)], min_records=3)
        assert [s.records for s in shards] == [4, 4]
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "shard-00000.jsonl",
            "shard-00000.rows.parquet",
            "shard-00001.jsonl",
            "shard-00001.rows.parquet",
        ]

    def test_shards_split_at_max_bytes(self, tmp_path: Path) -> None:
        """A shard closes before the line that would take it past max_shard_bytes."""
        line = len(jsonl_line(record(0, pad=100)))
        shards = plan(
            tmp_path, [record(i, pad=100) for i in range(6)], max_bytes=line * 3 + 5, max_records=100
        )
        assert [s.records for s in shards] == [3, 3]
        assert all(s.bytes <= line * 3 + 5 for s in shards)

    def test_rows_without_a_body_or_too_large_are_skipped(self, tmp_path: Path) -> None:
        """Bad rows and rows larger than a whole shard stay out of every shard."""
        records = [record(0), record(1, bad=True), record(2, pad=500), record(3), record(4)]
        shards = plan(tmp_path, records, max_bytes=450)
        rows = pq.read_table(tmp_path / shards[0].rows_file)
        assert rows.column(INDEX_COLUMN).to_pylist() == [0, 3, 4]

    def test_rows_file_keeps_what_results_need(self, tmp_path: Path) -> None:
        """The rows file holds position, id, resume key and kept columns of each line."""
        shards = plan(tmp_path, [record(i) for i in range(3)])
        rows = pq.read_table(tmp_path / shards[0].rows_file).to_pylist()
        assert rows[1] == {INDEX_COLUMN: 1, "id": "r1", "request_key": 1001, "team": "t1"}

    def test_shard_hash_and_token_follow_the_content(self, tmp_path: Path) -> None:
        """The same records give the same hash and token; other records another."""
        for name in "abc":
            (tmp_path / name).mkdir()
        a = plan(tmp_path / "a", [record(i) for i in range(3)])
        b = plan(tmp_path / "b", [record(i) for i in range(3)])
        c = plan(tmp_path / "c", [record(i) for i in range(1, 4)])
        assert a[0].sha256 == b[0].sha256 != c[0].sha256
        assert client_request_token("k", 0, a[0].sha256) == client_request_token("k", 0, b[0].sha256)
        assert client_request_token("k", 0, a[0].sha256) != client_request_token("k", 0, c[0].sha256)


def _pattern(shape: str) -> re.Pattern[str]:
    model = botocore.session.get_session().get_service_model("bedrock")
    return re.compile(model.shape_for(shape).metadata["pattern"])


class TestNames:
    def test_token_matches_bedrocks_pattern(self) -> None:
        """clientRequestToken fits botocore's ModelInvocationIdempotencyToken shape."""
        token = client_request_token("0123456789abcdef", 12, "ab" * 32)
        assert _pattern("ModelInvocationIdempotencyToken").fullmatch(token)
        assert len(token) <= 256

    @pytest.mark.parametrize("name", ["demo", "My job: v2 (final)!", "_x_", "é" * 80])
    def test_job_name_matches_bedrocks_pattern(self, name: str) -> None:
        """jobName fits botocore's ModelInvocationJobName shape whatever the spec's name."""
        value = job_name(name, "0123456789abcdef", 99999)
        assert _pattern("ModelInvocationJobName").fullmatch(value)
        assert len(value) <= 63

    def test_output_name(self) -> None:
        """Bedrock's output file is the input file's name plus .out."""
        assert output_name("shard-00003.jsonl") == "shard-00003.jsonl.out"


class TestOutputLines:
    def test_answer(self) -> None:
        """A modelOutput line gives the text, stop reason and usage."""
        line = json.dumps(
            {
                "recordId": "00000000005",
                "modelInput": {},
                "modelOutput": {
                    "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 1},
                },
            }
        ).encode()
        out = parse_output_line(line)
        assert out.ok and out.index == 5 and out.text == "hi!" and out.stop_reason == "end_turn"
        assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.cache_read_input_tokens) == (
            4,
            2,
            1,
        )

    def test_error(self) -> None:
        """An error line is a failed record with Bedrock's code and message."""
        line = b'{"recordId":"00000000001","modelInput":{},"error":{"errorCode":400,"errorMessage":"bad"}}'
        out = parse_output_line(line)
        assert (out.ok, out.error_code, out.error_message) == (False, "400", "bad")

    def test_output_that_is_not_a_messages_response(self) -> None:
        """A modelOutput without content is the row's error, not a crash."""
        out = parse_output_line(b'{"recordId":"00000000001","modelOutput":{"oops":1}}')
        assert out.error_code == "MalformedOutput"

    @pytest.mark.parametrize("line", [b"not json", b"[1]", b'{"modelOutput":{}}', b'{"recordId":"x1"}'])
    def test_unreadable_lines(self, line: bytes) -> None:
        """Lines the runner cannot map to a row are ValueErrors (the row then runs on-demand)."""
        with pytest.raises(ValueError):
            parse_output_line(line)

    def test_manifest_is_tolerant(self) -> None:
        """The manifest's counts are read when there, zero when missing or odd."""
        m = Manifest.parse(b'{"totalRecordCount": 5, "successRecordCount": 4, "errorRecordCount": "x"}')
        assert (m.total_records, m.success_records, m.error_records) == (5, 4, 0)
        assert Manifest.parse(b"garbage") == Manifest()


class TestBatchState:
    def test_round_trip_and_summary(self, tmp_path: Path) -> None:
        """batch.json holds every shard field, and status summarises it by state."""
        shard = plan(tmp_path, [record(i) for i in range(3)])[0]
        s = ShardState(
            shard=shard, model_id=HAIKU, region="us-east-1", job_name="j-1", token="t",
            input_uri="s3://b/in", output_uri="s3://b/out/", job_arn="arn:x", status="InProgress",
        )  # fmt: skip
        BatchState(job_key="k", prefix="s3://b/p", shards=[s]).save(tmp_path / "batch.json")
        loaded = BatchState.load(tmp_path / "batch.json")
        assert loaded is not None and loaded.shards[0].to_dict() == s.to_dict()
        summary = lane_summary(tmp_path)
        assert summary is not None
        assert summary["jobs"] == {"InProgress": 1} and summary["in_flight_records"] == 3


class TestStorage:
    def test_endpoint_variables_in_sdk_order(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL; neither means AWS itself."""
        assert storage.s3_endpoint_url() is None
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        assert storage.s3_endpoint_url() == "http://127.0.0.1:1"
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
        assert storage.s3_endpoint_url() == "http://127.0.0.1:2"

    def test_join_and_split(self) -> None:
        """URIs join with one slash and split into bucket and key."""
        assert storage.join("s3://b/p/", "x", "/y.jsonl") == "s3://b/p/x/y.jsonl"
        assert storage.split_s3("s3://b/p/x") == ("b", "p/x")
        with pytest.raises(ValueError):
            storage.split_s3("s3:///key")

    def test_local_paths_stay_local(self, tmp_path: Path) -> None:
        """A plain path resolves to the local filesystem and its absolute path."""
        fs, path = storage.filesystem_for(str(tmp_path))
        assert fs.type_name == "local" and path == str(tmp_path)


class TestEmulatorBatchConfig:
    def test_round_trip(self) -> None:
        """[batch] survives to_dict / from_dict."""
        config = EmulatorConfig.from_dict(
            {"batch": {"s3_endpoint_url": "http://127.0.0.1:9", "record_errors": ["1"]}}
        )
        assert EmulatorConfig.from_dict(config.to_dict()) == config

    @pytest.mark.parametrize(
        ("batch", "message"),
        [
            ({"s3_endpoint_url": "ftp://x"}, "s3_endpoint_url"),
            ({"duration_s": -1}, "duration_s"),
            ({"end_status": "Done"}, "end_status"),
            ({"record_errors": [1]}, "record_errors"),
            ({"colour": "red"}, "unknown key"),
        ],
    )
    def test_bad_settings_are_named(self, batch: dict[str, Any], message: str) -> None:
        """A bad [batch] setting is a ConfigError naming the key."""
        with pytest.raises(ConfigError, match=message):
            EmulatorConfig.from_dict({"batch": batch})


class TestSpecAndFlag:
    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"job": {"mode": "batch"}}, "needs \\[batch\\] `role_arn`"),
            ({"job": {"output": "s3://b/out"}}, "local job directory"),
            ({"output": {"s3_uri": "/tmp/x"}}, "must start with s3://"),
            ({"batch": {"min_records": 10, "max_records": 5}}, "min_records"),
            ({"batch": {"poll_initial_s": 10, "poll_max_s": 1}}, "poll_initial_s"),
            ({"batch": {"max_shard_bytes": 0}}, "max_shard_bytes"),
            ({"batch": {"timeout_hours": 12}}, "timeout_hours"),
        ],
    )
    def test_bad_batch_and_s3_settings_are_named(self, change: dict[str, Any], message: str) -> None:
        """Each batch or S3 mistake is a SpecError naming the key."""
        from runner.errors import SpecError
        from runner.spec import spec_from_dict

        data: dict[str, Any] = {
            "job": {"input": "in.parquet", "output": "out"},
            "model": {"id": "anthropic.claude-haiku-4-5-20251001-v1:0"},
            "columns": {"prompt": "prompt"},
        }
        for section, values in change.items():
            data.setdefault(section, {}).update(values)
        with pytest.raises(SpecError, match=message):
            spec_from_dict(data)

    def test_batch_flag_sets_the_mode(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`run --batch` runs the spec with [job] mode = "batch"."""
        from runner.cli import main
        from runner.cli import run as run_module
        from runner.spec import JobSpec

        seen: list[JobSpec] = []

        class Stop(BaseException):  # not an Exception: `run` reports those as internal errors (exit 3)
            pass

        def fake_run_job(spec: JobSpec, **kwargs: Any) -> Any:
            seen.append(spec)
            raise Stop

        monkeypatch.setattr(run_module, "run_job", fake_run_job)
        spec_file = tmp_path / "job.toml"
        spec_file.write_text(
            '[job]\ninput = "in.parquet"\noutput = "out"\n'
            '[model]\nid = "anthropic.claude-haiku-4-5-20251001-v1:0"\n[columns]\nprompt = "p"\n'
            f'[batch]\nrole_arn = "{ROLE}"\ns3_uri = "s3://b/p"\n'
        )
        with pytest.raises(Stop):
            main(["run", str(spec_file), "--batch"])
        assert seen[0].job.mode == "batch"
