"""``run_job`` end to end with the real aioboto3 client against the emulator over loopback HTTP.

The results contract (one row per input row, in input order, every DESIGN.md column), ``status`` and
``stats --json`` on the finished job, bad rows that become error rows while the job goes on, and
throttling storms retried to success. Nothing of ours is mocked; the emulator's counters are the
bill the results are checked against.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_OK, EXIT_ROWS_FAILED
from runner.job import run_job
from tests.helpers import (
    GLOBAL_HAIKU,
    RESULT_COLUMNS,
    US_HAIKU,
    ids_for,
    invoke_calls,
    make_spec,
    outcomes_of,
    read_results,
    rows_by_id,
    run_cli,
    spec_data,
    write_prompts,
    write_spec,
    write_table,
)


class TestResults:
    def test_one_row_per_input_row_in_input_order(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Every input row has exactly one ok result row, in the input's order."""
        n = 300
        source = write_prompts(tmp_path / "in.parquet", n)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        results = read_results(tmp_path / "out")
        assert results.column("id").to_pylist() == ids_for(n)
        assert set(results.column("status").to_pylist()) == {"ok"}
        assert (report.progress.rows, report.progress.ok, report.progress.pending) == (n, n, 0)

    def test_every_contract_column_is_there(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """results.parquet has every DESIGN.md column, plus the kept input columns."""
        source = write_prompts(tmp_path / "in.parquet", 20, team=["a", "b"] * 10)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, columns={"keep": ["team"]}))
        run_job(spec, handle_signals=False, progress=False)
        names = read_results(tmp_path / "out").column_names
        missing = [c for c in (*RESULT_COLUMNS, "team") if c not in names]
        assert not missing
        assert read_results(tmp_path / "out").column("team").to_pylist() == ["a", "b"] * 10

    def test_ok_rows_are_filled_in(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """An ok row has its completion, stop reason, route, one attempt, latency and a unique request id."""
        source = write_prompts(tmp_path / "in.parquet", 40)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        run_job(spec, handle_signals=False, progress=False)
        rows = read_results(tmp_path / "out").to_pylist()
        for row in rows:
            assert row["completion"]
            assert row["stop_reason"] in ("end_turn", "max_tokens")
            assert row["model_id"] == GLOBAL_HAIKU
            assert row["region"] == "us-east-1"
            assert row["attempts"] == 1
            assert row["latency_ms"] > 0
            assert row["error_type"] is None and row["error_message"] is None
            assert row["request_id"]
        assert len({row["request_id"] for row in rows}) == len(rows)

    def test_token_usage_matches_the_emulator_bill(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """The rows' input and output tokens add up to exactly what the emulator billed."""
        source = write_prompts(tmp_path / "in.parquet", 120)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        run_job(spec, handle_signals=False, progress=False)
        results = read_results(tmp_path / "out")
        counters = emu.counters()
        billed = counters["tokens"][f"{GLOBAL_HAIKU}@us-east-1"]
        assert sum(results.column("input_tokens").to_pylist()) == billed["input"]
        assert sum(results.column("output_tokens").to_pylist()) == billed["output"]
        assert counters["billed_requests"] == 120

    def test_request_ids_are_the_emulator_ones(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """``request_id`` is the x-amzn-requestid header of the answer (the emulator's UUID-shaped ids)."""
        source = write_prompts(tmp_path / "in.parquet", 1)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        run_job(spec, handle_signals=False, progress=False)
        (row,) = read_results(tmp_path / "out").to_pylist()
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", row["request_id"]
        )


class TestStatusAndStats:
    @pytest.fixture(name="done_job")
    def fixture_done_job(self, emu: EmulatorThread, tmp_path: Path) -> Path:
        """A finished job of 30 rows, one of them a bad (null prompt) row."""
        ids = ids_for(30)
        prompts: list[str | None] = [f"Say something about {i}." for i in ids]
        prompts[7] = None
        source = write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts})
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
        return tmp_path / "out"

    def test_status_json(self, done_job: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``status --json`` counts done, failed and pending rows of a finished job; failed rows: exit 1."""
        assert main(["status", str(done_job), "--json"]) == EXIT_ROWS_FAILED
        info = json.loads(capsys.readouterr().out)
        assert info["rows"] == 30
        assert (info["ok"], info["failed"], info["pending"]) == (29, 1, 0)
        assert info["running"] is False
        assert info["complete"] is True  # every row has an outcome, as `stats` says

    def test_status_text(self, done_job: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Plain ``status`` prints the same counts as text."""
        assert main(["status", str(done_job)]) == EXIT_ROWS_FAILED
        out = capsys.readouterr().out
        assert "30 rows" in out
        assert "done     29" in out
        assert "failed   1" in out
        assert "pending  0" in out

    def test_stats_json_has_the_contract_keys(
        self, done_job: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``stats --json`` prints one object with every key DESIGN.md lists, consistent with the rows."""
        assert main(["stats", str(done_job), "--json"]) == EXIT_OK
        stats = json.loads(capsys.readouterr().out)
        for key in (
            "rows",
            "ok",
            "failed",
            "pending",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cost_usd",
            "routes",
            "latency_ms",
        ):
            assert key in stats, key
        assert set(stats["latency_ms"]) >= {"p50", "p95", "p99"}
        assert (stats["rows"], stats["ok"], stats["failed"], stats["pending"]) == (30, 29, 1, 0)
        results = read_results(done_job)
        assert stats["input_tokens"] == sum(results.column("input_tokens").to_pylist())
        assert stats["output_tokens"] == sum(results.column("output_tokens").to_pylist())
        assert stats["cost_usd"] > 0
        (route,) = stats["routes"].values()
        assert route["rows"] == 29


class TestBadRows:
    def test_bad_rows_become_error_rows_and_the_job_goes_on(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """Null, malformed and over-long rows and a 400 from Bedrock are error rows; the rest run; exit 1."""
        good = [json.dumps([{"role": "user", "content": f"Question number {i}?"}]) for i in range(12)]
        messages: list[str | None] = [
            *good[:3],
            None,  # null
            '[{"role": "user", "content": "unterminated',  # malformed JSON
            json.dumps([{"role": "user", "content": "long " * 400}]),  # ~500 tokens, over the limit
            *good[3:],
        ]
        ids = ids_for(len(messages))
        source = write_table(tmp_path / "in.parquet", {"id": ids, "messages": messages})
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            columns={"prompt": "", "messages": "messages"},
            request={"max_prompt_tokens": 200},
        )
        data["columns"].pop("prompt")
        spec = make_spec(tmp_path, data)
        # The first call Bedrock gets is refused as invalid (which row it is depends on scheduling).
        emu.script(GLOBAL_HAIKU, "*", [{"error": "ValidationException", "message": "messages: bad turn"}])
        report = run_job(spec, handle_signals=False, progress=False)

        assert report.exit_code == EXIT_ROWS_FAILED
        rows = rows_by_id(tmp_path / "out")
        assert list(rows) == ids
        assert rows[ids[3]]["error_type"] == "NullPrompt"
        assert rows[ids[4]]["error_type"] == "MalformedMessages"
        assert rows[ids[5]]["error_type"] == "PromptTooLong"
        for row_id in ids[3:6]:
            assert rows[row_id]["status"] == "error"
            assert rows[row_id]["attempts"] == 0  # never sent, never paid
            assert rows[row_id]["error_message"]
        refused = [r for r in rows.values() if r["error_type"] == "ValidationException"]
        assert len(refused) == 1
        assert refused[0]["status"] == "error"
        assert refused[0]["attempts"] == 1
        assert "bad turn" in refused[0]["error_message"]
        assert refused[0]["request_id"]
        ok = [r for r in rows.values() if r["status"] == "ok"]
        assert len(ok) == len(good) - 1
        assert emu.counters()["billed_requests"] == len(good) - 1

    def test_error_rows_are_not_sent_again_on_rerun(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A rerun of a job whose failed rows are not retryable sends nothing and keeps exit 1."""
        ids = ids_for(10)
        prompts: list[str | None] = [f"Line {i}" for i in ids]
        prompts[2] = None
        source = write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts})
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
        emu.reset()
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
        assert invoke_calls(emu.counters()) == 0
        assert len(read_results(tmp_path / "out")) == 10


