"""The emulator's batch control plane and the lane's submit rules, against a loopback S3 (moto's server).

The emulator's four job operations are checked with a plain boto3 ``bedrock`` client against a loopback
emulator whose S3 is moto's server, so request shapes, status progression and Bedrock's output layout
are all real; the lane's submit rules run with a scripted control plane.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from runner.batch.shards import (
    record_id,
)
from runner.batch.state import BatchState, ShardState
from runner.bedrock import BatchJob
from runner.emulator import EmulatorConfig, EmulatorThread

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"


def input_line(i: int) -> bytes:
    """One JSONL input line of a 16-token request, as the lane writes them."""
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": f"item {i}"}],
    }
    return json.dumps({"recordId": record_id(i), "modelInput": body}).encode() + b"\n"


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
        lines = [input_line(i) for i in range(5)]
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


# -- the lane's submit rules, with a scripted control plane ----------------------------------------


class FakeControl:
    """A control plane whose creates follow a script; every job ends Failed (its rows go on-demand)."""

    def __init__(self, creates: list[Exception | None], find: Exception | str | None = None) -> None:
        self.script = list(creates)
        self.find = find
        self.tokens: list[str] = []
        self.finds = 0

    async def create_job(self, shard: BatchJob, *, role_arn: str, timeout_hours: int) -> str:
        self.tokens.append(shard.token)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{len(self.tokens):012d}"

    async def get_job(self, shard: BatchJob) -> dict[str, Any]:
        return {"status": "Failed", "message": "scripted"}

    async def find_job(self, shard: BatchJob) -> str | None:
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
        from runner.batch.lane import BatchLane

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
        from runner.batch.state import BATCH_FILE
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
        from runner.batch.shards import Shard, shard_name
        from runner.batch.state import BATCH_FILE

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
