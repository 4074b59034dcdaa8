"""Quota control against quota shapes the emulator plays (issue 10), end to end over loopback HTTP.

Each test gives the emulator's ``global.`` Haiku route a quota shape (docs/emulator.md, *Quota
shapes*), runs ``run_job`` with the real aioboto3 client, and checks what the emulator counted and
what the route's quota model decided (its ``quota.*`` events in ``_job/events.jsonl``). Figures
(job time against the limit, throttled shares) are the benchmark's (``bench/bench_quota.py``); these
tests check the behaviour behind them, with margins for a loaded machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_OK
from runner.job import run_job
from runner.state import JobDir
from tests.helpers import GLOBAL_HAIKU, make_spec, outcomes_of, spec_data, write_prompts, write_spec

FAST = {"latency": {"dist": "uniform", "min_ms": 50, "max_ms": 100}}


def quota_events(job_dir: Path) -> list[dict[str, Any]]:
    """The route's quota decisions, in order."""
    lines = JobDir(job_dir).events_file.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"].startswith("quota.")]


def run_quota_job(
    emu: EmulatorThread,
    tmp_path: Path,
    rule: dict[str, Any],
    *,
    rows: int,
    tpm: int,
    max_in_flight: int = 32,
    max_tokens: int = 100,
    faults: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Run ``rows`` rows on the ``global.`` route under ``rule`` (``faults``: more of the fault
    file); every row must end ok, billed once. Returns the route's outcomes as the emulator counted
    them."""
    emu.reset()
    route = {"profile": GLOBAL_HAIKU, "region": "us-east-1", **rule}
    emu.set_faults({"defaults": FAST, "routes": [route], **(faults or {})})
    source = write_prompts(tmp_path / "in.parquet", rows)
    data = spec_data(
        source,
        tmp_path / "out",
        emu.url,
        model={"endpoints": ["global"]},
        request={"max_tokens": max_tokens},
        limits={"max_in_flight": max_in_flight, "tpm": tpm},
        retry={"max_attempts": 50},
    )
    report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
    assert report.exit_code == EXIT_OK
    counters = emu.counters()
    assert counters["billed_requests"] == rows
    assert all(n == 1 for n in counters["bodies"].values())
    return outcomes_of(counters, GLOBAL_HAIKU)


class TestKnownQuota:
    def test_a_drained_bucket_costs_a_few_throttles_not_a_storm(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """`tpm` given, the bucket drained when the job starts: the startup's first wave is refused
        whole, the model says the quota was drained, and pacing holds from there (the issue measured
        25 % of requests throttled, 61 % at 256 in flight)."""
        rule = {"quota_shape": "bucket", "quota_start": "empty", "tpm": 240_000}
        outcomes = run_quota_job(emu, tmp_path, rule, rows=150, tpm=240_000)
        # This bucket refills ~30 reservations a second: when two 429s did not end the startup, its
        # refill admitted the next waves, and the wave that found it empty cost 2-20 % of the
        # requests (alone or beside the rest of the suite). Now the first wave's two are all.
        assert outcomes.get("ThrottlingException", 0) <= 0.05 * sum(outcomes.values())
        ended = [e for e in quota_events(tmp_path / "out") if e["event"] == "quota.startup_ended"]
        assert [e["drained"] for e in ended] == [True]
        assert not [e for e in quota_events(tmp_path / "out") if e["event"] == "quota.advice"]

    def test_a_bucket_lifts_the_guard_when_max_tokens_is_far_above_the_answers(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """`max_tokens` 300 for answers of 20-60 tokens, a full 20,000 TPM bucket: the route's own
        charges fill the window guard in a second, and a window would hold the reservations of the
        requests in flight just as the guard books them, so no filler ever took them past it and
        no probe went: the bucket was paced as a window, held for the rest of the minute. A probe
        past the guard, judged at its answer, which the bucket admits: the guard lifts."""
        rule = {"quota_shape": "bucket", "tpm": 20_000}
        outcomes = run_quota_job(emu, tmp_path, rule, rows=400, tpm=20_000, max_tokens=300)
        lifted = [e for e in quota_events(tmp_path / "out") if e["event"] == "quota.guard_lifted"]
        assert lifted, "the window guard held a bucket"
        assert outcomes.get("ThrottlingException", 0) <= 0.05 * sum(outcomes.values())

    @pytest.mark.parametrize("shape", ["bucket", "window"])
    def test_a_probe_judged_at_its_answer_tells_a_bucket_from_a_window(
        self, emu: EmulatorThread, tmp_path: Path, shape: str
    ) -> None:
        """`max_tokens` 600 for answers of 20-60 tokens, 20,000 TPM, answers in about a second: the
        reservations in flight fill the window guard and each answer frees it, so no hold reached
        the 2 s a probe waited for, and a bucket was paced as a window. The probe goes at once and
        is judged at its answer, by what a window held when it arrived, in the service's own count
        of each reservation then in flight: a bucket's guard lifts; a window keeps its guard (a
        probe judged on the route's estimates lifted it in one run of six)."""
        rule = {"quota_shape": shape, "tpm": 20_000}
        latency = {"latency": {"dist": "uniform", "min_ms": 800, "max_ms": 1200}}
        outcomes = run_quota_job(
            emu, tmp_path, rule, rows=150, tpm=20_000, max_tokens=600, faults={"defaults": latency}
        )
        events = quota_events(tmp_path / "out")
        lifted = [e for e in events if e["event"] == "quota.guard_lifted"]
        if shape == "bucket":
            assert lifted, "the window guard held a bucket"
            assert [e["proved"] for e in events if e["event"] == "quota.guard_tested"][-1]
        else:
            assert not lifted, "the window guard lifted on a window"
        assert outcomes.get("ThrottlingException", 0) <= 0.05 * sum(outcomes.values())

    def test_capacity_429s_are_not_quota_evidence(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """5 % of calls refused at random, the quota far away: the route is never paced down nor
        emptied (each 429 is retried at once and the burst goes on)."""
        outcomes = run_quota_job(
            emu, tmp_path, {"throttle_rate": 0.05, "tpm": 10_000_000}, rows=300, tpm=10_000_000
        )
        assert outcomes.get("ThrottlingException", 0) > 0
        decisions = {e["event"] for e in quota_events(tmp_path / "out")}
        assert not decisions & {"quota.rate", "quota.emptied"}


class TestUnknownQuota:
    def test_a_shared_quota_is_measured_below_its_tpm(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Another consumer draws half of a 120,000 TPM bucket: the route learns a rate near the
        other half from its throttles, never one moment's level, and every row ends ok."""
        rule = {
            "quota_shape": "bucket",
            "quota_start": "empty",
            "tpm": 120_000,
            "other_consumer": {"share": 0.5, "pattern": "steady"},
        }
        outcomes = run_quota_job(emu, tmp_path, rule, rows=200, tpm=0, max_in_flight=16)
        rates = [e["rate_tpm"] for e in quota_events(tmp_path / "out") if e["event"] == "quota.rate"]
        assert rates, "the model never paced the route"
        assert 20_000 <= rates[-1] <= 0.8 * 120_000
        assert outcomes.get("ThrottlingException", 0) <= 0.15 * sum(outcomes.values())

    @pytest.mark.parametrize("seed", [1, 3])
    def test_random_429s_are_told_from_a_quota(self, emu: EmulatorThread, tmp_path: Path, seed: int) -> None:
        """Issue 10's second trial: no quota, 30 % of calls refused at random and 5 % answered 503.
        The startup takes the refusals for a drained quota; the route learns otherwise (a ``capacity``
        decision undoes the cuts) instead of pacing down sample after sample, and ends unpaced or
        climbing, and every row ends ok, billed once."""
        rule = {
            "throttle_rate": 0.3,
            "error_rate": 0.05,
            "error_type": "ServiceUnavailableException",
            "tpm": 10_000_000,
        }
        faults = {"seed": seed}
        outcomes = run_quota_job(emu, tmp_path, rule, rows=300, tpm=0, max_in_flight=64, faults=faults)
        assert outcomes.get("ThrottlingException", 0) > 0
        events = quota_events(tmp_path / "out")
        rates = [e for e in events if e["event"] == "quota.rate"]
        if rates:
            assert "capacity" in [e["why"] for e in rates]
        # A third of the requests refused: the job's end says what the user could change.
        (advice,) = [e for e in events if e["event"] == "quota.advice"]
        assert advice["route"] == "global@us-east-1"
        assert "give it as [limits] tpm" in advice["message"]


class TestAdvice:
    def test_a_throttled_fixed_pool_is_told_on_stderr(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`bedrock-batch run` with a fixed pool (adaptive = false) that Bedrock throttled a third of
        the time, `max_tokens` 600 for answers of 20-60 tokens: the warning at the job's end names
        the route, the throttles, the setting to change, and the reservations the answers did not
        use. The rows all end ok."""
        emu.reset()
        emu.set_faults({"defaults": {**FAST, "throttle_rate": 0.3}, "seed": 2})
        source = write_prompts(tmp_path / "in.parquet", 150)
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            model={"endpoints": ["global"]},
            request={"max_tokens": 600},
            limits={"max_in_flight": 32, "adaptive": False},
            retry={"max_attempts": 50},
        )
        spec = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec), "--no-progress"]) == EXIT_OK
        err = capsys.readouterr().err
        (line,) = [line for line in err.splitlines() if "quota.advice" in line]
        assert "global@us-east-1: " in line
        assert "with adaptive = false" in line
        assert "max_tokens nearer the answers" in line
        (advice,) = [e for e in quota_events(tmp_path / "out") if e["event"] == "quota.advice"]
        assert advice["throttled"] > 0.2 * advice["requests"]
        assert emu.counters()["billed_requests"] == 150
