"""Routes under trouble, end to end: an outage of the primary, AccessDenied on ``global.``, data
residency, and a tokens-per-minute quota the limiter must stay under.

Each test runs ``run_job`` with the real aioboto3 client against the session emulator, changes the
emulator's faults, and checks both what the results say (``model_id`` of each row) and what the
emulator saw (its per-route counters).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from runner.emulator import EmulatorThread
from runner.errors import PreflightError
from runner.exit_codes import EXIT_OK
from runner.job import run_job
from tests.helpers import (
    EU_HAIKU,
    GLOBAL_HAIKU,
    US_HAIKU,
    ids_for,
    make_spec,
    outcomes_of,
    read_results,
    spec_data,
    wait_until,
    write_prompts,
)

BREAKER_COOLDOWN_S = 5.0
"""The router's first cool-down after a breaker opens (``Router``'s default, which ``run_job`` uses)."""


def started_s(row: dict[str, Any]) -> float:
    """A result row's ``started_at`` as epoch seconds."""
    return float(row["started_at"].timestamp())


class TestOutage:
    def test_primary_outage_falls_back_then_returns(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """``global.`` down a second mid-job: no failed row, ``us.`` serves meanwhile, ``global.`` after."""
        outage_s = 1.0
        n = 750  # at most 100 rows/s (4 in flight x 40 ms): the job outlasts the outage plus the cool-down
        source = write_prompts(tmp_path / "in.parquet", n)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, limits={"max_in_flight": 4}))
        emu.set_faults({"defaults": {"latency_ms": 40}})
        outage_at: list[float] = []

        def break_global() -> None:
            """Once 60 rows are billed, take ``global.`` down for ``outage_s`` from now."""
            wait_until(lambda: emu.counters()["billed_requests"] >= 60, timeout=60, what="60 billed rows")
            outage = [{"start_s": 0, "end_s": outage_s}]
            emu.set_faults({"routes": [{"profile": "global.*", "outages": outage}]}, merge=True)
            outage_at.append(time.time())

        patcher = threading.Thread(target=break_global)
        patcher.start()
        report = run_job(spec, handle_signals=False, progress=False)
        patcher.join(10)

        assert report.exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert [r["id"] for r in rows] == ids_for(n)
        assert {r["status"] for r in rows} == {"ok"}
        (t0,) = outage_at
        before = [r for r in rows if started_s(r) < t0 - 0.1]
        assert len(before) >= 50
        assert {r["model_id"] for r in before} == {GLOBAL_HAIKU}
        during = [r for r in rows if t0 + 0.15 <= started_s(r) <= t0 + outage_s - 0.1]
        assert during, "no row started during the outage; the job ran too fast"
        assert {r["model_id"] for r in during} == {US_HAIKU}
        after = [r for r in rows if started_s(r) > t0 + outage_s + BREAKER_COOLDOWN_S + 0.3]
        assert after, "the job ended before the primary's breaker could close again"
        assert {r["model_id"] for r in after} == {GLOBAL_HAIKU}

        counters = emu.counters()
        failed_on_global = outcomes_of(counters, GLOBAL_HAIKU).get("ServiceUnavailableException", 0)
        assert 0 < failed_on_global < 20  # the breaker stopped sending to the dead route
        assert counters["billed_requests"] == n

    def test_outage_lasting_past_the_job(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """``global.`` goes down mid-job for good: every row still ends ok, the rest of the job on ``us.``."""
        n = 300
        source = write_prompts(tmp_path / "in.parquet", n)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, limits={"max_in_flight": 4}))
        emu.set_faults({"defaults": {"latency_ms": 20}})

        def break_global() -> None:
            wait_until(lambda: emu.counters()["billed_requests"] >= 50, timeout=60, what="50 billed rows")
            emu.set_faults(
                {"routes": [{"profile": "global.*", "outages": [{"start_s": 0, "end_s": 60}]}]}, merge=True
            )

        patcher = threading.Thread(target=break_global)
        patcher.start()
        report = run_job(spec, handle_signals=False, progress=False)
        patcher.join(10)

        assert report.exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {r["status"] for r in rows} == {"ok"}
        served = {r["model_id"] for r in rows}
        assert served == {GLOBAL_HAIKU, US_HAIKU}
        assert rows[-1]["model_id"] == US_HAIKU


