"""The emulator's quota shapes (window, bucket, fixed), start levels, another consumer, tpm changes, timeline.

Pure tests drive ``now`` by hand; the integration tests go through the real aioboto3 client over
loopback HTTP against the session emulator (``emu``), with tokens-per-minute small enough that a
second of wall clock is a visible refill.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import botocore.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.emulator import ConfigError, EmulatorConfig, EmulatorThread, FaultSettings, Latency, cli
from runner.emulator.config import OtherConsumer, TpmChange
from runner.emulator.errors import ERRORS, TOKENS_THROTTLED_MESSAGE
from runner.emulator.quota import (
    SLOT_S,
    FixedWindow,
    QuotaShape,
    RouteQuota,
    TimelineRow,
    TokenBucket,
    TokenWindow,
)
from runner.emulator.routes import RouteState
from tests.integration.test_emulator import HAIKU, admin, invoke, request_body, runtime

ROOT = Path(__file__).resolve().parents[2]
HAIKU_EAST = f"{HAIKU}@us-east-1"
SHAPES: dict[str, Callable[[int], QuotaShape]] = {
    "window": lambda limit: TokenWindow(limit),
    "bucket": lambda limit: TokenBucket(limit),
    "fixed": lambda limit: FixedWindow(limit),
}


def other(share: float = 0.5, pattern: str = "steady", period_s: float = 20.0) -> OtherConsumer:
    return OtherConsumer(share, "bursty" if pattern == "bursty" else "steady", period_s)


class TestTokenBucket:
    def test_a_full_bucket_admits_its_capacity_then_throttles(self) -> None:
        """A full bucket lets a burst of its whole capacity through, and nothing more at that moment."""
        bucket = TokenBucket(6000)
        assert bucket.try_reserve(4000, now=0.0) is not None
        assert bucket.try_reserve(2000, now=0.0) is not None
        assert bucket.try_reserve(1, now=0.0) is None
        assert bucket.level(0.0) == 0

    def test_refills_continuously_at_tpm_over_sixty(self) -> None:
        """An empty bucket of 6,000 tokens a minute holds 100 more each second."""
        bucket = TokenBucket(6000, start=0.0, now=10.0)
        assert bucket.try_reserve(50, now=10.0) is None
        assert bucket.level(10.5) == pytest.approx(50)
        assert bucket.try_reserve(50, now=10.5) is not None
        assert bucket.level(12.0) == pytest.approx(150)

    def test_never_refills_above_capacity(self) -> None:
        """However long it idles, the level stops at the capacity."""
        bucket = TokenBucket(6000, start=0.5)
        assert bucket.level(3600.0) == 6000
        assert bucket.used(3600.0) == 0

    def test_settling_above_the_reservation_drives_the_level_negative(self) -> None:
        """A call that cost more than it reserved is debited the difference, below zero if need be."""
        bucket = TokenBucket(600)
        entry = bucket.try_reserve(600, now=0.0)
        assert entry is not None
        bucket.settle(entry, 900, now=0.0)
        assert bucket.level(0.0) == -300
        assert bucket.try_reserve(1, now=0.0) is None
        assert bucket.level(40.0) == pytest.approx(100)  # refilled from -300 at 10 a second

    def test_settling_below_the_reservation_credits_back_up_to_capacity(self) -> None:
        """The unused part of a reservation returns to the bucket, never above the capacity."""
        bucket = TokenBucket(1000)
        entry = bucket.try_reserve(800, now=0.0)
        assert entry is not None
        bucket.settle(entry, 100, now=0.0)
        assert bucket.level(0.0) == 900
        late = bucket.try_reserve(500, now=0.0)
        assert late is not None
        bucket.level(60.0)  # full again
        bucket.settle(late, 0, now=60.0)
        assert bucket.level(60.0) == 1000

    def test_settling_twice_changes_nothing_more(self) -> None:
        """A settlement replaces the reservation's amount, so repeating it is harmless."""
        bucket = TokenBucket(1000)
        entry = bucket.try_reserve(800, now=0.0)
        assert entry is not None
        bucket.settle(entry, 100, now=0.0)
        bucket.settle(entry, 100, now=0.0)
        assert bucket.level(0.0) == 900

    def test_a_reservation_above_the_capacity_never_passes(self) -> None:
        """Like the window, a bucket never admits more than its whole capacity at once."""
        bucket = TokenBucket(100)
        assert bucket.try_reserve(101, now=0.0) is None
        assert bucket.seconds_until(101, now=0.0) is None

    def test_seconds_until_is_the_refill_time_of_the_deficit(self) -> None:
        """The wait is the missing tokens over the refill rate."""
        bucket = TokenBucket(6000, start=0.0)
        assert bucket.seconds_until(250, now=0.0) == pytest.approx(2.5)
        assert bucket.seconds_until(250, now=3.0) == 0.0

    def test_set_limit_clips_the_level_and_changes_the_rate(self) -> None:
        """A cut empties what is above the new capacity; the refill follows the new rate from then."""
        bucket = TokenBucket(6000)
        bucket.set_limit(3000, now=1.0)
        assert (bucket.limit, bucket.level(1.0)) == (3000, 3000)
        bucket.try_reserve(3000, now=1.0)
        assert bucket.level(2.0) == pytest.approx(50)

    def test_take_never_takes_what_is_not_there(self) -> None:
        """Another consumer gets at most the level, nothing from a negative bucket."""
        bucket = TokenBucket(600, start=0.5)
        assert bucket.take(1000, now=0.0) == 300
        entry = bucket.try_reserve(0, now=0.0)
        assert entry is not None
        bucket.settle(entry, 50, now=0.0)
        assert bucket.take(10, now=0.0) == 0

    @given(
        st.lists(st.tuples(st.integers(1, 500), st.integers(0, 900), st.floats(0, 5)), max_size=60),
        st.integers(1, 2000),
    )
    def test_admitted_never_exceeds_capacity_plus_refill(
        self, steps: list[tuple[int, int, float]], limit: int
    ) -> None:
        """Whatever arrives, what the bucket admits is bounded by its capacity plus what it refilled."""
        bucket = TokenBucket(limit)
        now = admitted = 0.0
        for reserve, cost, dt in steps:
            now += dt
            entry = bucket.try_reserve(reserve, now)
            if entry is not None:
                admitted += reserve
                bucket.settle(entry, max(cost, reserve), now)  # never credited back: the worst case
            assert bucket.level(now) <= limit
        assert admitted <= limit + now * limit / 60 + 1e-6


