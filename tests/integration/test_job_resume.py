"""Resuming a job: after hard kills, on a changed input, and while another runner holds the job.

The crash test runs the ``bedrock-batch`` console script in a subprocess and SIGKILLs it at seeded
random moments while requests are in flight, then reruns the same command: DESIGN.md invariants 1
(exactly one result row per input row) and 2 (no row paid twice, except at most ``max_in_flight``
requests in flight at each kill) are checked against the emulator's billed-body counters.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_FAILED, EXIT_SPEC_INVALID
from runner.job import run_job
from tests.helpers import (
    duplicate_bills,
    ids_for,
    invoke_calls,
    make_spec,
    prompts_for,
    read_results,
    rows_by_id,
    run_cli,
    spec_data,
    start_cli,
    stop_process,
    wait_until,
    write_prompts,
    write_spec,
    write_table,
)

MAX_IN_FLIGHT = 8


def crash_spec(tmp_path: Path, source: Path, **sections: dict[str, object]) -> Path:
    """A spec without ``endpoint_url`` (the command line passes it), committing parts often.

    ``sections`` merge into :func:`spec_data`'s defaults, replacing this function's ``limits`` and
    ``output`` settings when given.
    """
    settings: dict[str, dict[str, object]] = {
        "limits": {"max_in_flight": MAX_IN_FLIGHT},
        "output": {"part_rows": 25, "part_seconds": 0.2},
    }
    settings.update(sections)
    data = spec_data(source, tmp_path / "out", "", **settings)
    data["model"].pop("endpoint_url")
    return write_spec(tmp_path / "job.toml", data)


def kill_while_sending(
    emu: EmulatorThread, args: list[str], tmp_path: Path, delay_s: float
) -> tuple[bool, subprocess.Popen[bytes]]:
    """Start the runner, wait until the emulator bills its first call, wait ``delay_s``, SIGKILL it.

    Returns whether it was killed (False: it finished first) and the process.
    """
    before = emu.counters()["billed_requests"]
    proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
    wait_until(
        lambda: emu.counters()["billed_requests"] > before or proc.poll() is not None,
        timeout=30,
        what="the runner's first billed call",
    )
    time.sleep(delay_s)
    if proc.poll() is not None:
        return False, proc
    proc.kill()
    proc.wait(10)
    return True, proc


class TestCrashResume:
    def test_sigkill_at_random_moments_then_resume(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Three SIGKILLs mid-job, then a rerun: every id once, at most max_in_flight paid twice per kill."""
        emu.set_faults({"defaults": {"latency": {"dist": "uniform", "min_ms": 10, "max_ms": 40}}})
        n = 800
        source = write_prompts(tmp_path / "in.parquet", n)
        spec = crash_spec(tmp_path, source)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        rng = random.Random(20251001)
        kills = 0
        for _ in range(3):
            killed, _proc = kill_while_sending(emu, args, tmp_path, rng.uniform(0.0, 0.6))
            kills += killed
        assert kills, "the job finished before any kill; make it longer"

        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr

        results = read_results(tmp_path / "out")
        assert results.column("id").to_pylist() == ids_for(n)
        assert set(results.column("status").to_pylist()) == {"ok"}
        counters = emu.counters()
        assert len(counters["bodies"]) == n
        assert duplicate_bills(counters) <= kills * MAX_IN_FLIGHT

    def test_sigkill_during_startup_leaves_a_resumable_job(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A runner killed before its first call leaves nothing that stops the next run."""
        source = write_prompts(tmp_path / "in.parquet", 50)
        spec = crash_spec(tmp_path, source)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(
            lambda: (tmp_path / "out" / "_job" / "state.json").exists() or proc.poll() is not None,
            timeout=30,
            what="the job directory",
        )
        proc.kill()
        proc.wait(10)
        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(50)
        assert duplicate_bills(emu.counters()) <= MAX_IN_FLIGHT

    def test_kept_columns_survive_journal_recovery(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Rows recovered from the journal after a SIGKILL keep their input columns' values and types."""
        emu.set_faults({"defaults": {"latency_ms": 30}})
        n = 400
        ids = ids_for(n)
        epoch = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        kept: dict[str, pa.Array] = {
            "n": pa.array(range(n), pa.int32()),
            "when": pa.array(
                [epoch + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "day": pa.array([dt.date(2024, 1, 1 + i % 28) for i in range(n)], pa.date32()),
            "blob": pa.array([bytes([i % 256]) * 3 for i in range(n)], pa.binary()),
            "price": pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
            "tags": pa.array([[f"t{i}", None] for i in range(n)], pa.list_(pa.string())),
            "maybe": pa.array([None if i % 3 else float(i) for i in range(n)], pa.float64()),
        }
        source = write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts_for(ids), **kept})
        # No part is committed before the kill: every finished row is only in the journal.
        spec = crash_spec(
            tmp_path,
            source,
            columns={"keep": list(kept)},
            output={"part_rows": 10_000, "part_seconds": 60.0},
        )
        args = ["run", str(spec), "--endpoint-url", emu.url]
        killed, _proc = kill_while_sending(emu, args, tmp_path, 0.3)
        assert killed
        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr
        assert "recovered from the journal" in final.stderr
        results = read_results(tmp_path / "out")
        for name, values in kept.items():
            assert results.schema.field(name).type == values.type, name
            assert results.column(name).to_pylist() == values.to_pylist(), name

    @pytest.mark.slow
    def test_many_kills_soak(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Ten SIGKILLs at random moments over a longer job: the same two invariants hold."""
        emu.set_faults({"defaults": {"latency": {"dist": "lognormal", "median_ms": 20, "sigma": 0.6}}})
        n = 3000
        source = write_prompts(tmp_path / "in.parquet", n)
        spec = crash_spec(tmp_path, source)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        rng = random.Random(7)
        kills = sum(kill_while_sending(emu, args, tmp_path, rng.uniform(0.0, 1.0))[0] for _ in range(10))
        final = run_cli(args, cwd=tmp_path, timeout=120)
        assert final.returncode == EXIT_OK, final.stderr
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(n)
        assert duplicate_bills(emu.counters()) <= kills * MAX_IN_FLIGHT


class TestLock:
    def test_a_second_runner_is_refused(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """While one runner works on a job, a second one exits 2 and says why; ``status`` shows it running."""
        emu.set_faults({"defaults": {"latency_ms": 100}})
        source = write_prompts(tmp_path / "in.parquet", 200)
        spec = crash_spec(tmp_path, source)
        first = start_cli(
            ["run", str(spec), "--endpoint-url", emu.url], cwd=tmp_path, log=tmp_path / "first.log"
        )
        try:
            wait_until(lambda: emu.counters()["billed_requests"] > 0, timeout=30, what="the first runner")
            code = main(["run", str(spec), "--endpoint-url", emu.url])
            err = capsys.readouterr().err
            assert main(["status", str(tmp_path / "out"), "--json"]) == EXIT_ROWS_FAILED  # rows pending
            status = json.loads(capsys.readouterr().out)
        finally:
            first_code = stop_process(first, signal.SIGTERM)
        assert code == EXIT_SPEC_INVALID
        assert "in use by another bedrock-batch runner" in err
        assert "pid " in err
        assert first_code == EXIT_INTERRUPTED
        assert status["running"] is True
        assert status["resumable"] is False  # not while a runner holds it

    def test_the_lock_dies_with_the_runner(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A SIGKILLed runner's lock is gone at once: the next run starts without any cleanup."""
        emu.set_faults({"defaults": {"latency_ms": 50}})
        source = write_prompts(tmp_path / "in.parquet", 100)
        spec = crash_spec(tmp_path, source)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        killed, _proc = kill_while_sending(emu, args, tmp_path, 0.1)
        assert killed
        emu.set_faults({})
        assert run_cli(args, cwd=tmp_path).returncode == EXIT_OK


class TestChangedInput:
    @pytest.fixture(name="finished")
    def fixture_finished(self, emu: EmulatorThread, tmp_path: Path) -> Path:
        """A finished 20-row job; returns its spec file. The emulator's counters are reset after it."""
        source = write_prompts(tmp_path / "in.parquet", 20)
        data = spec_data(source, tmp_path / "out", emu.url)
        spec = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec)]) == EXIT_OK
        emu.reset()
        return spec

    def test_changed_ids_are_refused(
        self, emu: EmulatorThread, tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An input whose ids changed since the job began: exit 2, a message naming --force, no call."""
        ids = [*ids_for(15), *ids_for(5, start=100)]
        write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts_for(ids)})
        capsys.readouterr()
        assert main(["run", str(finished)]) == EXIT_SPEC_INVALID
        err = capsys.readouterr().err
        assert "input changed" in err
        assert "--force" in err
        assert invoke_calls(emu.counters()) == 0
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(20)

    def test_force_keeps_matching_rows_and_runs_the_new(
        self, emu: EmulatorThread, tmp_path: Path, finished: Path
    ) -> None:
        """With --force, rows whose ids still match are kept, new ids run, gone ids leave the results."""
        before = rows_by_id(tmp_path / "out")
        ids = [*ids_for(15), *ids_for(5, start=100)]
        write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts_for(ids)})
        assert main(["run", str(finished), "--force"]) == EXIT_OK
        after = rows_by_id(tmp_path / "out")
        assert list(after) == ids
        assert all(after[i]["status"] == "ok" for i in ids)
        assert all(after[i]["request_id"] == before[i]["request_id"] for i in ids_for(15))
        counters = emu.counters()
        assert counters["billed_requests"] == 5

    def test_an_edited_prompt_runs_again_alone(
        self, emu: EmulatorThread, tmp_path: Path, finished: Path
    ) -> None:
        """Same ids with one prompt edited: only that row is sent again, and its result replaced."""
        before = rows_by_id(tmp_path / "out")
        ids = ids_for(20)
        prompts = prompts_for(ids)
        prompts[7] = "An entirely different question about the weather?"
        write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts})
        assert main(["run", str(finished)]) == EXIT_OK
        after = rows_by_id(tmp_path / "out")
        assert list(after) == ids
        assert emu.counters()["billed_requests"] == 1
        assert after[ids[7]]["request_id"] != before[ids[7]]["request_id"]
        assert after[ids[7]]["completion"] != before[ids[7]]["completion"]
        assert all(after[i]["request_id"] == before[i]["request_id"] for i in ids if i != ids[7])

    def test_a_rerun_of_a_finished_job_sends_nothing(
        self, emu: EmulatorThread, tmp_path: Path, finished: Path
    ) -> None:
        """Rerunning a complete job is free: no call, exit 0, the same results."""
        before = read_results(tmp_path / "out")
        assert main(["run", str(finished)]) == EXIT_OK
        assert invoke_calls(emu.counters()) == 0
        assert read_results(tmp_path / "out").column("request_id").equals(before.column("request_id"))


class TestResumeInProcess:
    def test_status_after_a_kill_says_resumable(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """After a SIGKILL, ``status --json`` shows pending rows and a resumable, not running, job."""
        emu.set_faults({"defaults": {"latency_ms": 30}})
        source = write_prompts(tmp_path / "in.parquet", 300)
        spec = crash_spec(tmp_path, source)
        killed, _proc = kill_while_sending(emu, ["run", str(spec), "--endpoint-url", emu.url], tmp_path, 0.3)
        assert killed
        assert main(["status", str(tmp_path / "out"), "--json"]) == EXIT_ROWS_FAILED  # not complete
        info = json.loads(capsys.readouterr().out)
        assert info["pending"] > 0
        assert info["running"] is False
        assert info["resumable"] is True
        emu.set_faults({})
        report = run_job(
            make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url)), handle_signals=False
        )
        assert report.exit_code == EXIT_OK
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(300)
