"""The batch lane and S3 end to end: real S3 (moto's server on loopback), the emulator, real aioboto3.

A module-scoped moto ``ThreadedMotoServer`` on 127.0.0.1 plays S3; a module-scoped emulator reads
batch inputs from it and writes outputs to it, exactly as Bedrock would (``[batch] s3_endpoint_url``);
the runner reaches S3 through ``AWS_ENDPOINT_URL_S3`` and Bedrock through ``endpoint_url``. The
emulator's counters are the bill: ``create_model_invocation_job`` counts every create call and
``batch.jobs_created`` every job made, so "exactly one job per shard" is a number, not a hope.
"""

from __future__ import annotations

import json
import logging
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from runner.batch.state import BATCH_FILE
from runner.cli import main
from runner.emulator import EmulatorConfig, EmulatorThread
from runner.errors import SpecError
from runner.exit_codes import EXIT_INTERRUPTED, EXIT_OK
from runner.job import run_job, run_job_async
from runner.pricing import PriceTable
from runner.spec import JobSpec, spec_from_dict
from runner.types import Usage
from tests.helpers import (
    ids_for,
    make_spec,
    read_results,
    rows_by_id,
    spec_data,
    start_cli,
    stop_process,
    wait_until,
    write_prompts,
    write_spec,
    write_table,
)

ROLE_ARN = "arn:aws:iam::123456789012:role/bedrock-batch-inference"
BATCH_TIMING = {"submitted_s": 0.1, "duration_s": 0.6}


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(name="s3_url", scope="module")
def fixture_s3_url() -> Iterator[str]:
    """moto's S3 server on loopback and a free port, for the whole module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="bucket")
def fixture_bucket(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the runner's S3 calls go to the loopback server through the SDK variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    name = f"bb-{uuid.uuid4().hex[:12]}"
    s3_client(s3_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(name="batch_emulator", scope="module")
def fixture_batch_emulator(s3_url: str) -> Iterator[EmulatorThread]:
    config = EmulatorConfig.from_dict({"batch": {"s3_endpoint_url": s3_url, **BATCH_TIMING}})
    with EmulatorThread(config, host="127.0.0.1", port=0) as emulator:
        yield emulator


@pytest.fixture(name="bemu")
def fixture_bemu(batch_emulator: EmulatorThread) -> Iterator[EmulatorThread]:
    """The module's batch-capable emulator, reset (jobs, counters, faults) around each test."""
    batch_emulator.reset()
    yield batch_emulator
    batch_emulator.reset()