class TestFixedWindow:
    def test_a_fresh_window_admits_its_limit_then_nothing_until_the_boundary(self) -> None:
        """Whatever was admitted in a minute counts until the minute ends, however early it was."""
        fixed = FixedWindow(1000, now=0.0)
        assert fixed.try_reserve(600, now=0.0) is not None
        assert fixed.try_reserve(400, now=30.0) is not None
        assert fixed.try_reserve(1, now=59.9) is None
        assert fixed.used(59.9) == 1000
        assert fixed.seconds_until(1, now=59.5) == pytest.approx(0.5)
        assert fixed.used(60.0) == 0
        assert fixed.try_reserve(1000, now=60.0) is not None

    def test_the_first_minute_ends_reset_s_after_creation_then_every_sixty(self) -> None:
        """The boundary's phase is reset_s after the quota was created, not a wall-clock minute."""
        fixed = FixedWindow(1000, reset_s=15.0, now=100.0)
        assert fixed.try_reserve(1000, now=100.0) is not None
        assert fixed.seconds_until(1, now=110.0) == pytest.approx(5.0)
        assert fixed.try_reserve(1, now=114.9) is None
        assert fixed.try_reserve(1000, now=115.0) is not None
        assert fixed.seconds_until(1, now=115.0) == pytest.approx(60.0)
        assert fixed.used(174.9) == 1000
        assert fixed.used(175.0) == 0

    def test_minutes_do_not_drift_over_hours(self) -> None:
        """The current minute is computed from now: after three hours of touches the boundary is exact."""
        fixed = FixedWindow(1000, reset_s=0.5, now=0.0)
        now = 0.0
        while now < 3 * 3600:
            fixed.used(now)
            now += 0.7
        assert fixed.try_reserve(1000, now=10_800.25) is not None
        assert fixed.seconds_until(1, now=10_800.25) == 0.25  # the boundary at 0.5 + 180 x 60
        assert fixed.try_reserve(1, now=10_800.499) is None
        assert fixed.try_reserve(1000, now=10_800.5) is not None

    def test_a_long_idle_skips_the_minutes_it_missed(self) -> None:
        """An hour later the counter is the new minute's (empty), the next boundary where arithmetic says."""
        fixed = FixedWindow(1000, reset_s=0.5, start=0.0, now=0.0)
        assert fixed.used(3600.0) == 0
        assert fixed.try_reserve(1000, now=3600.0) is not None
        assert fixed.seconds_until(1, now=3600.0) == pytest.approx(0.5)

    def test_a_drained_window_is_closed_until_its_first_reset_then_wholly_open(self) -> None:
        """start = 0 fills the first minute's counter: no refill within it, the whole limit after it."""
        fixed = FixedWindow(6000, reset_s=2.0, start=0.0, now=0.0)
        assert fixed.used(0.0) == 6000
        assert fixed.try_reserve(1, now=0.0) is None
        assert fixed.try_reserve(1, now=1.9) is None
        assert fixed.seconds_until(6000, now=1.5) == pytest.approx(0.5)
        assert fixed.try_reserve(6000, now=2.0) is not None

    def test_a_partial_start_leaves_its_share_of_the_first_minute(self) -> None:
        """start = 0.25 counts three quarters of the limit as already used in the first minute."""
        fixed = FixedWindow(6000, start=0.25, now=0.0)
        assert fixed.used(0.0) == 4500
        assert fixed.try_reserve(1500, now=0.0) is not None
        assert fixed.try_reserve(1, now=0.0) is None

    def test_settling_in_the_same_minute_adjusts_the_counter(self) -> None:
        """A settlement replaces the reservation in the counter, down or up (above the limit if need be)."""
        fixed = FixedWindow(1000, now=0.0)
        entry = fixed.try_reserve(800, now=0.0)
        assert entry is not None
        fixed.settle(entry, 100, now=1.0)
        fixed.settle(entry, 100, now=1.0)  # twice changes nothing more
        assert (fixed.used(1.0), entry.tokens) == (100, 100)
        other = fixed.try_reserve(900, now=2.0)
        assert other is not None
        fixed.settle(other, 1200, now=3.0)
        assert fixed.used(3.0) == 1300
        assert fixed.try_reserve(1, now=3.0) is None
        assert fixed.seconds_until(1, now=3.0) == pytest.approx(57.0)

    def test_settling_an_entry_from_an_earlier_minute_lands_nowhere(self) -> None:
        """The minute that admitted it is over: the current minute's counter is not touched."""
        fixed = FixedWindow(1000, now=0.0)
        entry = fixed.try_reserve(800, now=59.0)
        assert entry is not None
        assert fixed.try_reserve(100, now=61.0) is not None
        assert not entry.live
        fixed.settle(entry, 50, now=61.0)
        fixed.settle(entry, 5000, now=61.0)
        assert (fixed.used(61.0), entry.tokens) == (100, 5000)

    def test_a_clock_reading_older_than_the_minute_counts_in_the_current_one(self) -> None:
        """Time does not run backwards: a call that read the clock before the reset is counted after it."""
        fixed = FixedWindow(1000, now=0.0)
        assert fixed.try_reserve(600, now=60.5) is not None
        late = fixed.try_reserve(400, now=59.9)
        assert late is not None and late.live
        assert fixed.used(60.5) == 1000
        fixed.settle(late, 100, now=61.0)
        assert fixed.used(61.0) == 700

    def test_set_limit_keeps_the_counter(self) -> None:
        """A cut below what the minute holds throttles until the boundary, then the new limit applies."""
        fixed = FixedWindow(6000, now=0.0)
        assert fixed.try_reserve(4000, now=0.0) is not None
        fixed.set_limit(3000, now=1.0)
        assert (fixed.limit, fixed.used(1.0)) == (3000, 4000)
        assert fixed.try_reserve(1, now=1.0) is None
        assert fixed.seconds_until(3001, now=1.0) is None
        assert fixed.try_reserve(3001, now=60.0) is None
        assert fixed.try_reserve(3000, now=60.0) is not None

    def test_take_adds_what_fits_this_minute(self) -> None:
        """Another consumer gets at most the room left in the minute; after the boundary, all of it."""
        fixed = FixedWindow(600, start=0.5, now=0.0)
        assert fixed.take(1000, now=0.0) == 300
        assert fixed.take(10, now=59.0) == 0
        assert fixed.take(1000, now=60.0) == 600

    def test_reset_s_outside_the_minute_is_refused(self) -> None:
        """The first boundary must fall within a minute of the creation, after it."""
        for reset_s in (0.0, -1.0, 60.5):
            with pytest.raises(ValueError, match="reset_s"):
                FixedWindow(1000, reset_s=reset_s)

    def test_a_route_quota_reports_the_fixed_shape(self) -> None:
        """RouteQuota runs it under the name 'fixed', with the counter as used."""
        quota = RouteQuota(6000, now=10.0, shape="fixed", start=0.5, reset_s=5.0)
        quota.try_reserve(1000, now=10.0)
        snapshot = quota.snapshot(12.0).to_dict()
        assert (snapshot["shape"], snapshot["used"], snapshot["available"]) == ("fixed", 4000, 2000)
        assert quota.used(15.0) == 0

    @given(
        st.lists(st.tuples(st.integers(1, 500), st.integers(0, 900), st.floats(0, 20)), max_size=80),
        st.integers(1, 2000),
        st.floats(0.01, 60),
    )
    def test_a_minute_never_admits_more_than_the_limit(
        self, steps: list[tuple[int, int, float]], limit: int, reset_s: float
    ) -> None:
        """Whatever arrives, the reservations admitted in one minute add up to the limit at most."""
        fixed = FixedWindow(limit, reset_s=reset_s, now=0.0)
        admitted: dict[int, int] = {}
        now = 0.0
        for reserve, cost, dt in steps:
            now += dt
            entry = fixed.try_reserve(reserve, now)
            if entry is not None:
                minute = sum(1 for k in range(100) if reset_s + k * 60.0 <= now)  # boundaries passed
                admitted[minute] = admitted.get(minute, 0) + reserve
                fixed.settle(entry, max(cost, reserve), now)  # never credited back: the worst case
            assert fixed.used(now) >= 0
        assert all(total <= limit for total in admitted.values())


