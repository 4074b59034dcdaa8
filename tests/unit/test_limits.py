"""Admission: the quota window, the async gate, and spilling across routes."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.limits import Admission, Outcome, RouteUse
from runner.types import Route, Usage
from runner.window import BUCKET_S, WINDOW_S, TokenWindow

ROUTE = Route("global.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "global")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestTokenWindow:
    def test_fits_under_the_cap(self) -> None:
        """A request that fits under tpm x headroom waits zero seconds."""
        w = TokenWindow(tpm=1000, headroom=1.0)
        assert w.wait_time(1000, 0.0) == 0.0

    def test_waits_for_the_oldest_charge_to_expire(self) -> None:
        """When full, the wait is until enough old charges leave the 60 s window."""
        w = TokenWindow(tpm=1000, headroom=1.0)
        w.reserve(600, 0.0)
        w.reserve(400, 10.0)
        assert w.wait_time(500, 20.0) == pytest.approx(40.0)

    def test_settle_replaces_the_reservation(self) -> None:
        """Settling books the real usage instead of the reservation."""
        w = TokenWindow(tpm=1000, headroom=1.0)
        c = w.reserve(900, 0.0)
        w.settle(c, 100)
        assert w.used(1.0) == 100

    def test_settle_dates_the_charge_from_its_booking(self) -> None:
        """A charge settled with the service's booking time leaves the window 60 s after that time."""
        w = TokenWindow(tpm=1000, headroom=1.0)
        c = w.reserve(900, 0.0)
        w.settle(c, 800, booked_at=0.3)
        assert w.used(60.1) == 800
        assert w.wait_time(500, 60.1) == pytest.approx(0.2)
        assert w.used(60.4) == 0

    def test_settle_after_expiry_changes_nothing(self) -> None:
        """An entry that already left the window no longer counts when settled."""
        w = TokenWindow(tpm=1000, headroom=1.0)
        c = w.reserve(900, 0.0)
        assert w.used(61.0) == 0
        w.settle(c, 100)
        assert w.used(61.0) == 0

    def test_a_busy_minute_keeps_slots_not_charges(self) -> None:
        """90,000 requests in a minute are held in at most one slot per 0.1 s, not one object each."""
        w = TokenWindow(tpm=float("inf"))
        for i in range(90_000):
            c = w.reserve(1000, i / 1500)
            w.settle(c, 400, booked_at=i / 1500 + 0.05)
        assert len(w._slots) <= WINDOW_S / BUCKET_S + 1
        assert w.used(59.99) == pytest.approx(90_000 * 400)

    @given(
        st.lists(
            st.tuples(
                st.floats(0, 3),  # seconds since the previous request
                st.integers(1, 5000),  # reserved
                st.integers(0, 5000),  # settled
                st.floats(0, 10),  # service time: booked this long after admission, settled after
            ),
            max_size=60,
        ),
        st.floats(0, 90),
    )
    def test_slots_count_what_single_charges_would_a_slot_longer_at_most(
        self, requests: list[tuple[float, int, int, float]], probe: float
    ) -> None:
        """Against an exact per-charge model: never less (the quota is not overrun), and no more
        than what the exact window held ``BUCKET_S`` earlier."""
        w = TokenWindow(tpm=float("inf"))
        exact: list[tuple[float, int]] = []
        now, pending = 0.0, []
        for gap, reserved, settled, service in requests:
            now += gap
            pending.append((w.reserve(reserved, now), now, reserved, settled, service))
        end = now
        for charge, at, _, settled, service in pending:
            w.settle(charge, settled, booked_at=min(at + service, end))
            exact.append((min(at + service, end), settled))
        t = end + probe

        def exact_used(at: float) -> int:
            return sum(tok for when, tok in exact if when > at - WINDOW_S)

        assert exact_used(t) <= w.used(t) + 1e-6
        assert w.used(t) <= exact_used(t - BUCKET_S) + 1e-6