class TestThrottling:
    def test_a_throttling_storm_is_retried_to_success(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """The first 12 calls of each route are throttled: retried, and every row ends ok. (A quota
        that refuses everything is paced at its floor, one request per 2 s, so a longer storm only
        takes longer: 40 took 80 s.)"""
        source = write_prompts(tmp_path / "in.parquet", 80)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, retry={"max_attempts": 30}))
        emu.set_faults({"defaults": {"latency_ms": 5}})
        for profile in (GLOBAL_HAIKU, US_HAIKU):
            emu.script(profile, "*", ["ThrottlingException"] * 12)
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        results = read_results(tmp_path / "out")
        assert results.column("id").to_pylist() == ids_for(80)
        assert set(results.column("status").to_pylist()) == {"ok"}
        assert max(results.column("attempts").to_pylist()) > 1
        counters = emu.counters()
        throttled = [outcomes_of(counters, p).get("ThrottlingException", 0) for p in (GLOBAL_HAIKU, US_HAIKU)]
        # A route held back by its storm spills rows to the other: one may end before its script.
        assert all(n <= 12 for n in throttled) and sum(throttled) >= 12
        assert report.counters.throttles == sum(throttled)
        assert counters["billed_requests"] == 80

    @pytest.mark.timeout(300)  # half the calls refused at random (capacity 429s): the quota model
    # reads the first of them as a drained quota, then undoes it (4-8 s; 8-75 s before it could)
    def test_random_throttles_are_retried_to_success(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Half of all calls throttled at random: every row still ends ok, each billed once."""
        emu.set_faults({"defaults": {"throttle_rate": 0.5}})
        source = write_prompts(tmp_path / "in.parquet", 60)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, retry={"max_attempts": 30}))
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_OK
        counters = emu.counters()
        assert counters["billed_requests"] == 60
        assert all(n == 1 for n in counters["bodies"].values())
        assert set(read_results(tmp_path / "out").column("status").to_pylist()) == {"ok"}

    def test_a_validation_error_is_not_retried(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A ValidationException ends its row as an error after one attempt, on one route."""
        source = write_prompts(tmp_path / "in.parquet", 1)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        emu.script(GLOBAL_HAIKU, "*", ["ValidationException"])
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_ROWS_FAILED
        (row,) = read_results(tmp_path / "out").to_pylist()
        assert (row["status"], row["error_type"], row["attempts"]) == ("error", "ValidationException", 1)
        assert row["model_id"] == GLOBAL_HAIKU
        assert invoke_calls(emu.counters()) == 1


class TestLogs:
    def test_no_credentials_or_prompt_text_in_logs(
        self, emu: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Neither the AWS keys nor prompt or completion text reach stderr or events.jsonl, even at debug."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQUITEDISTINCTIVE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sEcReT/never-in-a-log+0123456789")
        ids = ids_for(12)
        prompts: list[str | None] = [f"Describe the violet pangolin number {i}." for i in range(12)]
        prompts[4] = None
        source = write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts})
        data = spec_data(source, tmp_path / "out", emu.url)
        spec = write_spec(tmp_path / "job.toml", data)
        emu.script(GLOBAL_HAIKU, "*", ["ValidationException", "ThrottlingException"])
        done = run_cli(["run", str(spec), "--log-level", "debug"], cwd=tmp_path)
        assert done.returncode == EXIT_ROWS_FAILED, done.stderr

        logs = done.stdout + done.stderr + (tmp_path / "out" / "_job" / "events.jsonl").read_text()
        assert "job.finished" in logs
        assert "AKIAQUITEDISTINCTIVE" not in logs
        assert "never-in-a-log" not in logs
        assert "violet pangolin" not in logs
        completions = [r["completion"] for r in rows_by_id(tmp_path / "out").values() if r["completion"]]
        assert completions
        assert not [c for c in completions if c in logs]