class TestEveryShape:
    @pytest.mark.parametrize("shape", sorted(SHAPES))
    def test_a_fresh_quota_admits_its_limit(self, shape: str) -> None:
        """Window, bucket or fixed window, a fresh quota admits exactly its limit at one moment."""
        quota = SHAPES[shape](1000)
        assert quota.try_reserve(1000, now=5.0) is not None
        assert quota.try_reserve(1, now=5.0) is None
        assert quota.used(5.0) == 1000

    @pytest.mark.parametrize("shape", sorted(SHAPES))
    def test_a_reservation_above_the_limit_never_passes(self, shape: str) -> None:
        """No shape ever admits more than its limit in one reservation, however long it waits."""
        quota = SHAPES[shape](1000)
        assert quota.try_reserve(1001, now=0.0) is None
        assert quota.seconds_until(1001, now=3600.0) is None
        assert quota.try_reserve(1001, now=3600.0) is None

    @pytest.mark.parametrize("shape", sorted(SHAPES))
    def test_take_fills_up_to_the_limit_only(self, shape: str) -> None:
        """Another consumer's draw stops at the limit, whatever it asked for."""
        quota = SHAPES[shape](1000)
        quota.try_reserve(700, now=0.0)
        assert quota.take(500, now=0.0) == 300
        assert quota.used(0.0) == 1000


class TestQuotaStart:
    def test_bucket_starts_at_its_share(self) -> None:
        """A bucket started at a quarter holds a quarter of its capacity."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", start=0.25)
        assert quota.used(0.0) == 4500
        assert quota.try_reserve(1500, now=0.0) is not None
        assert quota.try_reserve(10, now=0.0) is None

    def test_empty_window_frees_its_charges_progressively(self) -> None:
        """An empty window's charges leave at tpm / 60 a second, not all at once after a minute."""
        quota = RouteQuota(6000, now=0.0, shape="window", start=0.0)
        assert quota.used(0.0) == 6000
        assert quota.used(SLOT_S) == 5990
        assert quota.used(30.0) == 3000
        assert quota.used(59.95) == 10
        assert quota.used(60.0) == 0

    def test_half_window_holds_half_spread_over_the_minute(self) -> None:
        """A window started at half holds half the limit, leaving at half the refill rate."""
        quota = RouteQuota(6000, now=100.0, shape="window", start=0.5)
        assert quota.used(100.0) == 3000
        assert quota.try_reserve(3000, now=100.0) is not None
        assert quota.try_reserve(1, now=100.0) is None
        assert quota.used(130.0) == 1500 + 3000

    def test_a_full_start_is_an_unused_quota(self) -> None:
        """The default start leaves every shape unused, as before the shapes existed."""
        for shape in ("window", "bucket", "fixed"):
            quota = RouteQuota(6000, now=0.0, shape=shape)
            assert quota.used(0.0) == 0

    def test_the_window_prefill_is_exact(self) -> None:
        """Odd totals are spread without losing a token."""
        window = TokenWindow(997, start=0.3, now=0.0)
        assert window.used(0.0) == round(0.7 * 997)


