"""The quota model of one route against quota shapes Bedrock leaves undocumented (pure, simulated).

Figures from the issue's stand-in: Sonnet 4.5, 50 input + 256 max_tokens reserved, settled to
50 + 5 x 150, 600,000 TPM, 64 in flight, about 2.4 s per answer. The quota-bound limit of a job is
``(billed quota tokens - quota available at the start) / refill rate + one latency``, or the
concurrency bound when that is longer.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from runner.quota import (
    DRAIN_P,
    GUARD_ADMITTED_S,
    GUARD_PROBE_MAX_S,
    GUARD_PROBE_MIN_HOLD_S,
    LOOK_MAX_S,
    MAX_CUT,
    PROBE_CAP_S,
    PROBE_EVERY_S,
    PROBE_HOLD_S,
    PROBE_MAX_RISE,
    PROBE_MAX_WAIT_S,
    STARTUP_FIRST_WAVE,
    STREAK_BACKOFF,
    STREAK_MAX_BACKOFF,
    Charge,
    Notify,
    RouteQuota,
    _Cut,
    _share_floor,
    _tail,
)
from tests.unit.quota_sim import Outcome, Shape, run

ROWS, SETTLED, RATE, LATENCY = 1200, 800, 10_000, 2.4
BENCH_SHAPE: dict[str, Any] = {
    "tpm": 300_000,
    "rows": 600,
    "reserved": 656,
    "settled": 1150,
    "latency_s": 1.8,
}
"""bench_quota's route: Sonnet 4.5, ~400 input + 256 max_tokens, ~150 output, 300,000 TPM."""


def limit(start: float, max_in_flight: int = 64) -> float:
    quota_bound = max(0.0, ROWS * SETTLED - start * RATE * 60) / RATE + LATENCY
    return max(quota_bound, ROWS * LATENCY * 1.05 / max_in_flight)


def full_bucket_limit_s(rows: int = BENCH_SHAPE["rows"]) -> float:
    """bench_quota's limit for ``rows`` of its route on a bucket found full."""
    tpm, settled = float(BENCH_SHAPE["tpm"]), float(BENCH_SHAPE["settled"])
    return (rows * settled - tpm) / (tpm / 60) + float(BENCH_SHAPE["latency_s"])


def capacity_run(capacity_429: float, seed: int, *, notify: Notify | None = None) -> Outcome:
    """bench_quota's full bucket at its given tpm, ``capacity_429`` of the requests refused at random."""
    shape: dict[str, Any] = {"shape": "bucket", "start": 1.0, "known": True, **BENCH_SHAPE}
    return run(capacity_429=capacity_429, seed=seed, notify=notify, **shape)


class TestKnownQuota:
    @pytest.mark.parametrize("shape", ["bucket", "window"])
    def test_a_drained_quota_costs_one_small_wave(self, shape: str) -> None:
        """Started on an empty quota, the burst stops after its first wave and pacing holds the limit."""
        out = run(shape=shape, start=0.0)  # type: ignore[arg-type]
        assert out.throttled <= 3 * STARTUP_FIRST_WAVE
        assert limit(0.0) / out.seconds >= 0.9

    def test_a_full_bucket_is_used_at_once(self) -> None:
        """A full quota is not paced: the job runs at its concurrency bound, with no throttle."""
        out = run(shape="bucket", start=1.0, max_in_flight=256)
        assert out.throttled == 0
        assert limit(1.0, 256) / out.seconds >= 0.9

    def test_a_full_bucket_lifts_the_guard_without_draining_the_route(self) -> None:
        """The issue's full bucket (1,200 rows, concurrency-bound): the guard binds after ~30 s and
        the route goes on at its concurrency bound (a probe past it, found admitted when no 429
        came back, lifts it) instead of idling until its slowest answer is in (0.79 of the limit)."""
        out = run(shape="bucket", start=1.0)
        assert not out.quota.guard
        assert out.throttled == 0
        assert limit(1.0) / out.seconds >= 0.9

    def test_another_consumer_pushes_the_rate_below_tpm(self) -> None:
        """Throttles from traffic the runner cannot see lower its rate under the given tpm."""
        out = run(shape="bucket", start=0.0, other_share=0.5)
        assert out.quota._last_sample_rate is not None
        assert out.quota._last_sample_rate < 0.8 * 600_000 / 60
        assert out.throttled / out.requests <= 0.05

    def test_the_window_guard_stops_a_storm_after_the_burst(self) -> None:
        """On a rolling window spent by the first burst, requests wait for it to slide, not 429s."""
        out = run(shape="window", start=1.0, rows=2400)
        assert out.throttled / out.requests <= 0.02
        assert out.quota.guard  # a window never proved to refill continuously

    def test_a_full_window_pays_few_probes_past_its_guard(self) -> None:
        """bench_quota's full window, told its tpm: every probe past the guard is a 429 on a
        window, and they come further apart after each refusal, up to a minute: four in a 2-minute
        job (at most 16 s apart, seven: 1.5 % of its requests)."""
        out = run(shape="window", start=1.0, known=True, **BENCH_SHAPE)
        assert out.quota.guard
        assert out.throttled / out.requests <= 0.01

    def test_a_bucket_lifts_the_window_guard(self) -> None:
        """A request sent past the guard and admitted proves the quota refills continuously."""
        out = run(shape="bucket", start=1.0, rows=2400)
        assert not out.quota.guard
        assert out.throttled / out.requests <= 0.02

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_a_partly_drained_window_is_used_whole_once_its_minute_is_over(self, seed: int) -> None:
        """bench_quota's route on a window found 70 % full (a crashed run's charges, leaving it over
        the next minute): samples in that minute read its charges leaving as the quota and cut the
        rate; once the minute is over they are gone, and the rate goes back to the tpm given at
        once (it probed back by steps after a 40 s hold: 152 s for a job of 143)."""
        rates: list[tuple[float, str, float]] = []

        def notify(event: str, fields: dict[str, Any]) -> None:
            if event == "quota.rate":
                rates.append((fields["t"], str(fields["why"]), float(fields["rate_tpm"])))
            elif event == "quota.startup_ended":
                rates.append((fields["t"], "drained" if fields["drained"] else "full", 0.0))

        out = run(shape="window", start=0.3, known=True, seed=seed, notify=notify, **BENCH_SHAPE)
        given = 300_000 * out.quota.headroom
        drained = next(t for t, why, _ in rates if why == "drained")
        assert any(why == "measured" and t < drained + 60.0 and rate < 0.8 * given for t, why, rate in rates)
        after = [rate for t, why, rate in rates if why != "drained" and t <= drained + 65.0][-1]
        assert after == pytest.approx(given)  # by the minute's end, or a probe's step before it
        assert all(rate == pytest.approx(given) for t, why, rate in rates if t > drained + 65.0)
        assert out.throttled / out.requests <= 0.03

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_capacity_throttles_do_not_spend_the_burst(self, seed: int) -> None:
        """2 % refused at random, read late by a busy client: a full quota is still used at once,
        the job nearly as fast as without them (the burst lost would cost a fifth of its time).
        The credit behind a guard lifted on no news goes out in waves, which random 429s in the
        route's paced requests slow down: 5-6 % (it went out at once, into a full window too)."""
        out = run(shape="bucket", start=1.0, capacity_429=0.02, lag_s=0.15, seed=seed)
        clean = run(shape="bucket", start=1.0, lag_s=0.15, seed=seed)
        assert out.seconds <= 1.08 * clean.seconds

    @pytest.mark.parametrize("seed", [4, 9])
    def test_capacity_throttles_do_not_cut_a_given_tpm(self, seed: int) -> None:
        """bench_quota's route at its given tpm, 2 % of requests refused at random: a short sample
        between two of them, three of its eleven requests refused, is no evidence of a lower quota
        (it cut the rate to 0.72 of tpm, and the job ran at 0.66 of its limit with seed 4)."""
        rates: list[float] = []
        out = capacity_run(
            0.02,
            seed,
            notify=lambda event, fields: rates.append(fields["rate_tpm"]) if event == "quota.rate" else None,
        )
        assert min(rates, default=math.inf) >= 0.75 * 300_000
        assert full_bucket_limit_s() / out.seconds >= 0.85

    @pytest.mark.parametrize("seed", [4, 8, 16])
    def test_capacity_throttles_at_a_tenth_keep_a_given_tpm(self, seed: int) -> None:
        """bench_quota's full bucket at its given tpm, a tenth of the requests refused at random:
        the requests sent at tpm give the capacity share, which explains the 429s, and each gives
        its charge back, so the route sends a tenth more than tpm's pace and the quota takes all of
        tpm. (Every second 429 within a round trip emptied the model and a refused request took its
        charge with it: 0.78, 0.73 and 0.57 of the limit with these seeds; now 0.89-0.94.)"""
        out = capacity_run(0.1, seed)
        assert full_bucket_limit_s() / out.seconds >= 0.85
        assert out.throttled == out.capacity  # the quota itself refused nothing

    def test_capacity_throttles_at_a_tenth_are_seldom_a_drained_start(self) -> None:
        """The same over twenty seeds: with a tenth of the requests refused at random, a startup
        wave with 3 of 12 or 4 of 16 refused read as a drained quota in 11 runs of 20, and the route
        paced at tpm from an empty quota while the full one's stock sat unused (0.55 of the limit on
        average). A drained quota refuses most of a wave (:data:`STARTUP_EXIT_SHARE_GIVEN`): 4 runs
        in 20 still read so, and 3 of them find out (:meth:`RouteQuota._judge_drain_stock`): the
        mean is 0.89."""
        ratios, drained = [], 0
        for seed in range(1, 21):
            told: list[bool] = []

            def notify(event: str, fields: dict[str, Any], told: list[bool] = told) -> None:
                if event == "quota.startup_ended":
                    told.append(fields["drained"])

            out = capacity_run(0.1, seed, notify=notify)
            ratios.append(full_bucket_limit_s() / out.seconds)
            drained += told == [True]
        assert drained <= 8
        assert sum(ratios) / len(ratios) >= 0.85

    @pytest.mark.parametrize("seed", [1, 7, 12])
    def test_capacity_429s_read_as_a_drained_start_give_its_stock_back(self, seed: int) -> None:
        """Seeds whose startup reads a tenth of random 429s as a drained quota, `tpm` given: paced at
        tpm since, the route is still refused that share, which a drained quota refilling at the
        route's pace would not do, and a sample saw the quota take most of tpm, which another
        consumer would not let it. The stock goes out in waves, and the job ends near its limit
        (0.50, 0.32 and 0.53 of it when it stayed unused; 0.88-0.93 now)."""
        told: list[tuple[str, dict[str, Any]]] = []
        out = capacity_run(0.1, seed, notify=lambda event, fields: told.append((event, fields)))
        assert ("quota.startup_ended", True) in [(e, f.get("drained")) for e, f in told]
        assert any(event == "quota.drain_undone" for event, _ in told)
        assert full_bucket_limit_s() / out.seconds >= 0.8
        assert out.throttled == out.capacity

    @pytest.mark.parametrize(("shape", "start"), [("bucket", 0.0), ("window", 0.0), ("window", 0.3)])
    def test_a_drained_start_with_tpm_given_stays_drained(self, shape: Shape, start: float) -> None:
        """The same judge on quotas that were drained (or a window found 30 % free, its stock spent
        by the startup): paced at tpm, the quota refuses no more than the prior explains, or the
        stock was spent, and no stock comes back."""
        told: list[str] = []
        for seed in (1, 2, 3):
            told.clear()
            out = run(
                shape=shape,
                start=start,
                known=True,
                lag_s=0.15,
                seed=seed,
                notify=lambda event, _fields: told.append(event),
                **BENCH_SHAPE,
            )
            assert "quota.drain_undone" not in told
            assert (out.throttled - out.capacity) / out.requests <= 0.04

    @pytest.mark.parametrize("shape", ["bucket", "window"])
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_a_busy_client_reading_429s_late_costs_no_storm(self, shape: str, seed: int) -> None:
        """A drained start read ~150 ms late (a loaded machine): the next waves go out before the
        first 429s are read, and still the job throttles <= 2 % and runs near its limit."""
        out = run(shape=shape, start=0.0, lag_s=0.15, seed=seed)  # type: ignore[arg-type]
        assert out.throttled / out.requests <= 0.02
        assert limit(0.0) / out.seconds >= 0.9

    def test_the_waves_start_with_the_first_request(self) -> None:
        """A job that starts sending 5 s after its routes were made (input read, connections opened)
        still releases one small wave first: the waves due by then are not all released at once."""
        q = RouteQuota.create(tpm=600_000, headroom=1.0, now=0.0)
        for _ in range(STARTUP_FIRST_WAVE):
            assert q.delay(300.0, 5.0) == 0.0
            q.admit(300.0, 5.0)
        assert q.delay(300.0, 5.0) == pytest.approx(0.25 * math.log2(1.5), abs=0.01)

    def test_a_first_wave_refused_whole_ends_the_startup(self) -> None:
        """Both requests of the first wave refused: with ``tpm`` given the quota is drained, and
        the route paces from empty at once (two 429s at 2 % capacity 429s: p = 0.0004)."""
        told: list[tuple[str, dict[str, Any]]] = []
        q = RouteQuota.create(tpm=600_000, headroom=1.0, now=0.0, notify=lambda e, f: told.append((e, f)))
        first = []
        while q.delay(300.0, 0.0) == 0.0:
            first.append(q.admit(300.0, 0.0))
        assert len(first) == STARTUP_FIRST_WAVE
        for charge in first:
            q.throttled(charge, 0.02)
        assert q.phase == "steady"
        assert ("quota.startup_ended", {"drained": True, "released": 600}) in told
        assert q.delay(300.0, 0.03) > 0.0

    def test_a_first_wave_refused_in_part_goes_on(self) -> None:
        """One 429 of two is a capacity 429 as likely as a drained quota: the waves go on."""
        q = RouteQuota.create(tpm=600_000, headroom=1.0, now=0.0)
        first = [q.admit(300.0, 0.0) for _ in range(STARTUP_FIRST_WAVE)]
        q.throttled(first[0], 0.02)
        q.settle(first[1], 800.0, 0.2)
        assert q.phase == "startup"
        assert q.delay(300.0, 0.25) == 0.0

    @pytest.mark.parametrize("seed", [1, 3, 5])
    def test_a_drained_bucket_costs_its_first_wave_only(self, seed: int) -> None:
        """The issue's drained bucket, told its tpm, 429s read 150 ms late: the first wave's two
        429s end the startup. (They were too few to: the bucket's refill admitted the next waves,
        and the one that found it empty a second later cost 19 429s with seed 1.)"""
        out = run(shape="bucket", start=0.0, lag_s=0.15, seed=seed)
        assert out.throttled <= 2 * STARTUP_FIRST_WAVE
        assert limit(0.0) / out.seconds >= 0.95

    def test_throttles_count_against_the_wave_they_went_out_in(self) -> None:
        """Three 429s of the first wave, read during the third, end the startup: the later waves'
        admissions do not dilute them."""
        q = RouteQuota.create(tpm=600_000, headroom=1.0, now=0.0)
        first = [q.admit(300.0, 0.0) for _ in range(4)]
        for t in (0.26, 0.51):
            while q.delay(300.0, t) == 0.0:
                q.admit(300.0, t)
        for charge in first[:3]:
            q.throttled(charge, 0.55)
        assert q.phase == "steady"
        assert q.level <= 0.0

    @pytest.mark.parametrize("known", [True, False])
    def test_a_drain_with_tpm_given_is_most_of_a_wave_refused(self, known: bool) -> None:
        """Three 429s of a wave of ten end the startup with ``tpm`` unknown (a quarter: a drain's cut
        is judged and undone if the share was capacity 429s); with it given they are capacity 429s
        as likely as a drain, and only half the wave refused says the quota is empty."""
        q = RouteQuota.create(tpm=600_000 if known else 0, headroom=1.0, now=0.0)
        first = [q.admit(300.0, 0.0) for _ in range(12)]  # the first wave's two, then ten
        for charge in first[2:5]:
            q.throttled(charge, 0.05)
        assert q.phase == ("startup" if known else "steady")
        if known:
            for charge in first[5:7]:
                q.throttled(charge, 0.06)
            assert q.phase == "steady"

    @pytest.mark.parametrize("lag", [0.0, 0.15])
    @pytest.mark.parametrize("seed", [1, 2])
    def test_a_given_tpm_holds_through_a_closed_minute(self, seed: int, lag: float) -> None:
        """A fixed window found used up, closed for its first 30 s, `tpm` given: paced at it, the
        route cannot have overdrawn the quota by itself, so a sample of nothing is a closed quota,
        not a measure (four of them halved the rate to 19,700 TPM of 294,000, where it stayed until
        the drain's minute was over: 43 of 643 requests throttled), and a long run of 429s waits
        seconds between requests, not a fraction of one. With 429s read late, the request sent
        last before a sample ends has no 429 back yet: it is no sign that the quota admits (taken
        for one, it read the closed minute as 4,500 TPM and cut the rate to its floor, and while
        that cut was judged the streak's backoff was off: a 429 every 0.4 s for 15 s)."""
        rates: list[float] = []
        out = run(
            shape="fixed",
            start=0.0,
            reset_s=30.0,
            known=True,
            seed=seed,
            lag_s=lag,
            notify=lambda event, fields: rates.append(fields["rate_tpm"]) if event == "quota.rate" else None,
            **BENCH_SHAPE,
        )
        assert not rates  # the rate stayed at tpm
        assert out.throttled / out.requests < 0.05


