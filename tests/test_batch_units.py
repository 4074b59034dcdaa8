"""The batch lane's pure parts, the S3 resolver, and the emulator's batch control plane.

Shard planning and output parsing are checked on their own (no server); the emulator's four job
operations are checked with a plain boto3 ``bedrock`` client against a loopback emulator whose S3 is
moto's server, so request shapes, status progression and Bedrock's output layout are all real.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from runner import storage
from runner.batch import (
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
from runner.batch_lane import BatchState, ShardState, lane_summary
from runner.emulator import ConfigError, EmulatorConfig, EmulatorThread
from runner.sink import INDEX_COLUMN
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


# -- the emulator's batch control plane -------------------------------------------------------------


@pytest.fixture(name="moto_url", scope="module")
def fixture_moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="batch_emu", scope="module")
def fixture_batch_emu(moto_url: str) -> Iterator[EmulatorThread]:
    config = EmulatorConfig.from_dict(
        {"batch": {"s3_endpoint_url": moto_url, "submitted_s": 0.2, "duration_s": 0.3}}
    )
    with EmulatorThread(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


def bedrock(url: str) -> Any:
    return boto3.client(
        "bedrock", endpoint_url=url, region_name="us-east-1", config=Config(retries={"total_max_attempts": 1})
    )


def create_args(bucket: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "jobName": name,
        "roleArn": ROLE,
        "modelId": HAIKU,
        "clientRequestToken": f"tok-{name}",
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/in/shard-00000.jsonl"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}},
        "timeoutDurationInHours": 24,
        **extra,
    }


def wait_for_status(client: Any, arn: str, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] == wanted or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


class TestEmulatorBatch:
    @pytest.fixture(name="bucket")
    def fixture_bucket(
        self, moto_url: str, batch_emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch
    ) -> str:
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        batch_emu.reset()
        name = f"eb-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        s3.create_bucket(Bucket=name)
        lines = [jsonl_line(record(i)) for i in range(5)]
        lines.append(b'{"recordId":"00000000099","modelInput":{"max_tokens":5}}\n')  # invalid body
        s3.put_object(Bucket=name, Key="in/shard-00000.jsonl", Body=b"".join(lines))
        return name

    def test_a_job_runs_and_writes_bedrocks_layout(
        self, batch_emu: EmulatorThread, moto_url: str, bucket: str
    ) -> None:
        """Submitted, then InProgress, then Completed with {out}/{job id}/{file}.out and the manifest."""
        client = bedrock(batch_emu.url)
        arn = client.create_model_invocation_job(**create_args(bucket, "layout"))["jobArn"]
        assert client.get_model_invocation_job(jobIdentifier=arn)["status"] == "Submitted"
        assert wait_for_status(client, arn, "InProgress")["status"] == "InProgress"
        job = wait_for_status(client, arn, "Completed")
        assert job["status"] == "Completed" and "endTime" in job
        job_id = arn.rsplit("/", 1)[-1]
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        out = s3.get_object(Bucket=bucket, Key=f"out/{job_id}/shard-00000.jsonl.out")["Body"].read()
        entries = [json.loads(line) for line in out.splitlines()]
        by_id = {e["recordId"]: e for e in entries}
        assert sorted(by_id) == [*(record_id(i) for i in range(5)), "00000000099"]
        assert by_id[record_id(2)]["modelOutput"]["usage"]["output_tokens"] > 0
        assert by_id["00000000099"]["error"]["errorCode"] == 400
        manifest = json.loads(
            s3.get_object(Bucket=bucket, Key=f"out/{job_id}/manifest.json.out")["Body"].read()
        )
        assert (
            manifest["totalRecordCount"],
            manifest["successRecordCount"],
            manifest["errorRecordCount"],
        ) == (6, 5, 1)

    def test_create_is_idempotent_on_the_token(self, batch_emu: EmulatorThread, bucket: str) -> None:
        """The same clientRequestToken answers the same job: two calls counted, one job made."""
        client = bedrock(batch_emu.url)
        first = client.create_model_invocation_job(**create_args(bucket, "idem"))["jobArn"]
        assert client.create_model_invocation_job(**create_args(bucket, "idem"))["jobArn"] == first
        counters = batch_emu.counters()
        assert counters["create_model_invocation_job"] == 2
        assert counters["batch"]["jobs_created"] == 1

    def test_list_finds_jobs_by_name(self, batch_emu: EmulatorThread, bucket: str) -> None:
        """ListModelInvocationJobs filters on nameContains and returns the tokens."""
        client = bedrock(batch_emu.url)
        client.create_model_invocation_job(**create_args(bucket, "alpha-00001"))
        client.create_model_invocation_job(**create_args(bucket, "beta-00001"))
        found = client.list_model_invocation_jobs(nameContains="alpha")["invocationJobSummaries"]
        assert [(j["jobName"], j["clientRequestToken"]) for j in found] == [
            ("alpha-00001", "tok-alpha-00001")
        ]

    def test_stop(self, batch_emu: EmulatorThread, bucket: str) -> None:
        """StopModelInvocationJob stops a running job; stopping it again is a ConflictException."""
        client = bedrock(batch_emu.url)
        arn = client.create_model_invocation_job(**create_args(bucket, "stopme"))["jobArn"]
        client.stop_model_invocation_job(jobIdentifier=arn)
        assert client.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopped"
        with pytest.raises(ClientError) as info:
            client.stop_model_invocation_job(jobIdentifier=arn)
        assert info.value.response["Error"]["Code"] == "ConflictException"

    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"roleArn": "not-a-role"}, "ValidationException"),
            ({"timeoutDurationInHours": 200}, "ValidationException"),
            ({"modelId": "anthropic.claude-nope"}, "ResourceNotFoundException"),
            ({"modelId": "eu.anthropic.claude-haiku-4-5-20251001-v1:0"}, "ResourceNotFoundException"),
        ],
    )
    def test_create_validates(
        self, batch_emu: EmulatorThread, bucket: str, change: dict[str, Any], code: str
    ) -> None:
        """A bad role, timeout or model is refused at create, as Bedrock does."""
        with pytest.raises(ClientError) as info:
            bedrock(batch_emu.url).create_model_invocation_job(**create_args(bucket, "bad", **change))
        assert info.value.response["Error"]["Code"] == code

    def test_record_errors_fault(self, batch_emu: EmulatorThread, bucket: str, moto_url: str) -> None:
        """[batch] record_errors turns the named records into error entries."""
        batch_emu.set_faults(
            {"batch": {"record_errors": [record_id(1)], "record_error_code": 424}}, merge=True
        )
        client = bedrock(batch_emu.url)
        arn = client.create_model_invocation_job(**create_args(bucket, "faulty"))["jobArn"]
        assert wait_for_status(client, arn, "Completed")["status"] == "Completed"
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        key = f"out/{arn.rsplit('/', 1)[-1]}/shard-00000.jsonl.out"
        entries = {
            e["recordId"]: e
            for e in map(json.loads, s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines())
        }
        assert entries[record_id(1)]["error"]["errorCode"] == 424
        assert "modelOutput" in entries[record_id(0)]


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

        class Stop(Exception):
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


# -- the lane's submit rules, with a scripted control plane ----------------------------------------


class FakeControl:
    """A control plane whose creates follow a script; every job ends Failed (its rows go on-demand)."""

    def __init__(self, creates: list[Exception | None], find: Exception | str | None = None) -> None:
        self.script = list(creates)
        self.find = find
        self.tokens: list[str] = []
        self.finds = 0

    async def create_job(self, shard: ShardState, *, role_arn: str, timeout_hours: int) -> str:
        self.tokens.append(shard.token)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{len(self.tokens):012d}"

    async def get_job(self, shard: ShardState) -> dict[str, Any]:
        return {"status": "Failed", "message": "scripted"}

    async def find_job(self, shard: ShardState) -> str | None:
        self.finds += 1
        if isinstance(self.find, Exception):
            raise self.find
        return self.find


class TestLaneSubmit:
    @pytest.fixture(name="lane_parts")
    def fixture_lane_parts(
        self, tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> dict[str, Any]:
        """Spec, source, job directory and sink of a 12-row batch job whose S3 is the moto server."""
        from runner.pool import Counters
        from runner.pricing import PriceTable
        from runner.routing import plan_routes
        from runner.sink import PartSink, part_schema
        from runner.source import Source
        from runner.spec import spec_from_dict
        from runner.state import JobDir

        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        bucket = f"ls-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=bucket)
        pq.write_table(
            pa.table({"id": [f"r{i}" for i in range(12)], "prompt": [f"p {i}" for i in range(12)]}),
            tmp_path / "in.parquet",
        )
        spec = spec_from_dict(
            {
                "job": {"input": str(tmp_path / "in.parquet"), "output": str(tmp_path / "out"),
                        "mode": "batch"},
                "model": {"id": "anthropic.claude-haiku-4-5-20251001-v1:0", "endpoints": ["us"]},
                "columns": {"id": "id", "prompt": "prompt"},
                "batch": {"role_arn": ROLE, "s3_uri": f"s3://{bucket}/b", "min_records": 5,
                          "max_records": 12, "poll_initial_s": 0.01, "poll_max_s": 0.02},
            }
        )  # fmt: skip
        source = Source(spec)
        job = JobDir(spec.job.output)
        job.create()
        sink = PartSink(
            job.parts, job.journal, schema=part_schema(source.keep_fields()), price_table="t",
            next_number=0, part_rows=100, part_seconds=60,
        )  # fmt: skip
        route = plan_routes(spec.model.id, region="us-east-1", endpoints=["us"])[0]
        return {"spec": spec, "source": source, "job": job, "sink": sink, "prices": PriceTable.load(),
                "route": route, "counters": Counters()}  # fmt: skip

    async def run_lane(self, parts: dict[str, Any], control: FakeControl) -> Any:
        from runner.batch_lane import BatchLane

        async def quick(seconds: float) -> None:
            import anyio

            await anyio.sleep(min(seconds, 0.01))

        lane = BatchLane(**parts, control=control, sleep=quick)
        return await lane.run(set())

    async def test_retryable_create_errors_reuse_the_token(self, lane_parts: dict[str, Any]) -> None:
        """Throttled creates are retried with the very same clientRequestToken."""
        from runner.errors import ThrottledError

        control = FakeControl([ThrottledError("slow down"), ThrottledError("slow down")])
        outcome = await self.run_lane(lane_parts, control)
        assert len(control.tokens) == 3 and len(set(control.tokens)) == 1
        assert (outcome.shards, outcome.to_on_demand) == (1, 12)

    async def test_a_refused_create_stops_the_run_and_is_remembered(self, lane_parts: dict[str, Any]) -> None:
        """AccessDenied on create is a BatchJobError; batch.json says a create went out, with no job."""
        from runner.batch_lane import BATCH_FILE
        from runner.errors import AccessDeniedError, BatchJobError

        with pytest.raises(BatchJobError, match="role_arn"):
            await self.run_lane(lane_parts, FakeControl([AccessDeniedError("no")]))
        shard = json.loads((lane_parts["job"].work / BATCH_FILE).read_text())["shards"][0]
        assert (shard["create_sent"], shard["job_arn"], shard["uploaded"]) == (True, None, True)

    async def test_a_rerun_looks_before_it_creates(self, lane_parts: dict[str, Any]) -> None:
        """After a create whose answer was lost, the rerun adopts the job the lookup finds."""
        from runner.errors import AccessDeniedError, BatchJobError

        with pytest.raises(BatchJobError):
            await self.run_lane(lane_parts, FakeControl([AccessDeniedError("no")]))
        arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefabcdef"
        control = FakeControl([], find=arn)
        await self.run_lane(lane_parts, control)
        assert (control.finds, control.tokens) == (1, [])

    async def test_a_failed_lookup_falls_back_to_the_same_token(self, lane_parts: dict[str, Any]) -> None:
        """When the lookup itself fails, the create is sent again with the same token (still safe)."""
        from runner.errors import AccessDeniedError, BatchJobError

        first = FakeControl([AccessDeniedError("no")])
        with pytest.raises(BatchJobError):
            await self.run_lane(lane_parts, first)
        second = FakeControl([], find=AccessDeniedError("no List permission"))
        await self.run_lane(lane_parts, second)
        assert second.tokens == first.tokens

    async def test_an_unsent_shard_whose_file_is_gone_is_planned_again(
        self, lane_parts: dict[str, Any]
    ) -> None:
        """A shard never uploaded whose local file vanished is forgotten, and its rows re-sharded."""
        from runner.batch import Shard, shard_name
        from runner.batch_lane import BATCH_FILE

        job = lane_parts["job"]
        ghost = ShardState(
            shard=Shard(number=0, records=12, bytes=1, sha256="0" * 64, first_index=0, last_index=11,
                        input_tokens=1, max_output_tokens=1),
            model_id=HAIKU, region="us-east-1", job_name="ghost", token="bb-ghost", input_uri="s3://x/y",
            output_uri="s3://x/z/",
        )  # fmt: skip
        (job.work / "batch").mkdir(parents=True, exist_ok=True)
        prefix = lane_parts["spec"].batch.s3_uri + "/ghost"
        BatchState(job_key="0123456789abcdef", prefix=prefix, shards=[ghost]).save(job.work / BATCH_FILE)
        assert not (job.work / "batch" / shard_name(0)).exists()
        control = FakeControl([])
        outcome = await self.run_lane(lane_parts, control)
        state = json.loads((job.work / BATCH_FILE).read_text())
        assert [s["shard"]["number"] for s in state["shards"]] == [0]
        assert state["shards"][0]["job_name"] != "ghost" and control.tokens != ["bb-ghost"]
        assert outcome.shards == 1