class TestOtherConsumer:
    def test_steady_draws_its_share_each_second(self) -> None:
        """A steady consumer on half the quota draws tpm / 120 tokens every second."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", other_consumer=other(0.5))
        quota.used(10.05)
        rows = quota.timeline()
        assert all(45 <= row.other_consumer <= 55 for row in rows[1:9])  # 10 slots a second, give or take one
        assert sum(row.other_consumer for row in rows) == 500

    def test_steady_consumer_leaves_the_rest_of_the_refill(self) -> None:
        """On an empty bucket, a consumer taking half leaves the runner half the refill."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", start=0.0, other_consumer=other(0.5))
        assert quota.used(10.0) == pytest.approx(6000 - 500, abs=10)
        assert quota.try_reserve(490, now=10.0) is not None

    def test_a_consumer_of_the_whole_quota_starves_the_runner(self) -> None:
        """share = 1 on an empty bucket takes every refilled token before the runner sees it."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", start=0.0, other_consumer=other(1.0))
        assert all(quota.try_reserve(20, now=i * 0.05) is None for i in range(1200))  # a minute

    def test_bursty_draws_a_burst_every_period_from_the_start(self) -> None:
        """A bursty consumer draws share x tpm x period / 60 at creation and every period after."""
        quota = RouteQuota(6000, now=0.0, shape="window", other_consumer=other(0.5, "bursty", 20.0))
        assert quota.used(0.0) == 1000
        assert quota.used(19.9) == 1000
        assert quota.used(20.0) == 2000
        assert quota.used(61.0) == 3000  # the first burst left the window
        assert [(row.t, row.other_consumer) for row in quota.timeline()] == [
            (0, 1000),
            (20, 1000),
            (40, 1000),
            (60, 1000),
        ]

    def test_the_consumer_takes_only_what_fits_in_a_window(self) -> None:
        """Into a nearly full window a burst adds only what fits under the limit."""
        quota = RouteQuota(6000, now=0.0, shape="window", other_consumer=other(0.9, "bursty", 20.0))
        assert quota.used(0.0) == 1800  # 0.9 x 6000 x 20 / 60
        assert quota.try_reserve(4000, now=1.0) is not None
        assert quota.used(20.0) == 6000
        assert [row.other_consumer for row in quota.timeline() if row.other_consumer] == [1800, 200]

    def test_the_consumer_takes_only_what_the_bucket_holds(self) -> None:
        """From an empty bucket a burst gets nothing; a minute later it gets the refill."""
        quota = RouteQuota(
            6000, now=0.0, shape="bucket", start=0.0, other_consumer=other(1.0, "bursty", 60.0)
        )
        quota.used(60.0)
        assert [(row.t, row.other_consumer) for row in quota.timeline()] == [(60, 6000)]

    def test_the_consumer_starts_when_the_quota_is_created(self) -> None:
        """The consumer's clock is the quota's: nothing is drawn for the time before it existed."""
        quota = RouteQuota(6000, now=500.0, shape="bucket", other_consumer=other(0.5, "bursty", 20.0))
        quota.used(530.0)
        assert [row.t for row in quota.timeline()] == [0, 20]

    def test_demand_follows_the_current_tpm(self) -> None:
        """After the quota doubles, a steady consumer draws twice as much."""
        quota = RouteQuota(
            6000, now=0.0, shape="bucket", other_consumer=other(0.5), tpm_changes=[TpmChange(5.0, 12000)]
        )
        quota.used(10.0)
        rows = {row.t: row.other_consumer for row in quota.timeline()}
        assert (rows[3], rows[7]) == (50, 100)


class TestTpmChanges:
    def test_a_raise_lands_at_its_time(self) -> None:
        """The limit is the old one until at_s after creation, then the new one."""
        quota = RouteQuota(6000, now=100.0, shape="bucket", tpm_changes=[TpmChange(30.0, 12000)])
        assert quota.try_reserve(6000, now=100.0) is not None
        assert quota.limit == 6000
        quota.used(129.9)
        assert quota.limit == 6000
        quota.used(130.0)
        assert quota.limit == 12000

    def test_a_bucket_refills_at_the_new_rate_after_a_raise(self) -> None:
        """After doubling, an empty bucket refills twice as fast."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", start=0.0, tpm_changes=[TpmChange(10.0, 12000)])
        assert quota.used(10.0) == pytest.approx(6000 + 6000 - 1000)
        assert quota.used(11.0) == pytest.approx(12000 - 1000 - 200)

    def test_a_cut_clips_a_full_bucket(self) -> None:
        """Halving the quota of a full bucket leaves it holding the new capacity."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", tpm_changes=[TpmChange(1.0, 3000)])
        assert quota.used(1.0) == 0
        assert quota.try_reserve(3001, now=1.0) is None
        assert quota.try_reserve(3000, now=1.0) is not None

    def test_a_cut_keeps_the_window_charges(self) -> None:
        """A window cut below what it holds throttles until enough charges age out."""
        quota = RouteQuota(6000, now=0.0, shape="window", tpm_changes=[TpmChange(1.0, 3000)])
        quota.try_reserve(4000, now=0.0)
        assert quota.try_reserve(1, now=1.0) is None
        assert quota.used(1.0) == 4000
        assert quota.try_reserve(3000, now=60.0) is not None

    def test_changes_apply_in_time_order_whatever_the_listing(self) -> None:
        """Changes given out of order still fire by at_s; the last one due wins."""
        quota = RouteQuota(6000, now=0.0, tpm_changes=[TpmChange(20.0, 1000), TpmChange(10.0, 9000)])
        quota.used(15.0)
        assert quota.limit == 9000
        quota.used(25.0)
        assert quota.limit == 1000


class TestTimeline:
    def test_rows_count_per_second_since_creation(self) -> None:
        """Admissions, settlements and throttles land in the second, since creation, they happened in."""
        quota = RouteQuota(1000, now=50.0)
        first = quota.try_reserve(600, now=50.2)
        assert first is not None
        assert quota.try_reserve(600, now=50.7) is None
        quota.settle(first, 100, now=51.5)
        quota.capacity_throttled(51.6)
        assert quota.timeline() == [
            TimelineRow(
                0, admitted=600, settled=0, quota_throttles=1, capacity_throttles=0, other_consumer=0
            ),
            TimelineRow(
                1, admitted=0, settled=100, quota_throttles=0, capacity_throttles=1, other_consumer=0
            ),
        ]

    def test_only_seconds_with_activity_have_rows(self) -> None:
        """An hour of idling between two calls adds no rows."""
        quota = RouteQuota(1000, now=0.0)
        quota.try_reserve(10, now=0.0)
        quota.try_reserve(10, now=3600.5)
        assert [row.t for row in quota.timeline()] == [0, 3600]

    def test_a_late_report_lands_in_its_own_second(self) -> None:
        """A call whose clock reading is older than the last row's still counts in its own second."""
        quota = RouteQuota(1000, now=0.0)
        quota.try_reserve(10, now=2.1)
        quota.try_reserve(20, now=1.9)
        assert [(row.t, row.admitted) for row in quota.timeline()] == [(1, 20), (2, 10)]

    def test_a_call_older_than_the_quota_counts_in_its_first_second(self) -> None:
        """A reservation whose clock reading predates the quota (a PATCH made it meanwhile) lands at t = 0."""
        quota = RouteQuota(1000, now=10.0)
        quota.try_reserve(10, now=8.5)
        assert [(row.t, row.admitted) for row in quota.timeline()] == [(0, 10)]

    def test_snapshot_is_the_counters_json(self) -> None:
        """The snapshot gives shape, limit, used, available and the rows as JSON objects."""
        quota = RouteQuota(6000, now=0.0, shape="bucket", start=0.5)
        quota.try_reserve(1000, now=0.0)
        assert quota.snapshot(0.0).to_dict() == {
            "shape": "bucket",
            "limit": 6000,
            "used": 4000,
            "available": 2000,
            "timeline": [
                {
                    "t": 0,
                    "admitted": 1000,
                    "settled": 0,
                    "quota_throttles": 0,
                    "capacity_throttles": 0,
                    "other_consumer": 0,
                }
            ],
        }