class TestUnknownQuota:
    def test_a_first_wave_refused_whole_ends_the_startup_at_the_next_429(self) -> None:
        """Not told its tpm, a route whose first wave is refused whole goes on (what the next waves
        are admitted measures the refill), until the first 429 of a later wave: drained."""
        told: list[tuple[str, dict[str, Any]]] = []
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0, notify=lambda e, f: told.append((e, f)))
        first = [q.admit(300.0, 0.0) for _ in range(STARTUP_FIRST_WAVE)]
        for charge in first:
            q.throttled(charge, 0.02)
        assert not [e for e, _ in told if e == "quota.startup_ended"]
        later = []
        while q.delay(300.0, 0.8) == 0.0:
            later.append(q.admit(300.0, 0.8))
        assert len(later) >= 12  # one 429 in them is no quarter of the startup's admissions
        q.throttled(later[1], 0.82)
        assert [f["drained"] for e, f in told if e == "quota.startup_ended"] == [True]
        assert q.phase == "steady"

    def test_a_drained_bucket_costs_few_throttles(self) -> None:
        """The issue's drained bucket, not told its tpm, 429s read 150 ms late: <= 2 % of the
        requests throttled over five seeds, 2.5 % in any one (28-34 429s in a run when three were
        needed to end the startup, whatever the first wave said). Most of what is left is a probe
        that climbs on the credit the bucket built while discovery and the guard held the route
        back: 13-26 429s a run, as the probes' last step lands."""
        outs = [run(shape="bucket", start=0.0, known=False, lag_s=0.15, seed=seed) for seed in range(1, 6)]
        assert sum(out.throttled for out in outs) <= 0.02 * ROWS * len(outs)
        assert all(out.throttled <= 0.025 * ROWS for out in outs)
        assert all(limit(0.0) / out.seconds >= 0.9 for out in outs)

    @pytest.mark.parametrize("shape", ["bucket", "window"])
    @pytest.mark.parametrize("lag", [0.0, 0.15])
    def test_a_quota_found_partly_used_is_paced_from_its_stock_not_as_a_refill(
        self, shape: Shape, lag: float
    ) -> None:
        """bench_quota's route on a quota found 30 % free (a crashed run, another job): the startup's
        waves are taken whole until the stock runs out, then refused. Half of what they took per
        second, a drained quota's measure, read that stock as a refill of 1,200,000 TPM of 300,000:
        17-26 % of the job's requests throttled. A minute of it at most, and discovery from there."""
        out = run(shape=shape, start=0.3, known=False, seed=1, lag_s=lag, **BENCH_SHAPE)
        assert (out.throttled - out.capacity) / out.requests <= 0.05

    def test_a_refused_bursts_measure_caps_probes_only_while_429s_come(self) -> None:
        """A refused burst's measure is taken for a window's size, and probes stay under it while the
        guard stands; paced at it, the guard's holds are too short for a probe past it. A measure
        read wrong (37,700 TPM of a 300,000 TPM bucket, random 429s taken for capacity before the
        burst) held a route there to the end of a 740 s job. With no 429 for PROBE_CAP_S the probes
        go past it."""
        q = steady(60_000)
        q._window_measure = q._rate_minute  # as a refused burst sets it, on its 429s
        q._throttled_at = 0.0
        rates = []
        for step in range(3_200):  # 320 s, no 429
            now = step / 10
            while q.delay(50.0, now) == 0.0:
                q.settle(q.admit(50.0, now), 50.0, now)
            rates.append((now, q.rate * 60))
        assert all(rate <= 60_000 for t, rate in rates if t < PROBE_CAP_S)
        assert rates[-1][1] > 60_000

    @pytest.mark.parametrize("known", [True, False])
    @pytest.mark.parametrize("seed", [1, 2])
    def test_a_quota_closed_for_most_of_a_minute_is_no_storm(self, known: bool, seed: int) -> None:
        """A fixed window found used up, closed until its minute ends 48 s in (another job holding
        all of a quota does the same): every request refused, at any rate. That is no capacity
        429s at 60 % (a judge read it so and unpaced the route: thousands of 429s a second, and the
        job never ended), and no room to double into (discovery reached eight times the quota by
        the time it opened). The job ends, its 429s a small share, not a storm."""
        out = run(shape="fixed", start=0.0, reset_s=48.0, known=known, seed=seed, **BENCH_SHAPE)
        assert out.seconds < 3 * (48.0 + 600 * 1150 / 5_000)
        assert out.throttled / out.requests < 0.2
        assert math.isfinite(out.quota.rate)

    @pytest.mark.parametrize("lag", [0.0, 0.15])
    @pytest.mark.parametrize("seed", [1, 2])
    def test_a_fixed_windows_spent_minute_is_no_measure_of_the_next(self, lag: float, seed: int) -> None:
        """bench_quota's fixed window found full, its minute ending 30 s in, `tpm` unknown: probes
        spend the next minute by its 40th second, and its closed rest reads as samples of 53,000
        and 0 TPM. Paced at that cut (47,000 TPM of 300,000) through the minute after, probing up
        from it, the job took 115-151 s; the rate before the cuts comes back when the quota admits
        again: within 110 s (its limit, each minute spent at the concurrency bound as it opens, is
        94 s)."""
        whys: list[str] = []
        out = run(
            shape="fixed",
            start=1.0,
            reset_s=30.0,
            known=False,
            seed=seed,
            lag_s=lag,
            notify=lambda event, fields: whys.append(fields["why"]) if event == "quota.rate" else None,
            **BENCH_SHAPE,
        )
        assert "reopened" in whys
        assert out.seconds <= 110.0

    @pytest.mark.parametrize("seed", [15, 30])
    def test_a_quota_closed_through_discovery_is_discovered_when_it_opens(self, seed: int) -> None:
        """bench_quota's fixed window found used up until its minute ends 30 s in, `tpm` unknown,
        429s read late: in two runs of sixty a sample of nothing in discovery's first doublings
        ended it at the rate's floor (19,680 TPM), and probes climbed from there, 10 % at a time and
        capped at twice it: 542-637 s for a job whose limit is 154 s. Discovery goes on when the
        quota admits again."""
        out = run(shape="fixed", start=0.0, reset_s=30.0, known=False, seed=seed, lag_s=0.15, **BENCH_SHAPE)
        assert out.seconds <= 200.0

    @pytest.mark.parametrize("seed", [2, 5])
    def test_a_closed_minute_is_no_storm_while_its_cut_is_judged(self, seed: int) -> None:
        """The same window, found used up, `tpm` unknown, 429s read late: the drained startup's
        cut is judged for up to 30 s, and the streak's backoff was off meanwhile (the judge needs
        requests), so the route sent into the closed minute every 0.4 s: 12 % and 17 % of these
        runs' requests refused. A streak that capacity 429s at 60 % could hardly make backs off
        even then (its waits capped at 2 s); and in such a streak the request with no 429 back yet
        makes no closed quota look open (read so, a sample cut the rate to a third of the quota
        with no return)."""
        out = run(shape="fixed", start=0.0, reset_s=30.0, known=False, seed=seed, lag_s=0.15, **BENCH_SHAPE)
        assert out.throttled / out.requests < 0.085
        assert out.seconds <= 180.0

    @pytest.mark.parametrize("lag", [0.0, 0.15])
    def test_a_bucket_holding_less_than_a_minute_is_not_read_as_its_burst(self, lag: float) -> None:
        """A bucket holding 20 s of its refill, found full, `tpm` unknown: the startup spends it and
        its refused burst reads a minute of what it took, 38 % of the refill. Probes climb from what
        the bucket admitted since it was empty (twice the measure for two minutes, the rule before:
        0.69 of the job's limit)."""
        out = run(shape="bucket", start=1.0, burst_s=20.0, known=False, lag_s=lag, **BENCH_SHAPE)
        bound = (600 * 1150 - 20 * 5_000) / 5_000 + 1.8
        assert out.seconds <= bound / 0.8
        assert out.throttled / out.requests <= 0.04

    def test_one_throttle_sets_no_rate(self) -> None:
        """A lone 429 on an unpaced route (capacity, most likely) leaves it unpaced: it looks for a
        moment (:meth:`RouteQuota._look`), then goes on."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase = "steady"  # past startup
        assert q.delay(100.0, 5.0) == 0.0
        charges = [q.admit(100.0, 5.0) for _ in range(50)]
        q.throttled(charges[0], 5.01)
        assert math.isinf(q.rate)
        assert 0.0 < q.delay(100.0, 5.02) <= LOOK_MAX_S
        now, sent = 5.02, 0
        while now < 5.02 + 2 * LOOK_MAX_S + 1.0:  # the looks, and the waves after them
            while q.delay(100.0, now) == 0.0 and sent < 200:
                q.settle(q.admit(100.0, now), 100.0, now)
                sent += 1
            now += 0.01
        assert math.isinf(q.rate)
        assert q.delay(100.0, now) == 0.0
        assert sent == 200

    def test_the_first_429_of_a_spent_quota_stops_the_route_until_its_storm_is_read(self) -> None:
        """An unpaced route, 100 requests a second, the quota spent at 0.6 s and its 429s read
        20-400 ms late, out of order (a busy client): sending on until three of them were read made
        a storm of 14 refusals; stopped at the first for as long as the others take to come back,
        and then sending two, seven."""
        lags = [0.02, 0.3, 0.15, 0.4, 0.05, 0.25, 0.1, 0.35]
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase = "steady"
        pending: list[tuple[float, Charge, bool]] = []
        refused = 0
        for step in range(300):
            now = step * 0.01
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                if item[2]:
                    q.throttled(item[1], now)
                else:
                    q.settle(item[1], 500.0, now)
            if math.isfinite(q.rate):
                break
            if q.delay(500.0, now) == 0.0:
                charge = q.admit(500.0, now)
                spent = now >= 0.6
                refused += spent
                pending.append((now + (lags[step % len(lags)] if spent else 1.0), charge, spent))
        assert math.isfinite(q.rate)
        assert refused <= 8

    @pytest.mark.parametrize("seed", [1, 2])
    def test_looks_at_capacity_429s_cost_a_small_share_of_the_time(self, seed: int) -> None:
        """No quota, a twentieth of the requests refused at random, 50 requests a second: a look at
        each would stop the route most of the time. Their credit keeps it to LOOK_SHARE (and the
        credit it starts with), the waves after each included."""
        rnd = random.Random(seed)
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase = "steady"
        unpaced = held = 0
        for step in range(3_000):  # 60 s
            now = step * 0.02
            if math.isfinite(q.rate):
                break  # a cluster of them read as a storm: the judge's business, not the looks'
            unpaced += 1
            if q.delay(100.0, now) > 0.0:
                held += 1
                continue
            charge = q.admit(100.0, now)
            if rnd.random() < 0.05:
                q.throttled(charge, now + 0.01)
            else:
                q.settle(charge, 100.0, now + 0.01)
        assert unpaced >= 500
        assert held <= 0.1 * unpaced  # LOOK_SHARE's 5 %, and the credit it starts with

    def test_another_consumer_is_measured(self) -> None:
        """Half the quota drawn by traffic the runner cannot see: the rate it finds is near the other half."""
        out = run(shape="bucket", start=0.0, known=False, other_share=0.5)
        rate = out.quota.figures(out.seconds).rate_tpm
        assert rate is not None and 0.3 * 600_000 <= rate <= 0.7 * 600_000

    @pytest.mark.parametrize("seed", [1, 2, 3, 4])
    def test_capacity_throttles_are_not_a_quota(self, seed: int) -> None:
        """30 % of requests refused at random, no quota: the cuts they cause are undone, and the job
        runs within 3x its concurrency bound (34-72 s of a 34 s bound; 1,560 s when every random 429
        read as the quota). The startup takes them for a drained quota; the route learns otherwise.
        (Seed 4: 1,646 s when a run of four 429s backed the route off while a cut was judged.)"""
        out = run(tpm=10**9, known=False, start=1.0, capacity_429=0.3, rows=600, seed=seed)
        assert out.seconds <= 3.0 * 600 * LATENCY * 1.05 / 64 / 0.7
        assert out.quota.capacity_share >= 0.15

    @pytest.mark.parametrize(
        ("seed", "reserved", "settled"),
        [(8, 111, 60), (14, 306, 800), (31, 306, 800), (3, 111, 60), (7, 306, 800), (7, 111, 60)],
    )
    def test_capacity_throttles_read_as_a_drained_start_are_undone(
        self, seed: int, reserved: float, settled: float
    ) -> None:
        """The issue's second trial at its own speed (answers in 75 ms, 300 rows): random 429s
        among the first requests (three of four with seed 8) read as a drained quota. The cut is
        judged by whether the route, paced at half of what the quota took, is still refused more
        than the 2 % prior explains: it is, and the cut is undone (356 s with seed 8, 599 s with
        seed 14, when it was judged against the startup's share as exact and the route sat at its
        floor). Seeds 31 and 3: samples between two random 429s cut the rate before the judge had
        its ten requests, and restarted its count (637 and 491 s); no sample cuts while it judges.
        Seed 7: undone to unpaced on 4 of 18 requests refused, the next cluster of 30 % random
        429s read as a storm against that 22 % (403 and 201 s); storms are tested against the
        share's upper bound until the route has sent enough to measure it."""
        out = run(
            tpm=10**9,
            known=False,
            start=1.0,
            capacity_429=0.3,
            rows=300,
            latency_s=0.075,
            seed=seed,
            reserved=reserved,
            settled=settled,
        )
        assert out.seconds <= 60.0

    @pytest.mark.parametrize("seed", [1, 2])
    def test_a_doubled_quota_is_found_within_seconds(self, seed: int) -> None:
        """A full bucket doubled at 20 s (bench_quota's cell): probes of 10 %, 20 %, 40 % find it
        by about 32 s, and the job runs within 0.9 of its bound (0.79 by steps of 5 % and 10 %
        after a 20 s hold)."""
        shape = {**BENCH_SHAPE, "tpm_change": (20.0, 600_000.0)}
        out = run(shape="bucket", start=1.0, known=False, seed=seed, **shape)
        tpm, settled = BENCH_SHAPE["tpm"], BENCH_SHAPE["settled"]
        need = BENCH_SHAPE["rows"] * settled - tpm - 20.0 * tpm / 60  # after the capacity and 20 s
        limit_s = 20.0 + need / (2 * tpm / 60) + BENCH_SHAPE["latency_s"]
        assert limit_s / out.seconds >= 0.9

    @pytest.mark.parametrize("seed", [1, 3])
    def test_a_stock_of_large_reservations_is_no_drained_quota(self, seed: int) -> None:
        """``max_tokens`` 4,096 (4,496 tokens reserved, 1,150 settled) on a full 300,000 TPM
        bucket: the quota holds 67 reservations, fewer than the 128 requests that said "a stock",
        and the startup that spent them read a drained quota at 3,800,000 TPM; the judge undid that
        cut within two seconds, and the route stormed the spent quota (42 and 329 429s of 600 rows).
        Counted in tokens too, the stock is measured as a refused burst: 3 429s."""
        events: list[tuple[str, dict[str, Any]]] = []
        long_max_tokens = {**BENCH_SHAPE, "reserved": BENCH_SHAPE["reserved"] - 256 + 4_096}
        out = run(
            shape="bucket",
            start=1.0,
            known=False,
            seed=seed,
            notify=lambda event, fields: events.append((event, fields)),
            **long_max_tokens,
        )
        assert [f["drained"] for e, f in events if e == "quota.startup_ended"] == [False]
        assert out.throttled <= 0.02 * out.requests

    def test_a_capacity_share_found_at_a_probe_undoes_the_cuts(self) -> None:
        """A tenth of the requests refused at random, `tpm` given: the quiet periods give the
        capacity share when a probe step closes one, not a cut. The samples' cuts it proves wrong
        are undone then too (258 s of an 80 s limit when only a cut could undo them: the route
        climbed back by probe steps, capped at twice a rate the next sample halved)."""
        out = run(shape="bucket", start=1.0, known=True, capacity_429=0.1, seed=14, **BENCH_SHAPE)
        tpm, rows, settled = BENCH_SHAPE["tpm"], BENCH_SHAPE["rows"], BENCH_SHAPE["settled"]
        limit_s = (rows * settled - tpm) / (tpm / 60) + BENCH_SHAPE["latency_s"]  # a full bucket
        assert limit_s / out.seconds >= 0.4

    @pytest.mark.parametrize("seed", [1, 6])
    def test_capacity_throttles_at_a_tenth_do_not_ratchet_the_rate(self, seed: int) -> None:
        """bench_quota's full bucket, a tenth of the requests refused at random: each sample between
        two of them read the rate less their share and cut it, a sample every 5-10 s, and the job
        ran at a tenth of its limit (897 and 767 s of 80). The periods after the cuts refuse that
        share too: they give the capacity share, and the cuts are undone (183 and 88 s)."""
        out = run(shape="bucket", start=1.0, known=False, capacity_429=0.1, seed=seed, **BENCH_SHAPE)
        tpm, rows, settled = BENCH_SHAPE["tpm"], BENCH_SHAPE["rows"], BENCH_SHAPE["settled"]
        limit_s = (rows * settled - tpm) / (tpm / 60) + BENCH_SHAPE["latency_s"]  # a full bucket
        assert out.quota.capacity_share >= 0.03
        assert limit_s / out.seconds >= 0.4

    def test_capacity_throttles_at_two_percent_do_not_ratchet_a_long_job(self) -> None:
        """Four times bench_quota's rows (about nine minutes of quota), 2 % of requests refused at
        random: each sample between two of them cuts the rate a little, and only probes win it
        back. When every random 429 ended a probe step, the rate fell for good: 828 and 823 s of a
        494 s limit. When each such cut put the next probe off and doubled the hold, cuts came every
        20-30 s with no probe between them: over ten seeds 0.90 of the limit on average, the worst
        0.72 (twenty seeds: 0.93, 0.72); now 0.94 and 0.82 (twenty: 0.96, 0.82). Which run is the
        worst moves with any change to what the route does before."""
        rows = 4 * BENCH_SHAPE["rows"]
        shape = {**BENCH_SHAPE, "rows": rows}
        tpm, settled = BENCH_SHAPE["tpm"], BENCH_SHAPE["settled"]
        limit_s = (rows * settled - tpm) / (tpm / 60) + BENCH_SHAPE["latency_s"]  # a full bucket
        outs = [
            run(shape="bucket", start=1.0, known=False, capacity_429=0.02, seed=seed, **shape)
            for seed in range(1, 11)
        ]
        ratios = [limit_s / out.seconds for out in outs]
        quota = [(out.throttled - out.capacity) / out.requests for out in outs]
        assert sum(ratios) / len(ratios) >= 0.92
        assert min(ratios) >= 0.78
        assert sum(quota) / len(quota) <= 0.02 and max(quota) <= 0.03

    @pytest.mark.parametrize("seed", [1, 3])
    def test_capacity_throttles_do_not_lift_a_windows_guard(self, seed: int) -> None:
        """The same on a full window: samples between random 429s cut the rate, the guard's quota
        with it, and a probe past the smaller guard was admitted by the window a refused burst had
        measured: the guard lifted on a window and probes climbed to twice it (567 and 721 s of a
        546 s limit, 6.1 % and 1.9 % of the requests refused by the quota). Below that measure a
        probe proves nothing, and the rate may climb back to it. Samples between random 429s still
        cut a window's rate now and then, and where they fall is chaotic: over seeds 1-20, 0.98 of
        the limit on average, the worst 0.875 (seed 1, 619 s; 0.945 while probes past the guard came
        at most 16 s apart, a path as random), so one run is held to 0.85."""
        rows = 4 * BENCH_SHAPE["rows"]
        shape = {**BENCH_SHAPE, "rows": rows}
        out = run(shape="window", start=1.0, known=False, capacity_429=0.02, seed=seed, **shape)
        tpm, settled = BENCH_SHAPE["tpm"], BENCH_SHAPE["settled"]
        minutes = math.ceil(rows * settled / tpm) - 1  # full windows, then the rest at once
        limit_s = 60.0 * minutes + BENCH_SHAPE["latency_s"]
        assert out.quota.guard
        assert limit_s / out.seconds >= 0.85
        assert (out.throttled - out.capacity) / out.requests <= 0.02

    @pytest.mark.parametrize(("shape", "seed"), [("bucket", 1), ("bucket", 2), ("window", 1)])
    def test_a_full_quota_spent_by_a_quick_startup_is_no_drain(self, shape: str, seed: int) -> None:
        """Answers in 0.6 s (short outputs): settlements land while the startup waves still double,
        and the wave that finds the quota spent reads like a drained start. Taken for one, the rate
        was half of what the quota took per second of the startup, a full bucket's 300,000 TPM
        read as millions, and discovery and samples of 0 halved it back in storms (bucket: 11 % and
        51 % of the requests throttled; window: 13 %, 392 s). The waves before it took all they were
        sent: a stock was spent, measured as a refused burst's."""
        shape_kw = {**BENCH_SHAPE, "rows": 1200, "latency_s": 0.6}
        out = run(shape=shape, start=1.0, known=False, seed=seed, **shape_kw)  # type: ignore[arg-type]
        tpm, settled = BENCH_SHAPE["tpm"], BENCH_SHAPE["settled"]
        bucket_s = (1200 * settled - tpm) / (tpm / 60)  # what the capacity leaves, at the refill
        window_s = 60.0 * (math.ceil(1200 * settled / tpm) - 1)  # full minutes, then the rest
        limit_s = (bucket_s if shape == "bucket" else window_s) + 0.6
        assert out.throttled / out.requests <= 0.02
        assert limit_s / out.seconds >= 0.9

    @pytest.mark.parametrize(("refused", "ended"), [(3, False), (6, True)])
    def test_the_wave_that_finds_a_stock_spent_ends_the_startup_early(
        self, refused: int, ended: bool
    ) -> None:
        """130 requests taken whole in the first waves, then 40 in the next: six 429s among them
        are no random 429s (p < 0.001 at the 2 % prior), and the startup ends on them, as a spent
        stock, not at a quarter of the wave (ten); three may be random: it goes on."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        for i in range(130):  # waves 0-5, every answer at once
            at = i * 0.011
            q.settle(q.admit(500.0, at), 500.0, at)
        wave = [q.admit(500.0, 1.6 + i * 0.001) for i in range(40)]
        for charge in wave[:refused]:
            q.throttled(charge, 1.65)
        assert (q.phase == "steady") is ended
        assert math.isfinite(q.rate) is ended

    def test_a_quota_halved_behind_the_guard_costs_no_storm_when_it_lifts(self) -> None:
        """The issue's stand-in, its 600,000 TPM bucket halved at 20 s while the window guard held
        the route at a refused burst's measure (756,000 TPM: the capacity counted in). When the
        guard lifted, a round trip of that rate went at once, 27 requests into the halved quota,
        26 refused (3.5-3.9 % of the job's requests throttled, four runs). Now it starts at its
        pace, and the first samples cut it before a storm (1.3-2.0 %)."""
        shares = []
        for seed in range(1, 5):
            out = run(known=False, seed=seed, lag_s=0.15 if seed % 2 else 0.0, tpm_change=(20.0, 300_000))
            shares.append(out.throttled / out.requests)
        assert sum(shares) / len(shares) <= 0.02

    def test_a_full_quota_with_capacity_429s_and_256_in_flight_is_read_before_a_storm(self) -> None:
        """The issue's stand-in with 256 requests in flight and 2 % of them refused at random: the
        full bucket's stock runs out while a hundred requests a second go out, and 37-109 429s went
        by before the refused burst was read (3.4 % of the requests, six runs; 1.1 % now)."""
        shares = []
        for seed in range(1, 7):
            out = run(
                known=False, seed=seed, lag_s=0.15 if seed % 2 else 0.0, max_in_flight=256, capacity_429=0.02
            )
            shares.append((out.throttled - out.capacity) / out.requests)
        assert sum(shares) / len(shares) <= 0.02

    def test_the_rate_is_learnt_from_a_drained_quota(self) -> None:
        """Unknown and drained: the job runs near its limit, with few throttles."""
        out = run(shape="bucket", start=0.0, known=False)
        assert limit(0.0) / out.seconds >= 0.85
        assert out.throttled / out.requests <= 0.02


def steady(tpm: float, now: float = 0.0) -> RouteQuota:
    """A model past startup, paced at ``tpm``, its quota found empty at ``now``."""
    q = RouteQuota.create(tpm=0, headroom=1.0, now=now)
    q.phase, q.rate, q.burst, q.level, q._anchor = "steady", tpm / 60, tpm, 0.0, tpm / 60
    q._hold(now)
    return q


def sampled(q: RouteQuota, t: float, refused: int = 0) -> None:
    """Paced at 6,000 tokens a second: a throttle at ``t`` + 0.5 s, 41 requests of 500 tokens
    (``refused`` of them refused, spread out), and a paced throttle at ``t`` + 4 s: a sample under
    the rate."""
    refuse = set(range(5, 41, 36 // refused)[:refused]) if refused else set()
    q.throttled(q.admit(500.0, t + 0.5), t + 0.51)
    for i in range(41):
        at = t + 0.6 + i * 0.08
        charge = q.admit(500.0, at)
        if i in refuse:
            q.throttled(charge, at + 0.01)
        else:
            q.settle(charge, 500.0, at + 0.01)
    q.delay(500.0, t + 4.0)
    q.level = 0.0  # paced: the model had no room left
    q.throttled(q.admit(500.0, t + 4.0), t + 4.01)


class TestDecisions:
    def test_a_refused_burst_sets_the_rate_from_a_minute_of_capacity(self) -> None:
        """A full quota spent in 4 s then refused in a row: the rate is a minute of what the quota
        took (a window's quota, a bucket's capacity and 4 s of refill), not half of it per second."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase = "steady"
        charges = [q.admit(1_000.0, i / 100) for i in range(400)]  # 400,000 tokens in 4 s
        for charge in charges[-3:]:
            q.throttled(charge, 4.01)
        assert q.rate * 60 == pytest.approx(400_000, rel=0.02)

    def test_a_sample_cuts_by_max_cut_at_most(self) -> None:
        """A span across the debt of a burst reads near zero: the rate is cut to MAX_CUT, not floored."""
        q = steady(600_000)
        now = 0.0
        while q._last_sample_rate is None and now < 10.0:  # paced requests, every one refused
            now += q.delay(500.0, now)
            q.throttled(q.admit(500.0, now), now + 0.001)
            now += 0.01
        assert q._last_sample_rate is not None and q._last_sample_rate < 1_000
        assert q.rate * 60 == pytest.approx(600_000 * MAX_CUT)

    def test_probes_stay_within_reach_of_the_last_evidence(self) -> None:
        """With the route always held back by its rate and no throttle, probes climb to at most
        PROBE_MAX_RISE times the rate the model last measured (until PROBE_CAP_S at that cap)."""
        q = steady(60_000)
        rates = []
        for step in range(1_500):  # 150 s
            now = step / 10
            while q.delay(50.0, now) == 0.0:
                q.settle(q.admit(50.0, now), 50.0, now)
            rates.append(q.rate * 60)
        assert max(rates) == pytest.approx(PROBE_MAX_RISE * 60_000)
        assert rates[-1] == pytest.approx(PROBE_MAX_RISE * 60_000)

    def test_a_guard_with_no_window_behind_it_lets_probes_past_the_cap(self) -> None:
        """The window guard books the route's own charges at the rate's minute, so a route paced at
        its rate always fills it, and its holds are too short for a probe of its own: with no window
        ever found (no refused burst's measure, no 429 at the guard), it held the rate's probes back
        for good (a fixed window's closed minute read as 18,000 TPM of 300,000 stayed there for
        minutes). With no 429 for PROBE_CAP_S, the probes go on, past the cap as without the guard."""
        q = steady(60_000)
        assert q.guard
        for step in range(3_200):  # 320 s
            now = step / 10
            while q.delay(50.0, now) == 0.0:
                q.settle(q.admit(50.0, now), 50.0, now)
        assert q.rate * 60 > PROBE_MAX_RISE * 60_000

    @pytest.mark.parametrize("guard", [False, True])
    def test_probes_climb_from_what_a_refilling_quota_took_since_it_was_empty(self, guard: bool) -> None:
        """Past the window guard the quota refills continuously: empty at the last 429, it has since
        admitted all the route sent, and can only have refilled that much, so probes climb to twice
        that, not only to twice the last measure. With the guard standing (a window may admit a
        minute's worth at once as its charges expire), the cap holds until PROBE_CAP_S."""
        q = steady(60_000)
        q.guard = guard
        q._empty(0.0)
        rates = []
        for step in range(1_000):  # 100 s, no 429
            now = step / 10
            while q.delay(50.0, now) == 0.0:
                q.settle(q.admit(50.0, now), 50.0, now)
            rates.append(q.rate * 60)
        if guard:
            assert max(rates) == pytest.approx(PROBE_MAX_RISE * 60_000)
        else:
            assert rates[-1] > 2 * PROBE_MAX_RISE * 60_000

    def test_probes_go_past_the_cap_after_long_at_it_with_no_throttle(self) -> None:
        """Past the window guard, a route held back by its rate at PROBE_MAX_RISE times its last
        evidence, with no throttle for PROBE_CAP_S, has spent any credit a slower rate let build:
        that rate is the evidence probes climb from (the cap stuck a route at a third of its quota)."""
        q = steady(60_000)
        q.guard = False
        rates: list[tuple[float, float]] = []
        for step in range(3_200):  # 320 s
            now = step / 10
            while q.delay(50.0, now) == 0.0:
                q.settle(q.admit(50.0, now), 50.0, now)
            rates.append((now, q.rate * 60))
        capped = next(t for t, rate in rates if rate >= PROBE_MAX_RISE * 60_000)
        assert all(rate <= PROBE_MAX_RISE * 60_000 for t, rate in rates if t < capped + PROBE_CAP_S)
        assert rates[-1][1] > PROBE_MAX_RISE * 60_000

    def test_a_429_at_the_cap_restarts_its_clock(self) -> None:
        """Any 429 at the cap, even one that capacity 429s would explain, may be the quota's: the
        rate stays within the cap for PROBE_CAP_S after it."""
        q = steady(60_000)
        q.guard = False
        rates: list[tuple[float, float]] = []
        for step in range(3_200):
            now = step / 10
            if step == 1_200:  # at the cap since 35-40 s
                q.level = 0.0
                q.throttled(q.admit(50.0, now), now + 0.01)
            while q.delay(50.0, now) == 0.0:
                q.settle(q.admit(50.0, now), 50.0, now)
            rates.append((now, q.rate * 60))
        assert all(rate <= PROBE_MAX_RISE * 60_000 for t, rate in rates if t < 120.0 + PROBE_CAP_S)

    def test_a_sample_is_the_refill_not_the_debt_in_flight(self) -> None:
        """Between two throttles the quota took what it refilled: the requests admitted in between
        and still in flight were booked by the service at their reservation only, the rest comes
        when they settle. A sample that counted their whole cost read what was sent, not the quota
        (360,000 TPM of a 300,000 window while the requests in flight grew)."""
        q = steady(60_000, now=-10.0)
        q._settled_n, q._extra = 10, 500.0  # each request reserves 300 and settles to 800
        q.throttled(q.admit(300.0, 0.0), 0.001)
        for i in range(20):  # 20 requests admitted over 2 s, all still in flight
            q.admit(300.0, 0.1 * i)
        q.throttled(q.admit(300.0, 2.0), 2.001)
        assert q._last_sample_rate == pytest.approx(20 * 300 / 2.0, rel=0.05)

    def test_an_overshoot_is_measured_from_the_last_empty_quota(self) -> None:
        """Unknown and drained: discovery doubles the rate while the quota refills, and overshoots.
        The quota was empty at the start and is again: what it took in between is its refill, the
        new rate (half of what was sent over the last round trip, the rule before, was 553,000 TPM
        of a 300,000 quota and cost a second burst of throttles)."""
        overshoots: list[float] = []

        def notify(event: str, fields: dict[str, Any]) -> None:
            if fields.get("why") == "overshoot":
                overshoots.append(fields["rate_tpm"])

        out = run(shape="bucket", start=0.0, known=False, notify=notify, **BENCH_SHAPE)
        assert overshoots and all(0.85 * 300_000 <= rate <= 1.1 * 300_000 for rate in overshoots)
        assert out.throttled / out.requests <= 0.025

    @pytest.mark.parametrize("span", [20.0, 40.0, 55.0])
    def test_an_overshoot_up_to_a_minute_after_the_last_empty_quota_is_measured_from_it(
        self, span: float
    ) -> None:
        """A bucket empty at both ends of a span of a minute or less cannot have filled to its
        capacity (a minute of refill) in between: what it took is its refill. (Bounded at 30 s,
        an overshoot 43 s after a partly used quota's stock ran out read half of what the route
        had sent, and its storm and the low samples after it throttled 5-6 % of a job end to end.)"""
        q = steady(60_000)  # 1,000 tokens a second, found empty at 0
        q.guard = False
        q.discovering, q._grown_at, q._emptied = True, 1.0, (0.0, 0.0, q._taken.total)
        overshoots: list[float] = []
        q.notify = lambda event, fields: overshoots.extend(
            [fields["rate_tpm"]] if fields.get("why") == "overshoot" else []
        )
        t, pending = 0.0, []
        while t < span:  # 500 tokens each half second, answered a second later: the rate exactly
            t += 0.5
            pending.append((q.admit(500.0, t), t + 1.0))
            for charge, due in [p for p in pending if p[1] <= t]:
                q.settle(charge, 500.0, due)
                pending.remove((charge, due))
        q.level = 0.0
        q.throttled(q.admit(500.0, t + 0.5), t + 0.51)
        assert overshoots and 0.95 * 60_000 <= overshoots[0] <= 1.01 * 60_000

    @pytest.mark.parametrize("seed", [1, 2])
    def test_no_rate_probe_for_a_minute_after_a_drained_start(self, seed: int) -> None:
        """A drained window holds, for a minute, charges the guard cannot see (another job's): a
        probe then raises the guard's quota past the window's, and the debt comes due as the minute
        ends (probes to 350,000 of a 300,000 TPM window, then a storm and a halving)."""
        decisions: list[tuple[str, float]] = []

        def notify(event: str, fields: dict[str, Any]) -> None:
            decisions.append((str(fields.get("why", event)), fields["t"]))

        out = run(shape="window", start=0.0, known=False, seed=seed, notify=notify, **BENCH_SHAPE)
        drained = next(t for why, t in decisions if why == "drained")
        assert all(t >= drained + 60.0 for why, t in decisions if why == "probe")
        assert out.throttled / out.requests <= 0.02

    def test_no_rate_probe_while_the_window_guard_holds(self) -> None:
        """Unknown quota, a rolling window that starts unused: the route spends its minute at once,
        then the window guard holds it until the window slides. It does not probe its rate
        meanwhile (that raises the guard's own quota into a full window: a storm)."""
        out = run(shape="window", start=1.0, known=False, rows=2400)
        assert out.quota.guard
        assert out.throttled / out.requests <= 0.02

    @staticmethod
    def refused_in_a_row(q: RouteQuota, n: int, tokens: float = 1_000.0) -> list[float]:
        """Send ``n`` requests as the pacing lets them go, each refused at once; their admission times."""
        times: list[float] = []
        now = 0.0
        while len(times) < n:
            now += q.delay(tokens, now)
            times.append(now)
            q.throttled(q.admit(tokens, now), now + 0.001)
            now += 0.001
        return times

    def test_a_run_of_429s_backs_off(self) -> None:
        """A quota cut below the rate refuses every request sent at the rate until a sample can cut
        it: from the fourth 429 in a row the next admission goes twice as far back each time, up to
        STREAK_MAX_BACKOFF requests at the rate, instead of one request apart."""
        q = steady(300_000)
        one = 1_000.0 / q.rate  # one request's worth at the rate
        gaps = [b - a for a, b in itertools.pairwise(self.refused_in_a_row(q, STREAK_BACKOFF + 3))]
        before = gaps[: STREAK_BACKOFF - 1]
        assert before == pytest.approx([one] * len(before), rel=0.05)
        after = gaps[STREAK_BACKOFF - 1 :]
        assert after[0] >= 8 * one
        assert after[-1] == pytest.approx((1 + STREAK_MAX_BACKOFF) * one, rel=0.05)

    def test_an_answer_ends_the_run(self) -> None:
        """A request admitted after the run began and answered: the quota admits again, and the
        next 429s start a new count."""
        q = steady(300_000)
        times = self.refused_in_a_row(q, STREAK_BACKOFF)
        now = times[-1] + 20.0
        q.settle(q.admit(1_000.0, now), 1_000.0, now + 0.001)
        assert q._streak == 0

    def test_no_back_off_while_a_cut_is_judged(self) -> None:
        """The requests sent after a cut tell capacity 429s from the quota: 429s in a row then do
        not hold them back (30 % capacity 429s refuse four in a row once in 120 tries)."""
        q = steady(300_000)
        q._cut = _Cut(600_000 / 60, 0.7, 0.0)
        one = 1_000.0 / q.rate
        gaps = [b - a for a, b in itertools.pairwise(self.refused_in_a_row(q, STREAK_BACKOFF + 3))]
        assert gaps == pytest.approx([one] * len(gaps), rel=0.05)

    @staticmethod
    def first_step(q: RouteQuota, start: float = PROBE_HOLD_S) -> float:
        """Send what the rate lets through, every answer at once, from ``start`` until the first
        probe step: its time (nothing sent at the step yet)."""
        now = start
        while q.rate == q._anchor and now < PROBE_HOLD_S + 10.0:
            while q.delay(500.0, now) == 0.0 and q.rate == q._anchor:
                q.settle(q.admit(500.0, now), 500.0, now)
            now += 0.1
        return now

    def test_a_refused_probe_step_goes_back(self) -> None:
        """A paced 429 of a request sent at a probe step's rate ends the step: the rate before it
        comes back at once (no ten more requests over the quota for a sample), and the next probe
        waits twice as long: the quota is steady there."""
        q = steady(300_000, now=0.0)
        q.settle(q.admit(500.0, 0.5), 500.0, 1.0)
        q.level = 0.0
        now = self.first_step(q, start=1.0)  # paced: a request a slot, none of the step's yet
        assert q.rate * 60 == pytest.approx(330_000)  # the first step: 10 %
        stepped = now
        q.delay(500.0, now + 1.0)
        q.level = 0.0  # paced: the model had no room left
        q.throttled(q.admit(500.0, now + 1.0), now + 1.01)
        assert q.rate * 60 == pytest.approx(300_000)
        assert q._hold_s == 2 * PROBE_HOLD_S
        assert q._probe_at >= stepped + 2 * PROBE_HOLD_S

    def test_a_429_of_a_request_sent_before_the_step_does_not_end_it(self) -> None:
        """...but one sent before the step says nothing of it."""
        q = steady(300_000, now=0.0)
        before = q.admit(500.0, PROBE_HOLD_S - 0.5)
        now = self.first_step(q)
        q.level = 0.0
        q.throttled(before, now + 0.01)
        assert q.rate * 60 == pytest.approx(330_000)

    @pytest.mark.parametrize("seen", [0.02, 0.0])
    def test_a_random_429_late_in_a_step_does_not_end_it(self, seen: float) -> None:
        """...nor, on a route refused 2 % at random, one that comes after 20 requests at the step:
        capacity 429s would refuse one of them a third of the time. So even on a route that has
        seen no 429 with room left (a queue always full: every 429 is paced): the prior says 2 %
        may be random. (Ending the step there, 2 % capacity 429s ended every probe, and the
        samples between them ratcheted the rate down for good.)"""
        q = steady(300_000, now=0.0)
        q._capacity_seen = seen
        now = self.first_step(q)
        for i in range(20):
            q.settle(q.admit(500.0, now + i * 0.05), 500.0, now + i * 0.05)
        q.level = 0.0
        q.throttled(q.admit(500.0, now + 1.0), now + 1.01)
        assert q.rate * 60 == pytest.approx(330_000)

    @pytest.mark.parametrize(("refused", "cut"), [(4, False), (12, True)])
    def test_a_capacity_share_explains_a_sample_only_over_its_whole_span(
        self, refused: int, cut: bool
    ) -> None:
        """A capacity share of 13 % explains a sample of ten requests with three refused, but not
        14 refused of the 43 since the earliest throttle of the span: the quota (a share taken
        for capacity 429s too early). Four of 43 it does explain: no cut."""
        t = 30.0
        q = steady(360_000, now=t)
        q.capacity_share, q._refusals = 0.13, 0.3
        sampled(q, t, refused=refused)
        assert (q.rate * 60 < 360_000) is cut

    def test_a_sample_a_little_under_the_rate_cuts_it(self) -> None:
        """A sample 2.4 % under what the route sent: the rate is over the quota by that much, and
        each 429 of it, one in 40 requests, would come back for the rest of the job: cut."""
        t = 30.0
        q = steady(360_000, now=t)
        sampled(q, t)  # 20,500 tokens in 3.5 s: 5,857 a second of the rate's 6,000
        assert q._last_sample_rate == pytest.approx(20_500 / 3.5)
        assert q.rate == pytest.approx(20_500 / 3.5 * 0.97)

    def test_a_quota_found_closed_gets_the_rate_before_back_when_it_admits_again(self) -> None:
        """Two samples in which the quota took nothing (a fixed window's spent minute) cut the rate
        twice, to 48,000 TPM of 300,000; they measured no rate. The first request admitted after
        them and answered brings back the rate before the first (no more than the quota took over
        the minute before the closure), as a probe step: a paced 429 at it is cut again."""
        t = 60.0
        q = steady(300_000, now=0.0)
        for i in range(600):  # a minute at 300,000 TPM, all of it taken
            q.settle(q.admit(500.0, i * 0.1), 500.0, i * 0.1 + 0.05)

        def closed(start: float) -> None:
            q.throttled(q.admit(500.0, start + 0.5), start + 0.51)
            for i in range(20):
                at = start + 0.6 + i * 0.17
                q.delay(500.0, at)
                q.throttled(q.admit(500.0, at), at + 0.01)
            q.delay(500.0, start + 4.0)
            q.level = 0.0  # paced: the model had no room left
            q.throttled(q.admit(500.0, start + 4.0), start + 4.01)

        closed(t)
        assert q.rate * 60 == pytest.approx(120_000)
        closed(t + 50.0)  # past the first cut's hold-off
        assert q.rate * 60 == pytest.approx(48_000)
        now = t + 60.0
        while q.delay(500.0, now) > 0.0:
            now += 0.1
        charge = q.admit(500.0, now)
        q.settle(charge, 500.0, now + 1.0)
        restored = q.rate * 60
        assert restored == pytest.approx(300_000 * 56.1 / 60, rel=0.01)  # taken from 4.6 to 60.5 s
        q.delay(500.0, now + 1.1)
        q.level = 0.0  # paced
        q.throttled(q.admit(500.0, now + 1.1), now + 1.11)
        assert q.rate * 60 < 0.5 * restored

    @pytest.mark.parametrize(("refused", "put_off"), [(0, False), (12, True)])
    def test_a_small_cut_that_capacity_429s_explain_puts_no_probe_off(
        self, refused: int, put_off: bool
    ) -> None:
        """A sample 2.4 % under what the route sent, its two 429s of 43 within what random ones
        refuse: the rate is cut a little, but the next probe comes when it would have (a cut every
        20-30 s, each holding the probes off 20-60 s, ratcheted a job with 2 % capacity 429s down
        to half its quota). Twelve more refused is the quota: the cut holds the probes off."""
        t = 30.0
        q = steady(360_000, now=t)
        probe_at = q._probe_at
        sampled(q, t, refused=refused)
        assert q.rate * 60 < 360_000
        assert (q._probe_at > probe_at) is put_off

    def test_a_sample_leaves_out_what_settlements_gave_back(self) -> None:
        """Answers settling 300 tokens below their reservations (``max_tokens`` above the outputs):
        the ten requests in flight at the sample's first throttle give 3,000 tokens back as they
        land, and the route sends into that room. The quota refilled what the route took less
        that: 11,000 tokens in 3.5 s, not 14,000 (samples so read a 300,000 TPM bucket as
        345,000-365,000, and the rate stayed over it, a 429 every 2.6 s for a minute)."""
        t = 30.0
        q = steady(600_000, now=t)
        q._settled_n, q._extra = 10, -300.0
        early = [q.admit(1000.0, t + 0.4) for _ in range(10)]
        q.throttled(q.admit(1000.0, t + 0.5), t + 0.51)
        for charge in early:
            q.settle(charge, 700.0, t + 1.0)
        for i in range(20):
            at = t + 0.6 + i * 0.15
            q.settle(q.admit(1000.0, at), 700.0, at + 0.01)
        q.delay(1000.0, t + 4.0)
        q.level = 0.0  # paced: the model had no room left
        q.throttled(q.admit(1000.0, t + 4.0), t + 4.01)
        assert q._last_sample_rate == pytest.approx((20 * 700 - 10 * 300) / 3.5)

    def test_a_refused_burst_counts_later_refunds_at_their_reservations(self) -> None:
        """What a quota held when it refused: the requests that had landed by then at their settled
        charges, those still running at their reservations, however soon after they landed and
        gave part back (a burst's measure read late counted those refunds, and read a 300,000 TPM
        window with ``max_tokens`` 4,096 as 280,000)."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        landed, running = q.admit(1000.0, 1.0), q.admit(1000.0, 1.2)
        q.settle(landed, 700.0, 1.5)
        q.settle(running, 700.0, 2.5)
        assert q._taken.since(0.0, 2.0) == pytest.approx(1400.0)
        assert q._holding(0.0, 2.0) == pytest.approx(1700.0)

    def test_holds_lengthen_while_samples_agree(self) -> None:
        """Two cuts that measured about the same rate: the quota is steady, the next hold is longer."""
        t = 30.0
        q = steady(600_000, now=t)
        q._last_cut_sample = 15_000 / 3.5
        q.throttled(q.admit(500.0, t + 0.5), t + 0.51)
        for i in range(30):
            q.settle(q.admit(500.0, t + 0.6 + i * 0.1), 500.0, t + 0.7 + i * 0.1)
        q.delay(500.0, t + 4.0)
        q.level = 0.0  # paced: the model had no room left
        q.throttled(q.admit(500.0, t + 4.0), t + 4.01)
        assert q._last_sample_rate == pytest.approx(15_000 / 3.5, rel=0.05)
        assert q._hold_s == 2 * PROBE_HOLD_S


FAR_ABOVE: dict[str, tuple[float, int, float, float, float, float, float]] = {
    # The settled charges fill the guard: 299 s at a window's pace, 0.68 of the bucket's limit
    # (1,200 x 1,100 - 300,000 tokens at 5,000 a second, plus a round trip); within 0.85 of it.
    "settled charges": (
        300_000,
        1200,
        4196,
        1100,
        4.0,
        ((1200 * 1100 - 300_000) / 5000 + 4.0) / 0.85,
        0.01,
    ),
    # The reservations in flight fill it, and each answer frees it: holds under 2 s, 63-67 s at
    # a window's pace; the concurrency bound is about 48 s.
    "reservations in flight": (600_000, 2000, 1124, 350, 1.5, 60.0, 0.005),
}
"""Quota_sim cases with ``tpm`` given and reservations far above the settled charges: tpm, rows,
reserved, settled, answer time, the bucket's job time at most, the share of a window's requests
throttled at most."""


class TestWindowGuard:
    @staticmethod
    def at_the_guard(n: int) -> tuple[RouteQuota, list[Charge]]:
        """A route told 60,000 TPM, out of startup, with ``n`` requests of 300 (settling to 800)
        in flight and its minute spent up to the guard by settled ones."""
        q = RouteQuota.create(tpm=60_000, headroom=1.0, now=0.0)
        q.phase, q._settled_n, q._extra = "steady", 10, 500.0
        q.window.reserve(60_000 - n * 800 - 100, 0.0)
        q.level = q.burst
        return q, [q.admit(300.0, 1.0) for _ in range(n)]

    def test_fillers_go_while_a_window_would_admit_them(self) -> None:
        """At the guard with 3 requests in flight, a window still holds only their reservations: a
        request it would admit goes on, as a filler (not a probe), while the overfill stays small."""
        q, _ = self.at_the_guard(3)
        assert q.delay(300.0, 2.0) == 0.0
        assert not q.admit(300.0, 2.0).probe

    def test_the_probe_goes_once_a_window_would_refuse_it(self) -> None:
        """With the window's room spent, the next request is a probe, sent with others in flight:
        once the route's own charges are past the guard's quota, not while 100 tokens are left (a
        window that refused a request at a measure of its size may hold up to a request more, and
        would admit a probe sent then)."""
        q, _ = self.at_the_guard(0)
        assert q.delay(300.0, 2.0) > 0.0
        q.window.reserve(200.0, 2.0)  # a settlement lands above its reservation
        assert q.delay(300.0, 2.0) == 0.0
        probe = q.admit(300.0, 2.0)
        assert probe.probe
        assert q.delay(300.0, 2.1) > 0.0  # one probe at a time

    @staticmethod
    def at_the_guard_settling_below(room: float, in_flight: int = 0) -> tuple[RouteQuota, list[Charge]]:
        """A route told 60,000 TPM whose answers settle 200 tokens below their 300-token
        reservations (``max_tokens`` far above the outputs), its window ``room`` short of full, with
        ``in_flight`` of its requests out (sent at 1 s)."""
        q = RouteQuota.create(tpm=60_000, headroom=1.0, now=0.0)
        q.phase, q._settled_n, q._extra = "steady", 10, -200.0
        q.window.reserve(60_000 - room - 300.0 * in_flight, 0.0)
        q.level = q.burst
        out = [q.admit(300.0, 1.0) for _ in range(in_flight)]
        return q, out

    def test_a_probe_judged_at_its_answer_goes_however_short_the_hold(self) -> None:
        """A window holds the reservations of the requests in flight, as the guard books them, and
        each answer frees it: no filler took the route past the guard's quota, its holds stayed
        under 2 s, and no probe went (a bucket paced as a window). With ``tpm`` given, a request
        the guard holds goes as the probe at once, with 100 tokens of room and a hold of 1.5 s; at
        its answer a window of the guard's quota would have refused it: the guard lifts."""
        q, _ = self.at_the_guard_settling_below(100.0)
        q.window.tpm = q.guard_quota
        assert 0.0 < q.window.wait_time(300.0, 58.5) < GUARD_PROBE_MIN_HOLD_S
        assert q.delay(300.0, 58.5) == 0.0
        probe = q.admit(300.0, 58.5)
        assert probe.probe
        q.delay(300.0, 58.5 + GUARD_ADMITTED_S)
        assert q.guard  # not lifted for no 429 in time: judged at its answer
        q.settle(probe, 100.0, 59.5, server_s=0.9, service_reserved=300.0)
        assert not q.guard

    def test_no_lift_when_an_answer_may_have_freed_the_window(self) -> None:
        """The same probe, with two requests in flight when it went: one of them had been at the
        service since before the probe was sent (its answer's own time says so), so a window may
        have taken its refund back already and admitted the probe: no news, and the next probe
        waits 2 s."""
        q, (early, late) = self.at_the_guard_settling_below(100.0, in_flight=2)
        probe = q.admit(300.0, 58.5)
        assert probe.probe
        q.settle(early, 100.0, 58.6, server_s=57.0, service_reserved=300.0)  # ended by 58.0
        q.settle(late, 100.0, 59.8, server_s=58.7, service_reserved=300.0)  # ended after 59.7
        q.settle(probe, 100.0, 59.5, server_s=0.9, service_reserved=300.0)
        assert q.guard
        assert q._guard_probe_at == pytest.approx(59.5 + 2.0)

    def test_the_verdict_waits_for_the_requests_in_flight_when_the_probe_went(self) -> None:
        """The probe is answered before a request that was in flight when it went: what a window
        held for that one is not known yet, so the guard holds and no other probe goes; once it is
        answered (it ended after the probe arrived), the guard lifts."""
        q, (other,) = self.at_the_guard_settling_below(100.0, in_flight=1)
        probe = q.admit(300.0, 58.5)
        q.settle(probe, 100.0, 59.5, server_s=0.9, service_reserved=300.0)
        assert q.guard
        assert q.delay(300.0, 59.55) > 0.0
        q.settle(other, 100.0, 59.6, server_s=58.6, service_reserved=300.0)
        assert not q.guard

    def test_a_probe_sent_late_counts_the_answers_ended_before_it_arrived(self) -> None:
        """A busy client admits the probe at 58.5 s but sends it late: answered at 60.0 s after 0.5 s
        at the service, it arrived at 59.5 s at the latest. A request in flight at its admission
        ended at the service no earlier than 59.2 s, so perhaps before the probe arrived: a window
        may have taken its refund back and admitted the probe. No lift."""
        q, (other,) = self.at_the_guard_settling_below(100.0, in_flight=1)
        probe = q.admit(300.0, 58.5)
        q.settle(other, 100.0, 59.4, server_s=58.2, service_reserved=300.0)
        q.settle(probe, 100.0, 60.0, server_s=0.5, service_reserved=300.0)
        assert q.guard

    def test_no_lift_when_the_reservations_in_flight_were_estimated_high(self) -> None:
        """A window counts each reservation in its own tokens: answered after the probe, the
        requests in flight then show the route's estimates 150 tokens over each, so a window held
        less than the books, and may have admitted the probe: no lift."""
        q, out = self.at_the_guard_settling_below(100.0, in_flight=2)
        probe = q.admit(300.0, 58.5)
        for charge in out:
            q.settle(charge, 100.0, 59.0, server_s=58.9, service_reserved=150.0)
        q.settle(probe, 100.0, 59.5, server_s=0.9, service_reserved=240.0)
        assert q.guard

    def test_a_refused_probe_waits(self) -> None:
        """A window of the guard's size refuses the probe: the guard holds, and the next try waits
        4 s."""
        q, _ = self.at_the_guard_settling_below(100.0)
        probe = q.admit(300.0, 58.5)
        q.throttled(probe, 58.51)
        assert q.guard
        assert q._guard_probe_at == pytest.approx(58.51 + 4.0)
        assert q.delay(300.0, 59.5) > 0.0

    @staticmethod
    def paired(room: float) -> tuple[RouteQuota, list[Charge], Charge]:
        """At the guard settling below, ``tpm`` unknown, a minute's hold: the requests it holds go
        as partners while the route's charges stay within a request past the guard's quota, then
        the probe."""
        q, _ = TestWindowGuard.at_the_guard_settling_below(room)
        q.known, q.ceiling = False, math.inf
        partners: list[Charge] = []
        while True:
            assert q.delay(300.0, 2.0) == 0.0
            charge = q.admit(300.0, 2.0)
            if charge.probe:
                return q, partners, charge
            partners.append(charge)

    def test_with_tpm_unknown_the_probe_goes_with_partners(self) -> None:
        """``tpm`` unknown, answers settling below their reservations: the guard's quota is a refused
        burst's measure, a window's size give or take a request, and fillers never take the route
        past it, so a lone probe never went (a full bucket at a window's pace). With 100 tokens of
        room, the held requests go at once: two partners (the route's charges 200 then 500 past the
        guard's quota), then the probe, past it by a request more. Not on a hold under 2 s, and not
        judged at its answer: admitted with its partners, the guard lifts."""
        q, _ = self.at_the_guard_settling_below(100.0)
        q.known, q.ceiling = False, math.inf
        assert q.delay(300.0, 58.5) > 0.0
        q, partners, probe = self.paired(100.0)
        assert len(partners) == 2 and not any(p.probe for p in partners)
        assert q._test is None
        for charge in [*partners, probe]:
            q.settle(charge, 100.0, 3.0)
        assert not q.guard

    def test_partners_go_below_a_windows_cap(self) -> None:
        """A 429 with the guard's window full capped the guard 1,000 tokens under the rate's minute
        (a refused burst's measure of a bucket: capacity and refill). With ``tpm`` unknown and
        answers settling below their reservations no filler gets past the cap, and that margin,
        counted as room a probe would not test, held the probe back for the rest of the minute:
        the partners go from the cap."""
        q, _ = self.at_the_guard_settling_below(1_100.0)
        q.known, q.ceiling = False, math.inf
        q._window_cap = 59_000.0
        assert q.guard_quota == 59_000.0
        assert q.delay(300.0, 2.0) == 0.0
        charge = q.admit(300.0, 2.0)
        assert not charge.probe and q._partners == [charge]

    def test_a_guard_held_route_probes_back_to_the_bursts_measure(self) -> None:
        """``tpm`` unknown, answers settling 200 tokens below their 300-token reservations, a refused
        burst measured a 60,000 TPM window, and samples cut the rate to half of it: the guard (at
        the rate's minute) holds the route, never the rate, whose level the landing answers keep
        full. The rate is probed back toward the measure all the same (it stayed at the cut: 0.45
        of a job's limit)."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase, q._settled_n, q._extra = "steady", 10, -200.0
        q.rate = q._anchor = 500.0
        q.burst, q._window_measure = 30_000.0, 60_000.0
        for i in range(40):  # sent at 2,000 tokens a second, settled
            q.level = q.burst
            q.settle(q.admit(300.0, i * 0.05), 100.0, i * 0.05 + 0.01)
        q.window.reserve(30_000.0 - 100.0 - 40 * 100.0, 0.0)  # the guard's minute, 100 tokens short
        q.level, q._probe_at = q.burst, 1.0
        q.window.tpm = q.guard_quota
        assert q.guard and q.window.wait_time(300.0, 2.0) > 0.0  # the guard holds the route
        q.delay(300.0, 2.0)
        assert q.rate == pytest.approx(550.0)  # a probe step, within the measure

    def test_a_refused_partner_is_a_refused_probe(self) -> None:
        """A window refuses the second partner: the probe admitted after it proves nothing (the
        window had room for it in the partner's place), the guard holds, and the next try waits
        4 s, as after a refused probe."""
        q, (first, second), probe = self.paired(100.0)
        q.throttled(second, 2.01)
        assert q._guard_probe_at == pytest.approx(2.01 + 4.0)
        q.settle(first, 100.0, 3.0)
        q.settle(probe, 100.0, 3.0)
        assert q.guard

    def test_a_partners_late_429_puts_the_guard_back(self) -> None:
        """No 429 back in time: the guard lifts on no news; a partner's 429 read after that puts it
        back, as the probe's own would."""
        q, partners, _ = self.paired(100.0)
        q.delay(300.0, 2.0 + GUARD_ADMITTED_S + 0.01)
        assert not q.guard
        q.throttled(partners[0], 3.5)
        assert q.guard

    @pytest.mark.parametrize("shape", ["bucket", "window"])
    @pytest.mark.parametrize("case", list(FAR_ABOVE))
    def test_max_tokens_far_above_the_outputs(self, case: str, shape: Shape) -> None:
        """``tpm`` given, reservations (``max_tokens``) far above the settled charges: a bucket's
        guard lifts, and the job runs near the bucket's limit; a window keeps its guard, at the cost
        of a 429 or a few."""
        tpm, rows, reserved, settled, latency_s, bucket_s, window_429s = FAR_ABOVE[case]
        out = run(
            shape=shape,
            start=1.0,
            known=True,
            tpm=tpm,
            rows=rows,
            reserved=reserved,
            settled=settled,
            latency_s=latency_s,
        )
        if shape == "bucket":
            assert not out.quota.guard
            assert out.seconds < bucket_s
        else:
            assert out.quota.guard
            assert out.throttled <= window_429s * out.requests

    @pytest.mark.parametrize("shape", ["bucket", "window"])
    @pytest.mark.parametrize("max_tokens", [1024, 4096])
    def test_max_tokens_above_the_outputs_tpm_unknown(self, max_tokens: int, shape: Shape) -> None:
        """bench_quota's route with ``tpm`` unknown and ``max_tokens`` 1,024 (the runner's default)
        or 4,096 for the same answers: a bucket's guard lifts, with partners, and the job runs
        within 0.85 of the bucket's limit (0.64 and 0.61 before: the guard never lifted); a window
        keeps its guard, at 2 % of the requests throttled at most."""
        reserved = float(BENCH_SHAPE["reserved"]) - 256 + max_tokens
        out = run(shape=shape, start=1.0, known=False, **{**BENCH_SHAPE, "reserved": reserved})
        if shape == "bucket":
            assert not out.quota.guard
            assert out.seconds < full_bucket_limit_s() / 0.85
        else:
            assert out.quota.guard
            assert out.throttled <= 0.02 * out.requests

    def test_probes_a_window_refuses_come_further_and_further_apart(self) -> None:
        """Every probe past a window's guard is a 429. A bucket's first or second is admitted; from
        the third on, the waits grow fourfold, up to a minute (doubling up to 16 s, a full window's
        2-minute job paid seven 429s for them)."""
        q, _ = self.at_the_guard(0)
        q.window.reserve(200.0, 2.0)  # past the guard's quota: probes go
        now, waits = 2.0, []
        for _ in range(3):  # within the minute of the window's charges
            assert q.delay(300.0, now) == 0.0
            probe = q.admit(300.0, now)
            assert probe.probe
            q.throttled(probe, now + 0.01)
            waits.append(round(q._guard_probe_at - (now + 0.01), 6))
            now = q._guard_probe_at
        assert waits == [4.0, 16.0, GUARD_PROBE_MAX_S]
        assert q.guard

    def test_the_probe_waits_for_the_debt_of_the_last_empty_quota(self) -> None:
        """Found empty at 2 s with 3,000 tokens owed by the requests in flight, at 1,000 tokens a
        second: no probe past the guard before that debt would be repaid at two thirds of the rate
        (4.5 s later), as a refused burst's rate reads a bucket's capacity as refill."""
        q, _ = self.at_the_guard(0)
        q.window.reserve(200.0, 2.0)  # past the guard's quota: a probe may go
        q._emptied = (2.0, 3_000.0, q._taken.total)
        assert q.delay(300.0, 4.0) > 0.0
        assert q.delay(300.0, 6.6) == 0.0
        assert q.admit(300.0, 6.6).probe

    def test_a_probe_with_no_429_in_time_lifts_the_guard(self) -> None:
        """No 429 back within GUARD_ADMITTED_S: it was admitted, the guard is lifted at once..."""
        q, _ = self.at_the_guard(0)
        q.delay(300.0, 2.0)
        assert q.admit(300.0, 2.0).probe
        assert q.delay(300.0, 2.0 + GUARD_ADMITTED_S / 2) > 0.0
        q.delay(300.0, 2.0 + GUARD_ADMITTED_S)
        assert not q.guard

    def test_an_unknown_quota_keeps_no_burst_past_a_lifted_guard(self) -> None:
        """Unknown, the rate is a refused burst's measure, a minute of what the quota took: for a
        (shared) bucket, its capacity on top of the refill. What the model's level built up at that
        rate while the guard held the route back is not sent at once when the guard lifts: two
        requests' worth goes, and the rate is tried at its pace (a round trip of it, the rule before, was 27
        requests at once into a quota halved behind the guard). With tpm given, the rate is the
        user's, and the level stays."""
        for known in (False, True):
            q = RouteQuota.create(tpm=60_000 if known else 0, headroom=1.0, now=0.0)
            q.phase, q._settled_n, q._extra, q._round_trip = "steady", 10, 500.0, 2.0
            q.rate, q.burst, q.guard = 1_000.0, 60_000.0, True
            q.window.reserve(60_000 - 100, 0.0)
            q.level = 30_000.0  # 30 s of the rate, built up behind the guard
            q.delay(300.0, 2.0)
            probe = q.admit(300.0, 2.0)
            assert probe.probe
            q.settle(probe, 800.0, 4.0)
            assert not q.guard
            if known:
                assert q.level >= 30_000.0 - 800.0
            else:
                assert 0.0 < q.level <= STARTUP_FIRST_WAVE * 800.0  # two requests, settled

    def test_the_rate_probed_after_the_guard_lifts_is_judged_since_the_lift(self) -> None:
        """A rate probe needs the rate to have held the route back over the last two round trips.
        Right after the guard lifts, the guard held it then, not the rate: counted over them, the
        route paced at its rate since the lift looked idle, and the first probe waited a round trip
        longer (a quota doubled at 20 s, `tpm` unknown: 0.936 -> 0.903 of the job's limit)."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase, q._settled_n, q._extra, q._round_trip = "steady", 10, 500.0, 4.0
        q.rate, q.burst, q.guard, q._anchor = 1_000.0, 60_000.0, True, 1_000.0
        q.window.reserve(60_000 - 100, 0.0)
        q.level = 30_000.0
        q.delay(300.0, 2.0)
        probe = q.admit(300.0, 2.0)
        q.settle(probe, 800.0, 2.5)  # admitted: the guard lifts at 2.5 s
        assert not q.guard
        q._probe_at = 3.6
        t = 2.5
        while t < 3.7:  # the route sends as fast as its rate lets it
            while q.delay(300.0, t) == 0.0:
                q.admit(300.0, t)
            t += 0.05
        assert q.rate > 1_000.0

    @classmethod
    def lifted_on_no_news(cls) -> tuple[RouteQuota, Charge]:
        """:meth:`at_the_guard`, 30 s of the rate built up behind the guard (2 s round trips), and
        a probe sent past it at 2 s with no 429 back in time: the guard lifted, the answer out."""
        q, _ = cls.at_the_guard(0)
        q._round_trip = 2.0
        q.window.reserve(200.0, 2.0)  # past the guard's quota: a probe goes
        q.delay(300.0, 2.0)
        probe = q.admit(300.0, 2.0)
        q.level = 30_000.0
        q.delay(300.0, 2.0 + GUARD_ADMITTED_S)
        return q, probe

    def test_credit_past_a_guard_lifted_on_no_news_waits_for_the_answer(self) -> None:
        """tpm given, the guard lifted because no 429 came back in time: a round trip of the level
        goes now, the rest once the probe's answer confirms a bucket, in waves that double while
        none is refused."""
        q, probe = self.lifted_on_no_news()
        assert not q.guard
        assert q.level <= 2 * 1_000.0  # a round trip of the rate
        assert q.delay(300.0, 4.0) == 0.0
        level = q.level
        q.settle(probe, 800.0, 4.0)
        q.delay(300.0, 4.0)
        first = q.level - level
        assert 0.0 < first <= 2 * 800.0  # two requests' worth
        q.delay(300.0, 4.0 + 2 * GUARD_ADMITTED_S)
        assert q.level - level > 2 * first  # the next wave, twice as large

    def test_a_refused_wave_drops_the_credit(self) -> None:
        """...and once the waves are refused (both of the first two requests), the rest is not sent."""
        q, probe = self.lifted_on_no_news()
        q.settle(probe, 800.0, 4.0)
        q.level = 0.0
        q.delay(300.0, 4.0)  # the first wave
        for charge in [q.admit(300.0, 4.0) for _ in range(2)]:
            q.throttled(charge, 4.01)
        assert q._withheld == 0.0
        q.delay(300.0, 10.0)
        assert q.level <= 6.0 * 1_000.0  # the rate's refill alone

    @pytest.mark.parametrize("seed", [6, 15])
    def test_a_full_window_given_its_tpm_keeps_its_guard_when_429s_are_read_late(self, seed: int) -> None:
        """tpm given, a full window, 429s read 150 ms late on average: a probe's 429 read after
        the wait lifted the guard, and the level built behind it went out at once: 75 requests
        into the full window (13 % of the job's requests throttled). Now 1.3 %."""
        out = run(shape="window", start=1.0, seed=seed, lag_s=0.15, **BENCH_SHAPE)
        assert out.throttled / out.requests <= 0.03

    def test_a_late_429_puts_the_guard_back(self) -> None:
        """...and a 429 for it read later after all (a busy client) puts it back."""
        q, _ = self.at_the_guard(0)
        q.delay(300.0, 2.0)
        probe = q.admit(300.0, 2.0)
        q.delay(300.0, 2.0 + GUARD_ADMITTED_S)
        q.throttled(probe, 3.0)
        assert q.guard

    def test_a_window_a_little_below_its_given_tpm_keeps_its_pace(self) -> None:
        """A rolling window given a tpm 1 % above it: the guard lets the route's own charges fill the
        window past its size, and it refuses. Those refusals set the guard's window (the route is
        held to what the window held), not the rate: the job runs as fast as with the window's own
        tpm (1.12 x as long, when each refusal was read as a sample of the rate)."""
        shape: dict[str, Any] = {**BENCH_SHAPE, "rows": 1200, "shape": "window", "start": 1.0}
        exact = run(**shape)
        above = run(given_tpm=303_000, **shape)
        assert above.seconds <= 1.03 * exact.seconds
        assert above.quota.guard
        assert above.throttled / above.requests <= 0.02

    @pytest.mark.parametrize("seed", [12, 16])
    def test_a_full_window_measured_a_little_low_keeps_its_guard(self, seed: int) -> None:
        """tpm unknown, a full window: the refused burst measures it a request's size low (299,400
        of 300,000 TPM), and the window admits a probe sent with less than a request's room by that
        measure. Sent only past it, probes stay refused, and the guard holds (the guard lifted
        there, samples of 0 cut the rate to an eighth: 203-205 s for these jobs of 125 s)."""
        out = run(shape="window", start=1.0, known=False, seed=seed, **BENCH_SHAPE)
        assert out.quota.guard
        assert out.seconds <= 140.0

    @pytest.mark.parametrize("seed", [3, 6])
    def test_capacity_throttles_on_a_full_window_keep_its_guard(self, seed: int) -> None:
        """2 % capacity 429s on a full rolling window, tpm unknown: one that comes while the route's
        own charges fill the window trims the guard's window by at most 3 %, so a probe past the
        guard is still a test of the shape. (Read as samples of the rate, two of these six seeds
        lost the guard and took 670-870 s; with the guard set wherever such a 429 came, all six
        lost it and took 510-1,240 s.)"""
        shape: dict[str, Any] = {**BENCH_SHAPE, "rows": 1200, "shape": "window", "start": 1.0}
        out = run(known=False, capacity_429=0.02, seed=seed, **shape)
        assert out.quota.guard
        assert out.seconds <= 280.0  # 247-249 s; the first minute's quota, then its refill
        assert out.throttled / out.requests <= 0.02 + 0.02


class TestCapacityFromQuietPeriods:
    @staticmethod
    def after_quiet_periods(refused: int, t: float = 30.0) -> RouteQuota:
        """Cut from 480,000 TPM 30 s ago, ``refused`` of the 100 requests sent at the sampled rates
        since refused; now a sample with 4 of its 41 requests refused."""
        q = steady(360_000, now=t)
        q._quiet.append((t - 5.0, 100, refused))
        q._cut_from.append((t - 30.0, 8_000.0))
        sampled(q, t, refused=4)
        return q

    def test_a_share_the_prior_explains_is_no_capacity(self) -> None:
        """Wilson's lower bound of the share, once too many for 2 % capacity 429s and 40 requests."""
        assert _share_floor(40, 1) == 0.0  # the prior explains it
        assert _share_floor(30, 6) == 0.0  # too few requests
        assert 0.05 < _share_floor(200, 20) < 0.1

    def test_a_cut_holds_off_samples_refused_as_much_as_before_it(self) -> None:
        """Cut just before, 4 of 40 requests refused before it: 3 of the 31 sent since (from a round
        trip after it) is the same share, which a quota cut below its measure would not refuse."""
        t = 30.0
        q = steady(360_000, now=t)
        q._held = (t + 0.5, 40, 4)
        sampled(q, t, refused=4)
        assert q.rate * 60 == pytest.approx(360_000)

    def test_a_cut_holds_off_no_sample_refused_more_than_before_it(self) -> None:
        """None of 40 refused before the cut, three since: the quota fell further, cut again."""
        t = 30.0
        q = steady(360_000, now=t)
        q._held = (t + 0.5, 40, 0)
        sampled(q, t, refused=4)
        assert q.rate * 60 < 330_000

    def test_quiet_periods_refused_at_random_undo_the_cuts(self) -> None:
        """A tenth of the 100 requests sent under the sampled rates refused, as the sample's are:
        capacity 429s. The rate before the cuts comes back (480,000 TPM), and the share stays."""
        q = self.after_quiet_periods(refused=10)
        assert q.capacity_share == pytest.approx(_share_floor(100, 10))
        assert q.rate * 60 == pytest.approx(480_000)

    def test_quiet_periods_of_the_last_ten_minutes_are_pooled(self) -> None:
        """A slow route gathers quiet requests slowly: 80 of them four minutes ago and 20 just now,
        a tenth refused, give the share together (the 20 alone are too few)."""
        t = 300.0
        q = steady(360_000, now=t)
        q._quiet.extend([(t - 240.0, 80, 8), (t - 5.0, 20, 2)])
        q._cut_from.append((t - 250.0, 8_000.0))
        sampled(q, t, refused=4)
        assert q.capacity_share == pytest.approx(_share_floor(100, 10))
        assert q.rate * 60 == pytest.approx(480_000)

    def test_quiet_periods_the_prior_explains_leave_the_cut(self) -> None:
        """Two in 100 refused under the sampled rates: the quota, not capacity; the sample cuts."""
        q = self.after_quiet_periods(refused=2)
        assert q.capacity_share == 0.0
        assert q._last_sample_rate is not None
        assert q.rate == pytest.approx(q._last_sample_rate * 0.97)


class TestCapacityJudge:
    @staticmethod
    def after_cuts(rate_tpm: float, sent: int, refused: int) -> RouteQuota:
        """Cut from 294,000 TPM, where the quota took 78 % of the requests, to ``rate_tpm`` at 10 s;
        then ``sent`` requests from 11 s on (a round trip after), ``refused`` of them refused."""
        q = steady(rate_tpm, now=10.0)
        q._cut = _Cut(294_000 / 60, 0.78, 10.0)
        for i in range(sent):
            at = 11.0 + i * 0.05
            q._sent.add(1.0, at)
            q._accepted.add(0.0 if i < refused else 1.0, at)
        return q

    def test_the_same_share_refused_at_half_the_rate_is_capacity(self) -> None:
        """Halved, and still a fifth refused: capacity 429s; the chain is undone to its first rate."""
        q = self.after_cuts(144_000, sent=40, refused=9)
        q.throttled(q.admit(300.0, 13.1), 13.11)
        assert q.rate * 60 == pytest.approx(294_000)
        assert q.capacity_share == pytest.approx(10 / 41)  # the 429 that is read counts too

    def test_a_shared_quota_refusing_less_after_its_last_cut_is_no_capacity(self) -> None:
        """Refusing 1 in 40 after the last cut: the quota, not capacity; the cut stands."""
        q = self.after_cuts(144_000, sent=40, refused=1)
        q.throttled(q.admit(300.0, 13.1), 13.11)
        assert q.rate * 60 == pytest.approx(144_000)
        assert q.capacity_share == 0.0

    def test_more_refused_after_a_cut_is_a_quota_in_debt(self) -> None:
        """Nine in ten refused after halving the rate, 22 % before: a quota the route filled (a
        window holding the settlements of the burst), never capacity 429s (they refuse the same
        share at any rate)."""
        q = self.after_cuts(144_000, sent=40, refused=36)
        q.throttled(q.admit(300.0, 13.1), 13.11)
        assert q.rate * 60 == pytest.approx(144_000)
        assert q.capacity_share == 0.0

    def test_a_cut_stands_once_judged_long_enough(self) -> None:
        """The same share refused, read 30 s after the cut: too late to tell (a window refusing a
        burst at its minute's end, the route held back by the guard in between, was taken for
        capacity 429s and undone into a storm of 236 429s)."""
        q = self.after_cuts(144_000, sent=40, refused=9)
        q.throttled(q.admit(300.0, 41.0), 41.01)
        assert q.rate * 60 == pytest.approx(144_000)
        assert q.capacity_share == 0.0

    @pytest.mark.parametrize("seed", [24, 27])
    def test_a_bucket_refusing_at_a_refused_bursts_measure_is_no_capacity(self, seed: int) -> None:
        """tpm unknown, another consumer taking half a bucket: the refused burst's measure counts
        the bucket's capacity (twice the route's share), and paced at it, the bucket refuses about
        the share it refused before. The guard lifting says a bucket, and the cut stands (judged,
        it was undone as capacity 429s: a storm, then a capacity share of 19 % that explained the
        next refusals away; 175 and 227 429s, 23 and 27 % of the requests)."""
        out = run(
            shape="bucket", start=1.0, known=False, other_share=0.5, seed=seed, lag_s=0.15, **BENCH_SHAPE
        )
        assert out.quota.capacity_share == 0.0
        assert out.throttled / out.requests <= 0.05  # 4.0-4.5 %

    def test_a_shallow_chain_is_not_judged(self) -> None:
        """Cut to 0.7 of the rate before, the same share refused: a quota a sample overrated can do
        that too (a shared bucket's credit): no undo until the chain has halved the rate."""
        q = self.after_cuts(206_000, sent=40, refused=9)
        q.throttled(q.admit(300.0, 13.1), 13.11)
        assert q.rate * 60 == pytest.approx(206_000)


class TestModel:
    def test_random_refusals_in_a_row_are_told_from_a_drain(self) -> None:
        """Three 429s in a row are a drained quota (2 % capacity 429s would do it once in 125,000
        tries); three among eight admissions are chance."""
        assert _tail(3, 3, 0.02) < DRAIN_P
        assert _tail(8, 3, 0.02) > DRAIN_P
        assert _tail(10, 10, 0.3) < DRAIN_P < _tail(10, 6, 0.3)
        assert _tail(5, 0, 0.5) == pytest.approx(1.0)

    def test_a_storm_after_a_random_429_is_read_within_a_few(self) -> None:
        """An unpaced route, 100 requests a second, one refused at random at 0.1 s, then every
        request from 0.6 s (a full quota spent). The random 429 spread the storm's test over the
        half second between, and each 429 of the storm raised the random share it allows: fifteen
        went by before the storm was read. The densest run at the end is tested too: four."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase = "steady"
        storm = 0
        for i in range(100):
            at = i * 0.01
            charge = q.admit(500.0, at)
            if i == 10 or i >= 60:
                q.throttled(charge, at + 0.005)
                storm += i >= 60
                if math.isfinite(q.rate):
                    break
            else:
                q.settle(charge, 500.0, at + 0.005)
        assert math.isfinite(q.rate)
        assert storm <= 5

    def test_the_tail_holds_for_thousands_of_requests(self) -> None:
        """Two minutes of a route sending 50 requests a second: comb(6000, 600) is past a float's
        range (it raised OverflowError), and a count far below the mean is all but certain (its
        first term underflowed, and the tail read 0)."""
        assert _tail(6000, 600, 0.1) == pytest.approx(0.506, abs=0.001)
        assert _tail(6000, 600, 0.02) < 1e-100
        assert _tail(371, 14, 0.9) == pytest.approx(1.0)
        assert _tail(10, 3, 0.1) == pytest.approx(0.0701908264)

    def test_a_late_429_is_dated_by_its_admission(self) -> None:
        """A throttle read a second late takes its reservation back from the span it was sent in, so
        the span it is read in does not look as if the quota took less."""
        q = RouteQuota.create(tpm=60_000, headroom=1.0, now=0.0)
        early = q.admit(500.0, 1.0)
        q.admit(700.0, 2.0)
        q.throttled(early, 2.05)
        assert q._taken.since(1.9, 2.1) == pytest.approx(700.0)
        assert q._taken.since(0.9, 1.1) == pytest.approx(0.0)

    def test_decisions_are_told(self) -> None:
        """Each decision of the model reaches its ``notify`` with its figures (for the job's events)."""
        told: list[tuple[str, dict[str, object]]] = []
        q = RouteQuota.create(tpm=600_000, headroom=1.0, now=0.0, notify=lambda e, f: told.append((e, f)))
        charges = [q.admit(300.0, 0.0) for _ in range(4)]
        for charge in charges:
            q.throttled(charge, 0.02)
        assert ("quota.startup_ended", {"drained": True, "released": 1200}) in told

    def test_quota_share_is_settled_usage_over_the_quota(self) -> None:
        """``quota_share`` divides what requests settled to in the last minute by the paced quota."""
        q = RouteQuota.create(tpm=60_000, headroom=1.0, now=0.0)
        charge = q.admit(1_000, 0.0)
        q.settle(charge, 3_000, 1.0)
        assert q.figures(1.0).quota_share == pytest.approx(3_000 / 60_000)

    def test_settlement_books_the_difference(self) -> None:
        """The modelled level drops by the reservation, then by what the settlement adds to it."""
        q = RouteQuota.create(tpm=60_000, headroom=1.0, now=0.0)
        charge = q.admit(1_000, 0.0)
        q.settle(charge, 3_000, 0.0)
        assert q.level == pytest.approx(57_000)

    @staticmethod
    def probed(rate: float, tokens: float) -> tuple[dict[int, float], list[float]]:
        """60 s of a queue that always wants more than ``rate``, and no throttle: the rate at the
        end of each 10 s, and when it was probed up."""
        q = RouteQuota.create(tpm=0, headroom=1.0, now=0.0)
        q.phase, q.rate, q.level, q.burst = "steady", rate, 0.0, rate * 60
        q._hold(0.0)
        probes: list[float] = []
        q.notify = lambda event, fields: probes.append(now) if fields.get("why") == "probe" else None
        now, rates = 0.0, {}
        for step in range(600):
            now = step / 10
            while q.delay(tokens, now) == 0.0:
                q.settle(q.admit(tokens, now), tokens, now)
            rates[step // 100] = q.rate
        return rates, probes

    def test_probing_runs_on_a_clock(self) -> None:
        """After a sample the rate holds, then grows on a clock while requests wait for it."""
        rates, _ = self.probed(500.0, 50.0)  # 10 requests a second
        assert rates[0] == rates[1] == 500.0  # held for PROBE_HOLD_S
        assert rates[5] > 2 * rates[0]  # then 10 %, 20 %, 40 %, ... every PROBE_EVERY_S

    def test_a_probe_step_waits_to_be_seen(self) -> None:
        """At a request a second, 10 % more is one request's excess every 10 s: the next step waits
        for two requests' worth (at most 15 s), so that steps do not outrun the throttles that would
        answer them (a shared quota's probes climbed 5 %, 10 %, 10 % before the first 429 of the
        first came back: 25 % over the quota)."""
        _, probes = self.probed(50.0, 50.0)
        assert probes[0] >= PROBE_HOLD_S
        steps = [b - a for a, b in itertools.pairwise(probes)]
        assert steps[0] >= PROBE_MAX_WAIT_S - 0.1  # 10 %: two requests' excess in 20 s, capped
        assert steps[1] > PROBE_EVERY_S + 3.0  # 20 % of 55: 9.1 s
        _, fast = self.probed(500.0, 50.0)
        assert fast[1] - fast[0] <= PROBE_EVERY_S + 0.1
