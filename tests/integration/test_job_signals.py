"""Ctrl-C and SIGTERM: the runner drains, writes its results, exits 130, and a rerun finishes the job.

Each test runs the ``bedrock-batch`` console script in a subprocess against the session emulator and
signals it while requests are in flight. "No row lost" is checked against the emulator's bill: every
call it billed has its ok row in results.parquet, and the rerun bills no body a second time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_INTERRUPTED, EXIT_OK
from tests.helpers import (
    duplicate_bills,
    ids_for,
    read_results,
    run_cli,
    spec_data,
    start_cli,
    stop_process,
    wait_until,
    write_prompts,
    write_spec,
)

MAX_IN_FLIGHT = 8


def job_spec(tmp_path: Path, rows: int) -> Path:
    source = write_prompts(tmp_path / "in.parquet", rows)
    data = spec_data(source, tmp_path / "out", "", limits={"max_in_flight": MAX_IN_FLIGHT})
    data["model"].pop("endpoint_url")
    return write_spec(tmp_path / "job.toml", data)


class TestGracefulStop:
    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_drain_then_resume(self, emu: EmulatorThread, tmp_path: Path, sig: signal.Signals) -> None:
        """The signal drains requests in flight, exits 130 with every paid row written; no row paid twice."""
        emu.set_faults({"defaults": {"latency_ms": 40}})
        n = 400
        args = ["run", str(job_spec(tmp_path, n)), "--endpoint-url", emu.url]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(lambda: emu.counters()["billed_requests"] >= 30, timeout=30, what="30 billed calls")
        assert stop_process(proc, sig) == EXIT_INTERRUPTED
        assert "finishing requests in flight" in (tmp_path / "runner.log").read_text()

        billed = emu.counters()["billed_requests"]
        results = read_results(tmp_path / "out")
        assert 30 <= results.num_rows < n
        assert set(results.column("status").to_pylist()) == {"ok"}
        assert results.num_rows == billed  # every paid call has its row; nothing in flight was dropped
        done = results.column("id").to_pylist()
        assert done == sorted(done)  # input order (the ids sort as the input does)
        assert set(done) <= set(ids_for(n))

        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(n)
        counters = emu.counters()
        assert duplicate_bills(counters) == 0
        assert counters["billed_requests"] == n

    def test_requests_past_the_grace_period_stay_pending(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Answers slower than ``--grace`` are cancelled: exit 130 soon after, rows pending, not failed."""
        emu.set_faults({"defaults": {"latency_ms": 20_000}})
        args = ["run", str(job_spec(tmp_path, 20)), "--endpoint-url", emu.url, "--grace", "0.3"]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(
            lambda: emu.counters()["total_requests"] >= MAX_IN_FLIGHT, timeout=30, what="requests in flight"
        )
        started = time.monotonic()
        assert stop_process(proc, signal.SIGINT) == EXIT_INTERRUPTED
        assert time.monotonic() - started < 8.0  # far less than the 20 s answers
        status = run_cli(["status", str(tmp_path / "out"), "--json"], cwd=tmp_path)
        assert '"failed": 0' in status.stdout
        assert '"pending": 20' in status.stdout

        emu.set_faults({})
        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(20)

    def test_a_second_ctrl_c_stops_at_once(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A second SIGINT exits 130 without waiting out the grace period; a rerun completes the job."""
        emu.set_faults({"defaults": {"latency_ms": 20_000}})
        args = ["run", str(job_spec(tmp_path, 20)), "--endpoint-url", emu.url, "--grace", "60"]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(
            lambda: emu.counters()["total_requests"] >= MAX_IN_FLIGHT, timeout=30, what="requests in flight"
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        wait_until(
            lambda: "finishing requests in flight" in (tmp_path / "runner.log").read_text(),
            timeout=10,
            what="the first signal to be handled",
        )
        assert stop_process(proc, signal.SIGINT) == EXIT_INTERRUPTED
        assert time.monotonic() - started < 8.0  # far less than the 20 s answers or the 60 s grace

        emu.set_faults({})
        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(20)


class TestEarlyInterrupt:
    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_signal_during_preflight_is_exit_130(
        self, emu: EmulatorThread, tmp_path: Path, sig: signal.Signals
    ) -> None:
        """A signal while preflight waits on Bedrock exits 130 (interrupted, resumable), not 1 or death."""
        emu.set_faults({"defaults": {"latency_ms": 5000}})
        args = ["run", str(job_spec(tmp_path, 10)), "--endpoint-url", emu.url, "--preflight"]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(lambda: emu.counters()["total_requests"] > 0, timeout=30, what="the preflight ping")
        assert stop_process(proc, sig, timeout=10) == EXIT_INTERRUPTED
        assert "Aborted!" not in (tmp_path / "runner.log").read_text()

        emu.set_faults({})
        final = run_cli(args, cwd=tmp_path)
        assert final.returncode == EXIT_OK, final.stderr
        assert read_results(tmp_path / "out").column("id").to_pylist() == ids_for(10)