class TestRouteState:
    def route(self, **settings: Any) -> RouteState:
        return RouteState(HAIKU, "us-east-1", FaultSettings(**settings), seed=0, now=0.0)

    def test_the_quota_follows_the_settings(self) -> None:
        """tpm, shape and start become the route's quota when the route is made."""
        route = self.route(tpm=6000, quota_shape="bucket", quota_start=0.0)
        assert route.quota is not None
        assert (route.quota.shape_name, route.quota.limit, route.quota.used(0.0)) == ("bucket", 6000, 6000)

    def test_a_new_tpm_keeps_the_running_quota(self) -> None:
        """Changing tpm alone changes the limit of the same quota, reservations kept."""
        route = self.route(tpm=6000)
        quota = route.quota
        assert quota is not None
        quota.try_reserve(500, now=1.0)
        route.apply(FaultSettings(tpm=9000), seed=0, now=2.0)
        assert route.quota is quota
        assert (quota.limit, quota.used(2.0)) == (9000, 500)

    def test_a_new_shape_starts_a_new_quota(self) -> None:
        """Changing the shape (or start, consumer, changes) replaces the quota, its clock starting then."""
        route = self.route(tpm=6000)
        old = route.quota
        route.apply(FaultSettings(tpm=6000, quota_shape="bucket", quota_start=0.0), seed=0, now=7.0)
        assert route.quota is not old and route.quota is not None
        assert (route.quota.shape_name, route.quota.created) == ("bucket", 7.0)

    def test_a_new_reset_s_starts_a_new_fixed_quota_only(self) -> None:
        """quota_reset_s is part of a fixed window's scenario; the other shapes ignore it."""
        route = self.route(tpm=6000, quota_shape="fixed", quota_reset_s=30.0)
        old = route.quota
        assert old is not None and old.shape_name == "fixed"
        old.try_reserve(1000, now=1.0)
        route.apply(FaultSettings(tpm=6000, quota_shape="fixed", quota_reset_s=5.0), seed=0, now=2.0)
        assert route.quota is not old and route.quota is not None
        assert (route.quota.created, route.quota.used(6.9), route.quota.used(7.0)) == (2.0, 0, 0)
        route.quota.try_reserve(6000, now=7.0)
        assert route.quota.try_reserve(1, now=66.9) is None
        assert route.quota.try_reserve(1, now=67.0) is not None  # the boundaries at 2 + 5 + 60 k
        window = self.route(tpm=6000)
        kept = window.quota
        window.apply(FaultSettings(tpm=6000, quota_reset_s=5.0), seed=0, now=2.0)
        assert window.quota is kept

    def test_an_unrelated_change_does_not_undo_a_fired_tpm_change(self) -> None:
        """A later PATCH of, say, latency keeps the limit a tpm change set."""
        settings = FaultSettings(tpm=6000, tpm_changes=(TpmChange(1.0, 12000),))
        route = RouteState(HAIKU, "us-east-1", settings, seed=0, now=0.0)
        assert route.quota is not None
        route.quota.used(2.0)
        route.apply(replace(settings, latency=Latency("fixed", ms=5.0)), seed=0, now=3.0)
        assert route.quota.limit == 12000

    def test_tpm_zero_drops_the_quota(self) -> None:
        """No tpm, no quota (and nothing to count)."""
        route = self.route(tpm=6000)
        route.apply(FaultSettings(), seed=0, now=1.0)
        assert route.quota is None