class TestAccessDenied:
    def deny_global(self, emu: EmulatorThread) -> None:
        emu.set_faults({"routes": [{"profile": "global.*", "access_denied": True}]})

    def test_with_preflight(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Preflight finds AccessDenied on ``global.``: one refused ping, then every row on ``us.``."""
        self.deny_global(emu)
        source = write_prompts(tmp_path / "in.parquet", 60)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, model={"preflight": True}))
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        assert report.routes["global@us-east-1"] == "removed"
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["status"], r["model_id"]) for r in rows} == {("ok", US_HAIKU)}
        assert {r["attempts"] for r in rows} == {1}
        counters = emu.counters()
        assert outcomes_of(counters, GLOBAL_HAIKU) == {"AccessDeniedException": 1}
        assert outcomes_of(counters, US_HAIKU) == {"ok": 61}  # the preflight ping and the rows

    def test_without_preflight(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Without preflight the first rows meet AccessDenied and move on at once; the rest go to ``us.``."""
        self.deny_global(emu)
        source = write_prompts(tmp_path / "in.parquet", 60)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, model={"preflight": False}))
        report = run_job(spec, handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["status"], r["model_id"]) for r in rows} == {("ok", US_HAIKU)}
        counters = emu.counters()
        denied = outcomes_of(counters, GLOBAL_HAIKU)
        assert set(denied) == {"AccessDeniedException"}
        assert 1 <= denied["AccessDeniedException"] <= 8  # only the calls in flight when it was learned
        assert outcomes_of(counters, US_HAIKU) == {"ok": 60}

    def test_every_route_denied_is_a_preflight_error(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Every route denied at preflight: the job stops before any row is sent (exit 2 from the CLI)."""
        emu.set_faults({"routes": [{"profile": "*", "access_denied": True}]})
        source = write_prompts(tmp_path / "in.parquet", 10)
        spec = make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url, model={"preflight": True}))
        try:
            run_job(spec, handle_signals=False, progress=False)
        except PreflightError as exc:
            assert "global@us-east-1" in str(exc) and "us@us-east-1" in str(exc)
        else:
            raise AssertionError("expected a PreflightError")
        counters = emu.counters()
        assert counters["billed_requests"] == 0
        assert sum(sum(v.values()) for v in counters["requests"].values()) == 2  # one ping per route


class TestResidency:
    def test_eu_residency_never_calls_global(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """``residency = "eu"`` from eu-west-1: every call goes to ``eu.``, none to ``global.``."""
        source = write_prompts(tmp_path / "in.parquet", 80)
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            model={
                "region": "eu-west-1",
                "residency": "eu",
                "endpoints": ["global", "eu"],
                "preflight": True,
            },
        )
        report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["status"], r["model_id"], r["region"]) for r in rows} == {("ok", EU_HAIKU, "eu-west-1")}
        counters = emu.counters()
        assert counters["requests"]
        assert not [route for route in counters["requests"] if route.startswith("global.")]
        assert not [route for route in counters["requests"] if not route.endswith("@eu-west-1")]

    def test_eu_residency_holds_while_eu_is_down(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """With ``eu.`` failing, rows end as retryable errors rather than leave the geography."""
        emu.set_faults({"routes": [{"profile": "eu.*", "error_rate": 1.0}]})
        source = write_prompts(tmp_path / "in.parquet", 5)
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            model={"region": "eu-west-1", "residency": "eu"},
            retry={"max_attempts": 3},
        )
        report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        assert report.exit_code != EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {r["status"] for r in rows} == {"error"}
        assert all(r["retryable"] for r in rows)  # a rerun will try them again, still in eu
        assert not [route for route in emu.counters()["requests"] if not route.startswith("eu.")]


class TestQuota:
    QUOTA = 40_000
    ROWS = 500
    MAX_TOKENS = 1_000

    def quota_job(self, emu: EmulatorThread, tmp_path: Path, *, spec_tpm: int) -> tuple[float, int, int]:
        """Run the quota job once; returns (seconds, throttled calls, all calls) as the emulator saw them.

        Bedrock reserves ``input + max_tokens`` per request in flight against a rolling 60 s window and
        settles to the real usage when it ends. With 1,000 ``max_tokens`` and ~50-token answers, the
        500 rows reserve ~12x the 40k quota, so the quota binds on requests in flight (about 38 at first,
        fewer as settled usage accumulates) well below ``max_in_flight = 64``, within one window, in a
        couple of seconds: no test needs to wait for the window to slide.
        """
        emu.reset()
        emu.set_faults(
            {
                "defaults": {"latency": {"dist": "uniform", "min_ms": 50, "max_ms": 100}},
                "routes": [{"profile": GLOBAL_HAIKU, "region": "us-east-1", "tpm": self.QUOTA}],
            }
        )
        source = write_prompts(tmp_path / "in.parquet", self.ROWS)
        data = spec_data(
            source,
            tmp_path / f"out-{spec_tpm}",
            emu.url,
            model={"endpoints": ["global"]},
            request={"max_tokens": self.MAX_TOKENS},
            limits={"max_in_flight": 64, "tpm": spec_tpm},
            retry={"max_attempts": 50},
        )
        started = time.monotonic()
        report = run_job(
            make_spec(tmp_path, data, f"job-{spec_tpm}.toml"), handle_signals=False, progress=False
        )
        elapsed = time.monotonic() - started
        assert report.exit_code == EXIT_OK
        counters = emu.counters()
        outcomes = outcomes_of(counters, GLOBAL_HAIKU)
        assert outcomes["ok"] == self.ROWS
        assert counters["billed_requests"] == self.ROWS
        return elapsed, outcomes.get("ThrottlingException", 0), sum(outcomes.values())

    def test_known_quota_is_filled_with_few_throttles(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """``[limits] tpm`` equal to the route's quota: the job runs concurrently, under 3 % throttled."""
        elapsed, throttled, calls = self.quota_job(emu, tmp_path, spec_tpm=self.QUOTA)
        assert throttled <= 0.03 * calls
        assert elapsed < 12.0  # one at a time would take 500 x 75 ms = 37 s

    def test_unknown_quota_is_throttled_more(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Without ``tpm`` the adaptive limit has to find the quota by hitting it: more throttles
        than with it, but no storm. (41-98 of some 550 calls while a startup that spent this
        quota's 40 reservations read it as drained; since it counts a stock in tokens too, 7 in
        most runs, 41 in about one of ten, when the 429s are read late.)"""
        _, blind, calls = self.quota_job(emu, tmp_path, spec_tpm=0)
        _, informed, _ = self.quota_job(emu, tmp_path, spec_tpm=self.QUOTA)
        assert blind > informed
        assert blind <= 0.1 * calls


class TestSourceRegions:
    def test_three_regions_share_the_rows_each_on_its_own_quota(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """`regions` calls the global profile from three regions: each region's quota serves rows,
        none is throttled past its own quota, and stats reports the share each region carried."""
        from runner.stats import compute_stats

        regions = ["us-east-1", "us-east-2", "us-west-2"]
        emu.set_faults({"defaults": {"latency_ms": 20}, "routes": [{"profile": "global.*", "tpm": 20_000}]})
        source = write_prompts(tmp_path / "in.parquet", 90)
        data = spec_data(
            source, tmp_path / "out", emu.url, model={"regions": regions, "endpoints": ["global"]}
        )
        data["model"].pop("region")
        report = run_job(make_spec(tmp_path, data), handle_signals=False, progress=False)
        assert report.exit_code == EXIT_OK
        served = {r["region"] for r in read_results(tmp_path / "out").to_pylist()}
        assert served == set(regions)
        shares = compute_stats(tmp_path / "out").to_dict()["regions"]
        assert set(shares) == set(regions)
        assert all(v["rows"] >= 10 for v in shares.values())