def s3_client(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


def batch_data(source: Path | str, out: Path, endpoint_url: str, bucket: str, **batch: Any) -> dict[str, Any]:
    """A batch-mode spec: small shards, fast polling, the us. route."""
    data = spec_data(
        Path(source),
        out,
        endpoint_url,
        job={"name": "bt", "mode": "batch"},
        model={"endpoints": ["us"]},
        columns={"keep": ["team"]},
    )
    data["job"]["input"] = str(source)
    data["batch"] = {
        "role_arn": ROLE_ARN,
        "s3_uri": f"s3://{bucket}/batch",
        "min_records": 10,
        "max_records": 40,
        "poll_initial_s": 0.1,
        "poll_max_s": 0.3,
        **batch,
    }
    return data


def batch_spec(tmp_path: Path, emu: EmulatorThread, bucket: str, n: int, **batch: Any) -> JobSpec:
    source = write_prompts(tmp_path / "in.parquet", n, team=[["a", "b", "c"][i % 3] for i in range(n)])
    return make_spec(tmp_path, batch_data(source, tmp_path / "out", emu.url, bucket, **batch))


def lanes(job_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lane in read_results(job_dir).column("lane").to_pylist():
        counts[lane] = counts.get(lane, 0) + 1
    return counts


def batch_state(job_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((job_dir / "_job" / BATCH_FILE).read_text())
    return data


# -- the lane ---------------------------------------------------------------------------------------


class TestBatchJob:
    def test_every_row_is_served_by_batch_jobs(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """100 rows in shards of at most 40 become three batch jobs and 100 batch result rows."""
        report = run_job(batch_spec(tmp_path, bemu, bucket, 100), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        results = read_results(tmp_path / "out")
        assert results.column("id").to_pylist() == ids_for(100)
        assert set(results.column("status").to_pylist()) == {"ok"}
        assert lanes(tmp_path / "out") == {"batch": 100}
        counters = bemu.counters()
        assert counters["create_model_invocation_job"] == 3
        assert counters["batch"]["jobs_created"] == 3
        assert counters["batch"]["records"] == {"ok": 100, "error": 0}
        assert counters["billed_requests"] == 0  # nothing went on-demand
        shards = batch_state(tmp_path / "out")["shards"]
        assert [s["shard"]["records"] for s in shards] == [40, 40, 20]

    def test_rows_are_priced_at_the_batch_rate(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """Every batch row's cost is the batch lane's price of its tokens (half of on-demand)."""
        run_job(batch_spec(tmp_path, bemu, bucket, 20, max_records=20), handle_signals=False, progress=False)
        prices = PriceTable.load()
        for row in read_results(tmp_path / "out").to_pylist():
            usage = Usage(row["input_tokens"], row["output_tokens"])
            assert row["cost_usd"] == pytest.approx(prices.cost(row["model_id"], usage, lane="batch"))
            assert row["cost_usd"] == pytest.approx(prices.cost(row["model_id"], usage) / 2)
            assert row["output_tokens"] > 0

    def test_results_have_the_on_demand_shape(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """A batch job's results.parquet has the on-demand schema, and the same answers and tokens."""
        spec = batch_spec(tmp_path, bemu, bucket, 30)
        run_job(spec, handle_signals=False, progress=False)
        raw = spec.to_dict()
        raw["job"].update(mode="on_demand", output=str(tmp_path / "od"))
        run_job(spec_from_dict(raw, source=spec.source), handle_signals=False, progress=False)
        batch, on_demand = read_results(tmp_path / "out"), read_results(tmp_path / "od")
        assert batch.schema == on_demand.schema
        same = (
            "id",
            "status",
            "completion",
            "stop_reason",
            "input_tokens",
            "output_tokens",
            "model_id",
            "team",
        )
        assert batch.select(list(same)).to_pylist() == on_demand.select(list(same)).to_pylist()
        assert set(on_demand.column("lane").to_pylist()) == {"on_demand"}

    def test_tool_use_is_kept_in_both_lanes(self, bemu: EmulatorThread, bucket: str, tmp_path: Path) -> None:
        """A forced tool's answer: the batch lane keeps content and tool_input exactly as on-demand does,
        and an integer id keeps its type in both."""
        tool = {
            "name": "record",
            "input_schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
            },
        }
        ids = pa.array(range(100, 130), pa.int64())
        source = write_table(
            tmp_path / "in.parquet",
            {"rid": ids, "prompt": [f"Row {i}" for i in range(30)], "team": ["x"] * 30},
        )
        data = batch_data(source, tmp_path / "out", bemu.url, bucket)
        data["columns"]["id"] = "rid"
        data["request"] = {"max_tokens": 64, "extra": {"tools": [tool], "tool_choice": {"type": "any"}}}
        spec = make_spec(tmp_path, data)
        run_job(spec, handle_signals=False, progress=False)
        raw = spec.to_dict()
        raw["job"].update(mode="on_demand", output=str(tmp_path / "od"))
        run_job(spec_from_dict(raw, source=spec.source), handle_signals=False, progress=False)
        batch, on_demand = read_results(tmp_path / "out"), read_results(tmp_path / "od")
        assert set(batch.column("lane").to_pylist()) == {"batch"}
        same = ["id", "tool_input", "stop_reason"]
        assert batch.select(same).to_pylist() == on_demand.select(same).to_pylist()

        def blocks(table: pa.Table) -> list[Any]:  # the tool_use ids are each answer's own
            return [[{**b, "id": None} for b in json.loads(c)] for c in table.column("content").to_pylist()]

        assert blocks(batch) == blocks(on_demand)
        assert batch.schema.field("id").type == pa.int64()
        for row in batch.to_pylist():
            assert json.loads(row["tool_input"])["label"] in ("a", "b")
            assert json.loads(row["content"])[0]["type"] == "tool_use"

    def test_remainder_below_min_records_runs_on_demand(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """25 rows in shards of 10 (at least 10): two batch jobs, and the last 5 rows on-demand."""
        spec = batch_spec(tmp_path, bemu, bucket, 25, max_records=10)
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        by_id = rows_by_id(tmp_path / "out")
        assert len(by_id) == 25
        assert [by_id[i]["lane"] for i in ids_for(25)] == ["batch"] * 20 + ["on_demand"] * 5
        counters = bemu.counters()
        assert counters["batch"]["jobs_created"] == 2
        assert counters["billed_requests"] == 5

    def test_too_few_rows_for_any_batch_job(self, bemu: EmulatorThread, bucket: str, tmp_path: Path) -> None:
        """Fewer rows than min_records: no batch job at all, every row on-demand."""
        report = run_job(batch_spec(tmp_path, bemu, bucket, 6), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert lanes(tmp_path / "out") == {"on_demand": 6}
        assert bemu.counters()["create_model_invocation_job"] == 0

    def test_records_failed_in_the_batch_finish_on_demand(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """Records a batch job answers with an error are run on-demand, once, and end ok."""
        bemu.set_faults({"batch": {"record_errors": ["00000000003", "00000000017"]}}, merge=True)
        report = run_job(batch_spec(tmp_path, bemu, bucket, 30), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        by_id = rows_by_id(tmp_path / "out")
        failed = {ids_for(30)[3], ids_for(30)[17]}
        assert {i for i, row in by_id.items() if row["lane"] == "on_demand"} == failed
        assert all(row["status"] == "ok" for row in by_id.values())
        counters = bemu.counters()
        assert counters["billed_requests"] == 2
        assert set(counters["bodies"].values()) == {1}
        assert batch_state(tmp_path / "out")["shards"][0]["errors"] == 2

    def test_a_failed_job_sends_its_rows_on_demand(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """A batch job that ends Failed writes nothing; all its rows are finished on-demand."""
        bemu.set_faults({"batch": {"end_status": "Failed"}}, merge=True)
        report = run_job(batch_spec(tmp_path, bemu, bucket, 12), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert lanes(tmp_path / "out") == {"on_demand": 12}
        shard = batch_state(tmp_path / "out")["shards"][0]
        assert (shard["status"], shard["missing"]) == ("Failed", 12)

    def test_a_full_job_quota_waits_for_a_slot(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """With one job allowed at a time, shards are submitted one after another; none is lost."""
        bemu.set_faults({"batch": {"max_jobs": 1, "duration_s": 0.2}}, merge=True)
        report = run_job(
            batch_spec(tmp_path, bemu, bucket, 30, max_records=10), handle_signals=False, progress=False
        )
        assert report.exit_code == EXIT_OK
        assert lanes(tmp_path / "out") == {"batch": 30}
        counters = bemu.counters()
        assert counters["batch"]["jobs_created"] == 3
        assert counters["create_model_invocation_job"] > 3  # the refused creates, tried again later

    def test_the_cost_cap_holds_back_shards(self, bemu: EmulatorThread, bucket: str, tmp_path: Path) -> None:
        """A shard whose worst case would pass max_cost_usd is not submitted, and nothing runs on-demand."""
        spec = batch_spec(tmp_path, bemu, bucket, 20)
        raw = spec.to_dict()
        raw["limits"]["max_cost_usd"] = 0.0001
        report = run_job(spec_from_dict(raw, source=spec.source), handle_signals=False, progress=False)
        assert report.stopped == "max_cost_usd reached"
        assert report.progress.pending == 20
        counters = bemu.counters()
        assert counters["create_model_invocation_job"] == 0
        assert counters["billed_requests"] == 0

    def test_status_shows_both_lanes(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`status --json` counts rows per lane and the batch jobs by state."""
        run_job(batch_spec(tmp_path, bemu, bucket, 15, max_records=10), handle_signals=False, progress=False)
        capsys.readouterr()
        assert main(["status", str(tmp_path / "out"), "--json"]) == EXIT_OK
        info = json.loads(capsys.readouterr().out)
        assert info["lanes"] == {"on_demand": 5, "batch": 10}
        assert info["batch"]["jobs"] == {"collected": 1}
        assert info["batch"]["in_flight_records"] == 0


class TestRestart:
    def test_a_killed_runner_reattaches_instead_of_resubmitting(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """SIGKILL while jobs run; the rerun polls the same jobs: one create call and one job per shard."""
        bemu.set_faults({"batch": {"duration_s": 2.5}}, merge=True)
        source = write_prompts(tmp_path / "in.parquet", 50, team=["x"] * 50)
        spec_path = write_spec(tmp_path / "job.toml", batch_data(source, tmp_path / "out", bemu.url, bucket))
        state_file = tmp_path / "out" / "_job" / BATCH_FILE

        def all_submitted() -> bool:
            try:
                shards = json.loads(state_file.read_text())["shards"]
            except (FileNotFoundError, ValueError):
                return False
            return bool(shards) and all(s["job_arn"] for s in shards)

        proc = start_cli(["run", str(spec_path), "--no-progress"], cwd=tmp_path, log=tmp_path / "run.log")
        try:
            wait_until(all_submitted, timeout=30, what="every shard to be submitted")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert not (tmp_path / "out" / "results.parquet").exists()  # killed before anything came back
        assert bemu.counters()["batch"]["jobs_created"] == 2

        spec = make_spec(tmp_path, batch_data(source, tmp_path / "out", bemu.url, bucket))
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert lanes(tmp_path / "out") == {"batch": 50}
        assert len(rows_by_id(tmp_path / "out")) == 50
        counters = bemu.counters()
        assert counters["create_model_invocation_job"] == 2
        assert counters["batch"]["jobs_created"] == 2
        assert counters["billed_requests"] == 0

    def test_ctrl_c_leaves_jobs_running_and_rows_unpaid(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """SIGINT while jobs run exits 130 without sending their rows on-demand; the rerun collects them."""
        bemu.set_faults({"batch": {"duration_s": 2.0}}, merge=True)
        source = write_prompts(tmp_path / "in.parquet", 30, team=["x"] * 30)
        data = batch_data(source, tmp_path / "out", bemu.url, bucket)
        spec_path = write_spec(tmp_path / "job.toml", data)
        state_file = tmp_path / "out" / "_job" / BATCH_FILE

        def submitted() -> bool:
            try:
                shards = json.loads(state_file.read_text())["shards"]
            except (FileNotFoundError, ValueError):
                return False
            return bool(shards) and all(s["job_arn"] for s in shards)

        proc = start_cli(["run", str(spec_path), "--no-progress"], cwd=tmp_path, log=tmp_path / "run.log")
        wait_until(submitted, timeout=30, what="the shard to be submitted")
        assert stop_process(proc, signal.SIGINT) == EXIT_INTERRUPTED
        assert bemu.counters()["billed_requests"] == 0
        report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert lanes(tmp_path / "out") == {"batch": 30}
        assert bemu.counters()["create_model_invocation_job"] == 1

    async def test_a_lost_create_answer_is_found_not_created_again(
        self, bemu: EmulatorThread, bucket: str, tmp_path: Path
    ) -> None:
        """A shard whose create went out but whose jobArn was never saved is found by name and token."""
        bemu.set_faults({"batch": {"duration_s": 1.5}}, merge=True)
        spec = batch_spec(tmp_path, bemu, bucket, 20, max_records=20)
        state_file = tmp_path / "out" / "_job" / BATCH_FILE

        def submitted() -> bool:
            try:
                return bool(json.loads(state_file.read_text())["shards"][0]["job_arn"])
            except (FileNotFoundError, ValueError, IndexError):
                return False

        with anyio.move_on_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run_job_async(spec, handle_signals=False, progress=False))
                for _ in range(1500):  # up to 30 s
                    if submitted():
                        break
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()  # the runner stops with the job in flight
        state = json.loads(state_file.read_text())
        state["shards"][0].update(job_arn=None, status=None)  # as if the create's answer was lost
        state_file.write_text(json.dumps(state))

        report = await run_job_async(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert lanes(tmp_path / "out") == {"batch": 20}
        counters = bemu.counters()
        assert counters["create_model_invocation_job"] == 1
        assert counters["batch"]["jobs_created"] == 1


# -- S3 input and output ----------------------------------------------------------------------------


def upload_parquet(url: str, bucket: str, key: str, table: pa.Table, tmp_path: Path) -> None:
    local = tmp_path / key.replace("/", "_")
    pq.write_table(table, local)
    s3_client(url).upload_file(str(local), bucket, key)


class TestS3:
    def test_an_on_demand_job_reads_its_input_from_s3(
        self, emu: EmulatorThread, s3_url: str, bucket: str, tmp_path: Path
    ) -> None:
        """An s3:// directory of Parquet files is read in name order, as a local one would be."""
        ids = ids_for(30)
        for n, part in enumerate((ids[:20], ids[20:])):
            table = pa.table({"id": part, "prompt": [f"About {i}" for i in part]})
            upload_parquet(s3_url, bucket, f"in/part-{n}.parquet", table, tmp_path)
        s3_client(s3_url).put_object(Bucket=bucket, Key="in/_SUCCESS", Body=b"")
        spec = make_spec(
            tmp_path,
            spec_data(Path("unused"), tmp_path / "out", emu.url, job={"input": f"s3://{bucket}/in/"}),
        )
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids

    def test_results_are_uploaded_to_the_output_uri(
        self, emu: EmulatorThread, s3_url: str, bucket: str, tmp_path: Path
    ) -> None:
        """With [output] s3_uri, the finished results.parquet is also at {s3_uri}/results.parquet."""
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(source, tmp_path / "out", emu.url, output={"s3_uri": f"s3://{bucket}/results/run1"})
        run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        body = s3_client(s3_url).get_object(Bucket=bucket, Key="results/run1/results.parquet")["Body"].read()
        assert body == (tmp_path / "out" / "results.parquet").read_bytes()

    def test_a_missing_s3_input_is_named(self, emu: EmulatorThread, bucket: str, tmp_path: Path) -> None:
        """An s3:// input that does not exist stops the job before any call, naming the URI."""
        from runner.errors import SourceError

        spec = make_spec(
            tmp_path,
            spec_data(Path("x"), tmp_path / "out", emu.url, job={"input": f"s3://{bucket}/nope.parquet"}),
        )
        with pytest.raises(SourceError, match=r"nope\.parquet"):
            run_job(spec, handle_signals=False, progress=False)
        assert emu.counters()["total_requests"] == 0

    def test_the_job_directory_cannot_be_in_s3(self, tmp_path: Path) -> None:
        """[job] output = s3://... is refused with the key that does what was meant."""
        data = spec_data(tmp_path / "in.parquet", tmp_path / "out", "http://127.0.0.1:9")
        data["job"]["output"] = "s3://bucket/out"
        with pytest.raises(SpecError, match=r"\[output\] `s3_uri`"):
            spec_from_dict(data)


class TestEmulate:
    def test_emulate_runs_batch_jobs_on_the_local_s3(self, bucket: str, tmp_path: Path) -> None:
        """`run --emulate --batch` gives the built-in emulator the runner's S3 endpoint: jobs really run."""
        source = write_prompts(tmp_path / "in.parquet", 12, team=["x"] * 12)
        data = batch_data(source, tmp_path / "out", "http://127.0.0.1:9", bucket)
        data["job"]["mode"] = "on_demand"  # --batch switches it
        spec_path = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec_path), "--emulate", "--batch", "--no-progress"]) == EXIT_OK
        assert lanes(tmp_path / "out-emulated") == {"emulated_batch": 12}
        assert not (tmp_path / "out").exists()

    def test_emulate_batch_without_s3_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without an S3 endpoint the emulator could never run the jobs: refused at once."""
        source = write_prompts(tmp_path / "in.parquet", 12, team=["x"] * 12)
        data = batch_data(source, tmp_path / "out", "http://127.0.0.1:9", "no-bucket")
        assert main(["run", str(write_spec(tmp_path / "job.toml", data)), "--emulate"]) == 2
        assert "AWS_ENDPOINT_URL_S3" in capsys.readouterr().err