class TestQuotaConfig:
    def test_defaults_are_todays_window(self) -> None:
        """Without the new keys a route has a full rolling window, no consumer and no changes."""
        settings = EmulatorConfig().defaults
        assert (settings.quota_shape, settings.quota_start) == ("window", 1.0)
        assert (settings.other_consumer, settings.tpm_changes) == (None, ())
        assert settings.quota_reset_s == 60.0

    def test_the_fixed_shape_and_its_reset_parse(self) -> None:
        """quota_shape = 'fixed' and quota_reset_s are read in [defaults] and [[routes]], in TOML too."""
        config = EmulatorConfig.from_dict(
            tomllib.loads(
                '[defaults]\ntpm = 1000\nquota_shape = "fixed"\nquota_reset_s = 12.5\n'
                '[[routes]]\nprofile = "us.*"\nquota_reset_s = 60\n'
            )
        )
        settings = config.settings_for("eu.x", "eu-west-1")
        assert (settings.quota_shape, settings.quota_reset_s) == ("fixed", 12.5)
        assert config.settings_for("us.x", "us-east-1").quota_reset_s == 60.0
        assert EmulatorConfig.from_dict(config.to_dict()) == config

    def test_every_key_parses_in_defaults_and_routes(self) -> None:
        """The four settings are read in [defaults] and in [[routes]] entries, later rules winning."""
        config = EmulatorConfig.from_dict(
            {
                "defaults": {"tpm": 1000, "quota_shape": "bucket", "quota_start": "empty"},
                "routes": [
                    {
                        "profile": "us.*",
                        "quota_start": 0.25,
                        "other_consumer": {"share": 0.3, "pattern": "bursty", "period_s": 5},
                        "tpm_changes": [{"at_s": 30, "tpm": 2000}, {"at_s": 10, "tpm": 500}],
                    }
                ],
            }
        )
        assert config.settings_for("eu.x", "eu-west-1").quota_start == 0.0
        settings = config.settings_for("us.x", "us-east-1")
        assert (settings.quota_shape, settings.quota_start) == ("bucket", 0.25)
        assert settings.other_consumer == OtherConsumer(0.3, "bursty", 5.0)
        assert settings.tpm_changes == (TpmChange(10.0, 500), TpmChange(30.0, 2000))

    def test_round_trip(self) -> None:
        """GET /faults of a config with every quota key can be PUT back unchanged."""
        config = EmulatorConfig.from_dict(
            {
                "defaults": {
                    "tpm": 1000,
                    "quota_shape": "bucket",
                    "quota_start": "full",
                    "quota_reset_s": 0.5,
                    "other_consumer": {"share": 0.5},
                    "tpm_changes": [{"at_s": 1, "tpm": 9}],
                },
                "routes": [
                    {"profile": "a", "quota_start": "empty", "other_consumer": {"share": 0}},
                    {"profile": "b", "quota_start": 0.4},
                ],
            }
        )
        data = config.to_dict()
        assert data["defaults"]["quota_start"] == "full"
        assert data["routes"][0]["quota_start"] == "empty"
        assert EmulatorConfig.from_dict(data) == config

    def test_share_zero_switches_a_consumer_off(self) -> None:
        """A route rule with other_consumer.share = 0 removes the consumer the defaults set."""
        config = EmulatorConfig.from_dict(
            {
                "defaults": {"other_consumer": {"share": 0.5}},
                "routes": [{"profile": "quiet", "other_consumer": {"share": 0}}],
            }
        )
        assert config.settings_for("quiet", "r").other_consumer is None
        assert config.settings_for("busy", "r").other_consumer == OtherConsumer()

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (
                {"defaults": {"quota_shape": "leaky"}},
                "defaults.quota_shape: must be 'window', 'bucket' or 'fixed', got 'leaky'",
            ),
            (
                {"defaults": {"quota_reset_s": 0}},
                "defaults.quota_reset_s: must be a number of seconds greater than 0 and at most 60",
            ),
            (
                {"routes": [{"profile": "x", "quota_reset_s": 60.5}]},
                "routes[0].quota_reset_s: must be a number of seconds greater than 0 and at most 60 "
                "(when a fixed window's first minute ends), got 60.5",
            ),
            ({"defaults": {"quota_reset_s": -1}}, "defaults.quota_reset_s: must be a number of seconds"),
            ({"defaults": {"quota_reset_s": "soon"}}, "defaults.quota_reset_s: must be a number of seconds"),
            ({"defaults": {"quota_reset_s": True}}, "defaults.quota_reset_s: must be a number of seconds"),
            (
                {"defaults": {"quota_reset_s": math.nan}},
                "defaults.quota_reset_s: must be a number of seconds",
            ),
            (
                {"routes": [{"profile": "x", "quota_start": "half"}]},
                "routes[0].quota_start: must be 'full', 'empty' or a share between 0 and 1, got 'half'",
            ),
            ({"defaults": {"quota_start": 1.5}}, "defaults.quota_start: must be 'full', 'empty' or a share"),
            ({"defaults": {"quota_start": True}}, "defaults.quota_start: must be 'full', 'empty' or a share"),
            ({"defaults": {"other_consumer": 0.5}}, "defaults.other_consumer: must be a table"),
            ({"defaults": {"other_consumer": {"rate": 1}}}, "defaults.other_consumer: unknown key 'rate'"),
            (
                {"defaults": {"other_consumer": {"share": 2}}},
                "defaults.other_consumer.share: must be between 0 and 1",
            ),
            (
                {"defaults": {"other_consumer": {"pattern": "random"}}},
                "defaults.other_consumer.pattern: must be 'steady' or 'bursty', got 'random'",
            ),
            (
                {"defaults": {"other_consumer": {"period_s": 0}}},
                "defaults.other_consumer.period_s: must be >= 0.1",
            ),
            ({"defaults": {"tpm_changes": {"at_s": 1}}}, "defaults.tpm_changes: must be an array"),
            ({"defaults": {"tpm_changes": [5]}}, "defaults.tpm_changes[0]: must be a table"),
            (
                {"defaults": {"tpm_changes": [{"at_s": 1}]}},
                "defaults.tpm_changes[0]: at_s and tpm are required",
            ),
            (
                {"defaults": {"tpm_changes": [{"at_s": 1, "tpm": 5, "when": 2}]}},
                "defaults.tpm_changes[0]: unknown key 'when'",
            ),
            (
                {"routes": [{"profile": "x", "tpm_changes": [{"at_s": 1, "tpm": 5}, {"at_s": 2, "tpm": 0}]}]},
                "routes[0].tpm_changes[1].tpm: must be a positive number of tokens per minute, got 0",
            ),
            (
                {"defaults": {"tpm_changes": [{"at_s": -1, "tpm": 5}]}},
                "defaults.tpm_changes[0].at_s: must be >= 0",
            ),
            (
                {"defaults": {"tpm_changes": [{"at_s": 1, "tpm": 1.5}]}},
                "defaults.tpm_changes[0].tpm: must be an integer",
            ),
        ],
    )
    def test_errors_name_the_key(self, data: dict[str, Any], message: str) -> None:
        """A bad quota setting is refused with the key's path in the message."""
        with pytest.raises(ConfigError) as info:
            EmulatorConfig.from_dict(data)
        assert message in str(info.value)

    def test_the_documented_scenarios_parse(self) -> None:
        """Every fault file in docs/emulator.md's Quota shapes section is a valid configuration."""
        text = (ROOT / "docs" / "emulator.md").read_text()
        section = text[text.index("### Quota shapes") :]
        block = section[section.index("```toml") + 7 : section.index("```", section.index("```toml") + 7)]
        files = [part for part in re.split(r"^# \d+\. .*$", block, flags=re.M) if part.strip()]
        assert len(files) == 9
        configs = [EmulatorConfig.from_dict(tomllib.loads(part)) for part in files]
        assert {c.defaults.quota_shape for c in configs} == {"window", "bucket", "fixed"}
        assert configs[-1].defaults.throttle_rate == 0.02


