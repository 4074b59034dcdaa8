"""Admission maths: the quota window, AIMD, and the async gate."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import runner.limits
from runner.limits import BUCKET_S, LEARN_HITS, WINDOW_S, AdaptiveLimit, Admission, Permit, TokenWindow
from runner.types import Route, Usage

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


class TestAdaptiveLimit:
    def test_slow_start_grows_by_one_per_success(self) -> None:
        """Before the first throttle every success adds one slot."""
        lim = AdaptiveLimit(ceiling=100, value=4)
        for _ in range(4):
            lim.on_success()
        assert lim.slots == 8

    def test_throttle_cuts_once_per_interval(self) -> None:
        """A burst of throttles within the interval cuts the limit once."""
        lim = AdaptiveLimit(ceiling=100, value=50)
        assert lim.on_throttle(0.0)
        assert not lim.on_throttle(0.5)
        assert lim.slots == 35

    def test_never_above_ceiling(self) -> None:
        """The limit never exceeds max_in_flight."""
        lim = AdaptiveLimit(ceiling=5, value=5)
        lim.on_success()
        assert lim.slots == 5


class TestAdmission:
    async def test_max_in_flight_blocks_until_release(self) -> None:
        """The (n+1)th request waits until one of n in flight is released."""
        adm = Admission([ROUTE], max_in_flight=2, adaptive=False)
        p1 = await adm.acquire(ROUTE, 10)
        await adm.acquire(ROUTE, 10)
        admitted: list[int] = []

        async def third() -> None:
            await adm.acquire(ROUTE, 10)
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
        first = await adm.acquire(ROUTE, 1)
        order: list[int] = []

        async def waiter(n: int) -> None:
            p = await adm.acquire(ROUTE, 1)
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
        await adm.acquire(ROUTE, 800)
        with anyio.move_on_after(0.05) as scope:
            await adm.acquire(ROUTE, 300)
        assert scope.cancelled_caught

    async def test_throttle_releases_its_reservation(self) -> None:
        """A throttled request books nothing against the modelled quota."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=10, tpm=1000, headroom=1.0, clock=clock)
        p = await adm.acquire(ROUTE, 800)
        adm.release(p, "throttled")
        await adm.acquire(ROUTE, 900)

    def test_charge_uses_output_burndown_and_ignores_cache_reads(self) -> None:
        """Quota charge = input + cache writes + output x burndown; cache reads are free."""
        adm = Admission([ROUTE], max_in_flight=1, output_burndown=5.0)
        assert adm.charge_of(Usage(100, 10, 20, 1000)) == 100 + 20 + 50


class TestLearnedQuota:
    async def test_repeated_throttles_at_one_level_set_the_quota(self) -> None:
        """With no tpm, eight throttles with no success at or above their level cap the window there."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, adaptive=True, clock=clock)
        adm.release(await adm.acquire(ROUTE, 100), "ok", Usage(100, 0))  # a success: the scale
        held = [await adm.acquire(ROUTE, 100) for _ in range(3)]  # the window holds 400
        for _ in range(LEARN_HITS):
            adm.release(await adm.acquire(ROUTE, 100), "throttled")  # refused at 400 + 100
        with anyio.move_on_after(0.05) as scope:
            await adm.acquire(ROUTE, 100)  # 500 > 0.98 x 500
        assert scope.cancelled_caught
        assert held

    async def test_throttles_before_any_success_teach_nothing(self) -> None:
        """A storm before the first success (another job on the quota, a cold start) learns no quota."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, adaptive=True, clock=clock)
        for _ in range(3 * LEARN_HITS):
            adm.release(await adm.acquire(ROUTE, 100), "throttled")
        await adm.acquire(ROUTE, 5000)  # no cap was learned

    async def test_a_success_above_the_throttles_refutes_them(self) -> None:
        """Throttles followed by a success at the same level or above teach nothing (not a quota)."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, adaptive=True, clock=clock)
        adm.release(await adm.acquire(ROUTE, 10), "ok", Usage(10, 0))
        for _ in range(LEARN_HITS - 1):
            adm.release(await adm.acquire(ROUTE, 100), "throttled")  # refused at level 110
        adm.release(await adm.acquire(ROUTE, 100), "ok", Usage(100, 0))  # admitted at 110: fine
        adm.release(await adm.acquire(ROUTE, 100), "throttled")  # one throttle: not enough
        await adm.acquire(ROUTE, 5000)  # no cap was learned

    async def test_a_learned_quota_grows_while_nothing_throttles(self) -> None:
        """Probing raises a learned quota by 2 % every 3 s without throttles."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, adaptive=True, clock=clock)
        adm.release(await adm.acquire(ROUTE, 1000), "ok", Usage(1000, 0))
        held = await adm.acquire(ROUTE, 1000)
        for _ in range(LEARN_HITS):
            adm.release(await adm.acquire(ROUTE, 1000), "throttled")  # learned: 2000 + 1000
        adm.release(held, "ok", Usage(1000, 0))
        clock.now += 61  # the window is empty again
        await adm.acquire(ROUTE, 2500)  # one probe on the way: 3060
        with anyio.move_on_after(0.05) as scope:
            await adm.acquire(ROUTE, 500)  # 3000 > 0.98 x 3060
        assert scope.cancelled_caught
        for _ in range(2):  # 3060 x 1.02^2 = 3184
            clock.now += 3
            adm.release(await adm.acquire(ROUTE, 0), "ok", Usage(0, 0))
        await adm.acquire(ROUTE, 500)  # 3000 <= 0.98 x 3184


class TestSlowStart:
    async def _admit(self, adm: Admission, n: int) -> list[Permit]:
        return [await adm.acquire(ROUTE, 10) for _ in range(n)]

    async def test_unknown_quota_starts_at_half_the_ceiling(self) -> None:
        """No tpm: the first wave is half of max_in_flight; the next request waits."""
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, clock=clock)
        await self._admit(adm, 50)
        with anyio.move_on_after(0.05) as scope:
            await adm.acquire(ROUTE, 10)
        assert scope.cancelled_caught

    async def test_doubles_when_no_throttle_comes_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A wave that drew no throttle for the doubling time lets twice as many in, answers or not."""
        monkeypatch.setattr(runner.limits, "SLOW_START_DOUBLING_S", 0.05)
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, clock=clock)
        await self._admit(adm, 50)
        admitted: list[Permit] = []

        async def more() -> None:
            admitted.extend(await self._admit(adm, 50))

        async with anyio.create_task_group() as tg:
            tg.start_soon(more)
            await anyio.wait_all_tasks_blocked()
            assert admitted == []
            clock.now += 0.05  # the head waiter's timer re-checks after the doubling time
        assert len(admitted) == 50
        assert adm.figures()[ROUTE.name].limit == 100

    async def test_a_throttle_ends_the_doubling(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """After a throttle the limit is cut and only grows additively: time alone adds nothing."""
        monkeypatch.setattr(runner.limits, "SLOW_START_DOUBLING_S", 0.05)
        clock = Clock()
        adm = Admission([ROUTE], max_in_flight=100, clock=clock)
        permits = await self._admit(adm, 50)
        adm.release(permits.pop(), "throttled")
        clock.now += 1.0
        assert adm.figures()[ROUTE.name].limit == 35
        await self._admit(adm, 35 - len(permits))
        with anyio.move_on_after(0.2) as scope:
            await adm.acquire(ROUTE, 10)
        assert scope.cancelled_caught