class TestTransientFailures:
    @pytest.mark.parametrize(
        "outcome",
        ["cut_off", "InternalServerException", "ServiceUnavailableException", "ModelNotReadyException"],
    )
    def test_transient_failure_is_retried(self, emu: EmulatorThread, tmp_path: Path, outcome: str) -> None:
        """A cut-off body, a 5xx or a not-ready model costs the row one more attempt, then it is ok."""
        source = write_prompts(tmp_path / "in.parquet", 1)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url))
        emu.script(GLOBAL_HAIKU, "*", [outcome])
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_OK
        (row,) = read_results(tmp_path / "out").to_pylist()
        assert (row["status"], row["attempts"]) == ("ok", 2)
        assert row["model_id"] == US_HAIKU  # the retry starts from the route after the one that failed
        assert emu.counters()["billed_requests"] == 1

    def test_slow_answer_times_out_and_is_retried(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """An answer slower than ``[retry] timeout_s`` is abandoned and the row retried."""
        source = write_prompts(tmp_path / "in.parquet", 1)
        data = spec_data(source, tmp_path / "out", emu.url, retry={"timeout_s": 0.3})
        emu.script(GLOBAL_HAIKU, "*", [{"slow_ms": 10_000}])
        started = time.monotonic()
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        assert time.monotonic() - started < 6.0  # far less than the 10 s answer
        (row,) = read_results(tmp_path / "out").to_pylist()
        assert (row["status"], row["attempts"]) == ("ok", 2)

    def test_answers_always_too_slow_end_as_a_retryable_timeout(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """Every attempt past ``timeout_s``: an error row that names the deadline, retryable by a rerun."""
        source = write_prompts(tmp_path / "in.parquet", 1)
        data = spec_data(source, tmp_path / "out", emu.url, retry={"timeout_s": 0.2, "max_attempts": 2})
        emu.set_faults({"defaults": {"slow_rate": 1.0, "slow_ms": 5_000}})
        report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_ROWS_FAILED
        (row,) = read_results(tmp_path / "out").to_pylist()
        assert (row["status"], row["error_type"], row["retryable"], row["attempts"]) == (
            "error", "ModelTimeoutError", True, 2,
        )  # fmt: skip
        assert "no answer within 0.2 s" in row["error_message"]

    def test_rows_out_of_attempts_are_retried_by_a_rerun(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Rows that used up their attempts on 5xx end as retryable errors (exit 1); a rerun finishes them."""
        emu.set_faults({"defaults": {"error_rate": 1.0}})
        source = write_prompts(tmp_path / "in.parquet", 10)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, retry={"max_attempts": 2}))
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["status"], r["retryable"]) for r in rows} == {("error", True)}
        assert all(r["error_message"].startswith("gave up after") for r in rows)

        emu.reset()
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_OK
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(10)
        assert set(read_results(tmp_path / "out").column("status").to_pylist()) == {"ok"}
        assert emu.counters()["billed_requests"] == 10

    def test_retry_failed_reruns_permanent_errors(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A ValidationException row stays failed on a plain rerun and runs again with ``retry_failed``."""
        source = write_prompts(tmp_path / "in.parquet", 3)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, limits={"max_in_flight": 1}))
        emu.script(GLOBAL_HAIKU, "*", ["ValidationException"])
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_ROWS_FAILED
        assert invoke_calls(emu.counters()) == 3  # the plain rerun sent nothing
        report = run_job(spec, handle_signals=False, progress=False, retry_failed=True)
        assert report.exit_code == EXIT_OK
        assert set(read_results(tmp_path / "out").column("status").to_pylist()) == {"ok"}
        assert emu.counters()["billed_requests"] == 3