class TestAdmission:
    async def test_max_in_flight_blocks_until_release(self) -> None:
        """The (n+1)th request waits until one of n in flight is released."""
        adm = Admission([ROUTE], max_in_flight=2, adaptive=False)
        p1 = await adm.acquire([ROUTE], 10)
        await adm.acquire([ROUTE], 10)
        admitted: list[int] = []

        async def third() -> None:
            await adm.acquire([ROUTE], 10)
            admitted.append(3)

        async with anyio.create_task_group() as tg:
            tg.start_soon(third)
            await anyio.wait_all_tasks_blocked()
            assert admitted == []
            adm.release(p1, "ok", Usage(5, 5))
        assert admitted == [3]

    async def test_waiters_are_admitted_in_fifo_order(self) -> None:
        """Waiting requests start in the order they arrived."""
        adm = Admission([ROUTE], max_in_flight=1, adaptive=False)
        first = await adm.acquire([ROUTE], 1)
        order: list[int] = []

        async def waiter(n: int) -> None:
            p = await adm.acquire([ROUTE], 1)
            order.append(n)
            adm.release(p, "ok", Usage(1, 1))

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(waiter, n)
                await anyio.wait_all_tasks_blocked()
            adm.release(first, "ok", Usage(1, 1))
        assert order == [0, 1, 2, 3, 4]

    async def test_token_budget_holds_requests_over_quota(self) -> None:
        """With a known tpm, a request that would pass the quota is not admitted yet."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=10, tpm=1000, headroom=1.0, clock=clock)
        await adm.acquire([ROUTE], 800)
        with anyio.move_on_after(0.05) as scope:
            await adm.acquire([ROUTE], 300)
        assert scope.cancelled_caught

    async def test_a_throttle_empties_the_modelled_quota(self) -> None:
        """A throttle books nothing, but says the service has no room: the next request waits for a refill."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=10, tpm=6000, headroom=1.0, clock=clock)
        p = await adm.acquire([ROUTE], 800)
        adm.release(p, "throttled")
        with anyio.move_on_after(0.05) as scope:
            await adm.acquire([ROUTE], 100)
        assert scope.cancelled_caught
        clock.now += 1.0  # 100 tokens refill in one second at 6,000 a minute
        await adm.acquire([ROUTE], 100)

    def test_charge_uses_output_burndown_and_ignores_cache_reads(self) -> None:
        """Quota charge = input + cache writes + output x burndown; cache reads are free."""
        adm = Admission([ROUTE], max_in_flight=1, output_burndown=5.0)
        assert adm.charge_of(Usage(100, 10, 20, 1000)) == 100 + 20 + 50

    def test_reservation_is_the_services_input_count_plus_max_tokens(self) -> None:
        """Reservation = input + cache writes + max_tokens, by the service's count of the input;
        cache reads and the output take no part."""
        assert Admission.reservation_of(Usage(100, 10, 20, 1000), max_tokens=256) == 100 + 20 + 256

    async def test_uses_count_what_each_route_did(self) -> None:
        """A route's use over the run: requests answered one way or another (a request cancelled
        before its answer is none), its throttles, and for the answered requests what Bedrock
        reserved (its input count + max_tokens) against what they settled to."""
        adm = Admission([ROUTE, OTHER], max_in_flight=10, tpm={ROUTE: 60_000}, output_burndown=5.0)
        outcomes: list[tuple[Outcome, Usage | None]] = [
            ("ok", Usage(100, 20)),
            ("ok", Usage(50, 10)),
            ("throttled", None),
            ("failed", None),
            ("cancelled", None),
        ]
        for outcome, usage in outcomes:
            permit = await adm.acquire([ROUTE], 100)
            adm.release(permit, outcome, usage, max_tokens=256 if usage else None)
        uses = adm.uses()
        assert uses[ROUTE.name] == RouteUse(
            requests=4,
            throttled=1,
            answered=2,
            reserved=100 + 256 + 50 + 256,
            settled=100 + 5 * 20 + 50 + 5 * 10,
            tpm=60_000,
            adaptive=True,
        )
        assert uses[OTHER.name] == RouteUse(0, 0, 0, 0.0, 0.0, tpm=0, adaptive=True)


OTHER = Route("us.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-1", "us")


class TestSpill:
    async def test_a_route_held_by_its_quota_spills_to_the_next(self) -> None:
        """When the first route's quota is spent, a request starts on the next route at once."""
        clock = Clock()
        adm = Admission([ROUTE, OTHER], max_in_flight=10, tpm=1000, headroom=1.0, clock=clock)
        clock.now += 10.0  # past startup
        first = await adm.acquire([ROUTE, OTHER], 900)
        second = await adm.acquire([ROUTE, OTHER], 900)
        assert (first.route, second.route) == (ROUTE, OTHER)

    async def test_the_preferred_route_is_taken_when_it_admits(self) -> None:
        """With room on both, the request takes the first route of its list."""
        adm = Admission([ROUTE, OTHER], max_in_flight=10, tpm=100_000)
        permit = await adm.acquire([OTHER, ROUTE], 10)
        assert permit.route == OTHER

    async def test_figures_report_the_paced_rate(self) -> None:
        """A route with a known quota reports the rate it paces at, in tokens per minute."""
        adm = Admission([ROUTE], max_in_flight=10, tpm=60_000, headroom=1.0)
        assert adm.figures()[ROUTE.name].quota_tpm == 60_000


EAST2 = Route("global.anthropic.claude-haiku-4-5-20251001-v1:0", "us-east-2", "global")


class TestTiers:
    async def test_a_tier_spreads_rows_over_its_regions(self) -> None:
        """Routes of one geography from several regions share the rows, each with its own quota."""
        adm = Admission([ROUTE, EAST2], max_in_flight=100, adaptive=False)
        permits = [await adm.acquire([ROUTE, EAST2], 10) for _ in range(10)]
        counts = {r: sum(p.route == r for p in permits) for r in (ROUTE, EAST2)}
        assert counts == {ROUTE: 5, EAST2: 5}

    async def test_a_full_region_moves_rows_to_another_at_once(self) -> None:
        """When one region's quota is spent, its tier-mate takes the row now, not after a spill wait."""
        clock = Clock()
        adm = Admission(
            [ROUTE, EAST2], max_in_flight=10, tpm={ROUTE: 1000, EAST2: 1000}, headroom=1.0, clock=clock
        )
        clock.now += 10.0  # past startup
        first = await adm.acquire([ROUTE, EAST2], 900)
        second = await adm.acquire([ROUTE, EAST2], 900)
        assert {first.route, second.route} == {ROUTE, EAST2}