class TestCommandLineFlags:
    def test_quota_flags_reach_the_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--quota-shape and --quota-start set the defaults of the served configuration."""
        seen: list[EmulatorConfig] = []
        monkeypatch.setattr(cli, "run_emulator", lambda config, *args: seen.append(config))
        assert cli.main(["--tpm", "6000", "--quota-shape", "bucket", "--quota-start", "empty"]) == 0
        assert cli.main(["--tpm", "6000", "--quota-start", "0.25"]) == 0
        assert (seen[0].defaults.quota_shape, seen[0].defaults.quota_start) == ("bucket", 0.0)
        assert (seen[1].defaults.quota_shape, seen[1].defaults.quota_start) == ("window", 0.25)

    def test_the_fixed_shape_and_its_reset_reach_the_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """--quota-shape fixed and --quota-reset-s set the defaults of the served configuration."""
        seen: list[EmulatorConfig] = []
        monkeypatch.setattr(cli, "run_emulator", lambda config, *args: seen.append(config))
        assert cli.main(["--tpm", "6000", "--quota-shape", "fixed", "--quota-reset-s", "0.5"]) == 0
        assert (seen[0].defaults.quota_shape, seen[0].defaults.quota_reset_s) == ("fixed", 0.5)

    @pytest.mark.parametrize("value", ["0", "60.5", "soon"])
    def test_a_bad_quota_reset_is_refused(self, value: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--quota-reset-s outside (0, 60] is a usage error naming the flag."""
        assert cli.main(["--quota-reset-s", value]) == 2
        assert "--quota-reset-s" in capsys.readouterr().err

    @pytest.mark.parametrize("value", ["half", "1.5", "-0.1"])
    def test_a_bad_quota_start_is_refused(self, value: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--quota-start outside full, empty and [0, 1] is a usage error naming the flag."""
        assert cli.main(["--quota-start", value]) == 2
        assert "--quota-start" in capsys.readouterr().err


async def throttle_message(client: Any, body: str) -> str | None:
    """The ThrottlingException message of one call, or None if it was answered."""
    try:
        await invoke(client, body, HAIKU)
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "ThrottlingException"
        return str(exc.response["Error"]["Message"])
    return None


@pytest.mark.anyio
class TestQuotaOverHttp:
    async def test_a_drained_bucket_throttles_at_once_then_admits_after_refill(
        self, emu: EmulatorThread
    ) -> None:
        """An empty bucket refuses the first call, admits one once refilled, then refuses again."""
        # 6,000 tokens a minute: 100 a second; each call reserves and costs 3 + 100 (Haiku burns 1x)
        emu.set_faults(
            {"defaults": {"tpm": 6000, "quota_shape": "bucket", "quota_start": "empty", "output_tokens": 100}}
        )
        body = request_body(max_tokens=100)
        async with runtime(emu.url) as client:
            assert await throttle_message(client, body) == TOKENS_THROTTLED_MESSAGE
            await anyio.sleep(1.3)
            assert await throttle_message(client, body) is None
            assert await throttle_message(client, body) == TOKENS_THROTTLED_MESSAGE
        counters = emu.counters()
        assert counters["requests"][HAIKU_EAST] == {"ThrottlingException": 2, "ok": 1}
        assert counters["throttles"][HAIKU_EAST] == {"quota": 2, "capacity": 0}
        assert counters["quota"][HAIKU_EAST]["shape"] == "bucket"

    async def test_a_drained_fixed_window_throttles_until_its_reset_then_admits(
        self, emu: EmulatorThread
    ) -> None:
        """A fixed window drained at creation refuses calls until its first minute ends, then opens wholly."""
        # 6,000 tokens a minute, the first minute ending 1.5 s after the first call; each call 3 + 100
        emu.set_faults(
            {
                "defaults": {
                    "tpm": 6000,
                    "quota_shape": "fixed",
                    "quota_start": "empty",
                    "quota_reset_s": 1.5,
                    "output_tokens": 100,
                }
            }
        )
        body = request_body(max_tokens=100)
        async with runtime(emu.url) as client:
            assert await throttle_message(client, body) == TOKENS_THROTTLED_MESSAGE
            await anyio.sleep(0.3)  # a bucket or window would have freed 30 tokens: this frees none
            assert await throttle_message(client, body) == TOKENS_THROTTLED_MESSAGE
            await anyio.sleep(1.4)  # past the reset
            for _ in range(5):  # the whole limit at once, not a refill's worth
                assert await throttle_message(client, body) is None
        counters = emu.counters()
        assert counters["requests"][HAIKU_EAST] == {"ThrottlingException": 2, "ok": 5}
        assert counters["throttles"][HAIKU_EAST] == {"quota": 2, "capacity": 0}
        quota = counters["quota"][HAIKU_EAST]
        assert (quota["shape"], quota["limit"], quota["used"]) == ("fixed", 6000, 5 * 103)

    async def test_a_full_bucket_admits_a_burst_of_its_capacity(self, emu: EmulatorThread) -> None:
        """Concurrent calls reserving a sixth of a full bucket each: six pass, the rest are throttled."""
        emu.set_faults(
            {"defaults": {"tpm": 6000, "quota_shape": "bucket", "latency_ms": 1000, "output_tokens": 20}}
        )
        async with runtime(emu.url) as client:
            bodies = [request_body(f"b{i:02d}", max_tokens=999) for i in range(9)]  # 1 + 999 each
            results = await anyio_gather([partial(throttle_message, client, body) for body in bodies])
        assert results.count(None) == 6
        assert results.count(TOKENS_THROTTLED_MESSAGE) == 3

    async def test_capacity_throttles_say_too_many_requests_and_count_apart(
        self, emu: EmulatorThread
    ) -> None:
        """throttle_rate answers the plain message and is counted as capacity, not quota."""
        emu.set_faults({"defaults": {"tpm": 6000, "throttle_rate": 1.0}})
        async with runtime(emu.url) as client:
            for i in range(3):
                message = await throttle_message(client, request_body(f"c{i}"))
                assert message == ERRORS["ThrottlingException"].message
        counters = emu.counters()
        assert counters["requests"][HAIKU_EAST] == {"ThrottlingException": 3}
        assert counters["throttles"][HAIKU_EAST] == {"quota": 0, "capacity": 3}
        timeline = counters["quota"][HAIKU_EAST]["timeline"]
        assert sum(row["capacity_throttles"] for row in timeline) == 3
        assert sum(row["quota_throttles"] for row in timeline) == 0

    async def test_counters_timeline_adds_up_to_the_calls(self, emu: EmulatorThread) -> None:
        """The timeline's admitted and settled tokens sum to what the calls reserved and cost."""
        emu.set_faults({"defaults": {"tpm": 100_000, "output_tokens": 20}})
        async with runtime(emu.url) as client:
            for i in range(3):
                await invoke(client, request_body(f"t{i}", max_tokens=50), HAIKU)  # 1 + 50, settles 1 + 20
        quota = emu.counters()["quota"][HAIKU_EAST]
        assert (quota["shape"], quota["limit"], quota["used"], quota["available"]) == (
            "window",
            100_000,
            63,
            100_000 - 63,
        )
        rows = quota["timeline"]
        assert all(isinstance(row["t"], int) and row["t"] >= 0 for row in rows)
        assert sum(row["admitted"] for row in rows) == 3 * 51
        assert sum(row["settled"] for row in rows) == 3 * 21
        assert sum(row["quota_throttles"] + row["other_consumer"] for row in rows) == 0

    async def test_a_raise_mid_run_lets_a_larger_call_through(self, emu: EmulatorThread) -> None:
        """A call larger than the quota passes once a tpm change has raised it."""
        emu.set_faults({"defaults": {"tpm": 50, "tpm_changes": [{"at_s": 0.5, "tpm": 6000}]}})
        body = request_body(max_tokens=100)
        async with runtime(emu.url) as client:
            assert await throttle_message(client, body) == TOKENS_THROTTLED_MESSAGE  # 103 > 50: never
            await anyio.sleep(0.7)
            assert await throttle_message(client, body) is None
        assert emu.counters()["quota"][HAIKU_EAST]["limit"] == 6000

    async def test_a_consumer_of_the_whole_quota_starves_the_runner(self, emu: EmulatorThread) -> None:
        """With another consumer taking every refilled token, the runner's calls are throttled."""
        emu.set_faults(
            {
                "defaults": {
                    "tpm": 6000,
                    "quota_shape": "bucket",
                    "quota_start": "empty",
                    "other_consumer": {"share": 1.0},
                }
            }
        )
        async with runtime(emu.url) as client:
            assert await throttle_message(client, request_body(max_tokens=10)) == TOKENS_THROTTLED_MESSAGE
            await anyio.sleep(0.5)
            assert await throttle_message(client, request_body(max_tokens=10)) == TOKENS_THROTTLED_MESSAGE
        timeline = emu.counters()["quota"][HAIKU_EAST]["timeline"]
        assert sum(row["other_consumer"] for row in timeline) >= 30

    def test_the_admin_api_takes_and_checks_the_quota_keys(self, emu: EmulatorThread) -> None:
        """PATCH /_emulator/faults accepts the quota keys and names a wrong one in a 400."""
        patch = {
            "routes": [
                {
                    "profile": HAIKU,
                    "region": "us-east-1",
                    "tpm": 6000,
                    "quota_shape": "bucket",
                    "quota_start": 0.5,
                }
            ]
        }
        status, data = admin(emu.url, "PATCH", "faults", patch)
        assert status == 200 and data["routes"][0]["quota_start"] == 0.5
        status, data = admin(
            emu.url, "PATCH", "faults", {"defaults": {"tpm_changes": [{"at_s": 1, "tpm": 0}]}}
        )
        assert status == 400 and "defaults.tpm_changes[0].tpm" in data["message"]

    def test_the_admin_api_takes_and_checks_the_fixed_window_keys(self, emu: EmulatorThread) -> None:
        """PATCH /_emulator/faults accepts quota_shape = 'fixed' and quota_reset_s, and checks the latter."""
        patch = {
            "routes": [
                {
                    "profile": HAIKU,
                    "region": "us-east-1",
                    "tpm": 6000,
                    "quota_shape": "fixed",
                    "quota_reset_s": 0.5,
                }
            ]
        }
        status, data = admin(emu.url, "PATCH", "faults", patch)
        assert status == 200
        assert (data["routes"][0]["quota_shape"], data["routes"][0]["quota_reset_s"]) == ("fixed", 0.5)
        status, data = admin(emu.url, "PATCH", "faults", {"defaults": {"quota_reset_s": 0}})
        assert status == 400 and "defaults.quota_reset_s" in data["message"]


async def anyio_gather(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls concurrently and return their results in order."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results
