"""Admission control: how many requests each route may have in flight, and when a request may start.

Bedrock's on-demand limit is a tokens-per-minute quota per route, and it *reserves*
``input + cache_write + max_tokens`` when a request starts, then settles to the real usage (output
tokens weighted by the model's burndown) when it ends. Firing a fixed number of workers either leaves
that quota idle or drowns in ThrottlingException. Two mechanisms, per route, fix that:

* :class:`TokenWindow` models the quota (when ``tpm`` is known): a rolling 60-second window of charges,
  each reserved at admission and settled at completion, exactly as Bedrock books them. A request is
  admitted only when it fits under ``tpm * headroom``; otherwise it waits for the window to slide.
* :class:`AdaptiveLimit` finds what is left unknown: AIMD on the number of requests in flight. It grows
  by one per success, and doubles every 0.5 s without a throttle, until the first throttle (slow
  start, from half of ``max_in_flight``); then by one per window of successes; and
  is cut by 30 % on a throttle, at most once per ``cut_interval_s`` so one burst of 429s answers one cut.
* With no ``tpm`` the same window is kept uncapped, and repeated throttles at one level *learn* the
  quota: the window is capped there, then probed 2 % higher every 3 s without throttles, so a
  raised quota (or one another job was holding) is found again.

``Admission`` combines both with the job-wide ``max_in_flight`` and wakes waiters in FIFO order, one
at a time, so a thousand waiting tasks do not all wake up for every completed request.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import anyio

from runner.types import Route, Usage

WINDOW_S = 60.0
DEFAULT_HEADROOM = 0.98
"""Share of a known quota the budget fills: a little slack for clock skew and settle timing."""
LEARN_HITS = 8
"""Throttles at (or above) one window level, with no success at or above it in between, that it takes
to call that level the quota. One throttle proves nothing (Bedrock also throttles for capacity);
above a real quota every request is refused, so eight come within moments."""
PROBE_INTERVAL_S = 3.0
PROBE_GROWTH = 1.02
"""A learned quota grows 2 % every 3 s without throttles (~50 %/min): it finds a raised quota, and
recovers from an estimate made low by traffic it cannot see (another job on the same quota)."""
SLOW_START_DOUBLING_S = 0.5
"""Slow start doubles the limit this often while no throttle comes back (as well as +1 per success)."""

Outcome = Literal["ok", "throttled", "failed", "cancelled"]


BUCKET_S = 0.1
"""Width of a window slot. Charges are summed per slot, not kept one by one: at 1,500 rows/s a
window held ~90,000 charge objects per route (20-25 MB in a job that otherwise needs ~150 MB).
A slot leaves the window when its *latest* charge does, so an earlier charge counts at most 0.1 s
longer than it should: the quota is over-estimated by at most 0.1 s in 60 (0.2 %)."""


@dataclass(eq=False, slots=True)
class _Slot:
    start: float
    last: float
    tokens: float = 0.0
    live: bool = True


@dataclass(eq=False, slots=True)
class _Charge:
    """One request's share of a slot, so settling can replace exactly what it reserved."""

    slot: _Slot
    at: float
    tokens: float


@dataclass(eq=False)
class TokenWindow:
    """Rolling 60 s window of quota charges (reservations and settled usage) of one route."""

    tpm: float
    headroom: float = DEFAULT_HEADROOM
    _slots: deque[_Slot] = field(default_factory=deque)
    _sum: float = 0.0

    @property
    def cap(self) -> float:
        return self.tpm * self.headroom

    def used(self, now: float) -> float:
        self._expire(now)
        return self._sum

    def wait_time(self, tokens: float, now: float) -> float:
        """Seconds until ``tokens`` fit, 0 if they fit now. A request larger than the whole quota fits
        only into an empty window (Bedrock would reject it outright only above the quota itself)."""
        self._expire(now)
        need = min(tokens, self.cap)
        if self._sum + need <= self.cap:
            return 0.0
        freed = 0.0
        latest = -math.inf  # slots leave in order, so a slot goes no earlier than one before it
        for slot in self._slots:
            freed += slot.tokens
            latest = max(latest, slot.last)
            if self._sum - freed + need <= self.cap:
                return max(0.0, latest + WINDOW_S - now)
        return WINDOW_S

    def add(self, tokens: float, now: float) -> _Slot:
        """Count ``tokens`` at ``now`` for good (usage already settled: nothing to replace later)."""
        slots = self._slots
        if slots and now < slots[-1].start + BUCKET_S:
            slot = slots[-1]
            slot.last = max(slot.last, now)
        else:
            slot = _Slot(now, now)
            slots.append(slot)
        slot.tokens += tokens
        self._sum += tokens
        return slot

    def reserve(self, tokens: float, now: float) -> _Charge:
        """Count ``tokens`` at ``now`` until :meth:`settle` replaces them by what the request used."""
        return _Charge(self.add(tokens, now), now, tokens)

    def settle(self, charge: _Charge, tokens: float, booked_at: float | None = None) -> None:
        """Replace a reservation by the real charge, kept at the time the service booked it.

        That is the request's arrival at Bedrock, a little after its admission here (client CPU,
        the network: a burst of a few hundred requests reaches the service over ~0.3 s).
        ``booked_at`` (from the answer's server latency) moves the charge there, never earlier;
        with the admission time, charges left this window before Bedrock's and the requests
        admitted into the gap were throttled.
        """
        old = charge.slot
        if old.live:
            old.tokens -= charge.tokens
            self._sum += tokens - charge.tokens
            slot = old
            if booked_at is not None and booked_at > charge.at:
                slot = self._slot_at(booked_at)
                charge.slot, charge.at = slot, booked_at
            slot.tokens += tokens
        charge.tokens = tokens

    def _slot_at(self, at: float) -> _Slot:
        """The slot a charge dated ``at`` belongs in (a live slot at or before it exists: the
        charge's own); a new one is put in order when ``at`` falls past the slot's width."""
        slots = self._slots
        i = len(slots) - 1
        while slots[i].start > at:
            i -= 1
        slot = slots[i]
        if at < slot.start + BUCKET_S:
            slot.last = max(slot.last, at)
            return slot
        slot = _Slot(at, at)
        slots.insert(i + 1, slot)
        return slot

    def _expire(self, now: float) -> None:
        horizon = now - WINDOW_S
        slots = self._slots
        while slots and slots[0].last <= horizon:
            old = slots.popleft()
            old.live = False
            self._sum -= old.tokens
        if not slots:
            self._sum = 0.0  # shed float drift


@dataclass(eq=False)
class AdaptiveLimit:
    """AIMD concurrency limit of one route, never above ``ceiling``."""

    ceiling: int
    value: float
    floor: float = 1.0
    decrease: float = 0.7
    cut_interval_s: float = 2.0
    slow_start: bool = True
    _last_cut: float = -math.inf

    _grown_at: float | None = None

    def on_success(self) -> None:
        step = 1.0 if self.slow_start else 1.0 / max(self.value, 1.0)
        self.value = min(float(self.ceiling), self.value + step)

    def grow_with_time(self, now: float) -> float:
        """In slow start, also double every :data:`SLOW_START_DOUBLING_S` without a throttle; returns
        the seconds to the next doubling (``inf``: no more growth this way).

        Bedrock refuses an over-quota request at once (a 429 comes back in milliseconds), while an
        admitted one answers only when its generation is done: a wave that drew no throttle in that
        time was admitted. Growing per success alone waited a whole generation (seconds) per doubling,
        and cost 1 s of a 42 s run at 2 s latency even when starting from half the ceiling.
        """
        if not self.slow_start or self.value >= self.ceiling:
            return math.inf
        if self._grown_at is None:
            self._grown_at = now
        elif now >= self._grown_at + SLOW_START_DOUBLING_S:
            self.value = min(float(self.ceiling), self.value * 2)
            self._grown_at = now
        return self._grown_at + SLOW_START_DOUBLING_S - now  # > 0: a wait, never "fits now"

    def on_throttle(self, now: float) -> bool:
        """Cut the limit unless it was cut very recently; returns True when it was cut."""
        self.slow_start = False
        if now - self._last_cut < self.cut_interval_s:
            return False
        self._last_cut = now
        self.value = max(self.floor, self.value * self.decrease)
        return True

    @property
    def slots(self) -> int:
        return max(1, int(self.value))


class RouteFigures(NamedTuple):
    """A snapshot of one route's admission state, for the progress display and logs."""

    in_flight: int
    limit: int
    tokens_last_minute: float
    quota_share: float | None
    throttles_last_minute: int


@dataclass(frozen=True, slots=True)
class Permit:
    """The right to send one request on ``route``; hand it back with :meth:`Admission.release`."""

    route: Route
    reserved: float
    charge: _Charge | None
    level: float = 0.0
    """Quota tokens in the route's window once this request was admitted (for learning a quota)."""


@dataclass(eq=False, slots=True)
class _Waiter:
    """A request waiting for admission; :meth:`Admission._grant` sets ``permit``, then ``event``."""

    tokens: float
    event: anyio.Event = field(default_factory=anyio.Event)
    permit: Permit | None = None


@dataclass(eq=False)
class _RouteState:
    limit: AdaptiveLimit
    window: TokenWindow | None
    learned: bool = False
    """The window's quota is an estimate from throttles (no ``tpm`` was given), not the user's figure."""
    probed_at: float = 0.0
    candidate: float = math.inf
    """Lowest window level of the throttles counted in ``hits``: the quota, if no success beats it."""
    hits: int = 0
    last_ok_at: float = -math.inf
    """When a request last succeeded: throttles before any success (a cold start, another job
    holding the quota) give no scale to learn from, and teach nothing."""
    in_flight: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)
    throttles: deque[float] = field(default_factory=deque)
    settled: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf))


class Admission:
    """Admission of requests onto routes: job-wide ``max_in_flight``, AIMD per route, quota per route."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        max_in_flight: int,
        tpm: int = 0,
        adaptive: bool = True,
        output_burndown: float = 1.0,
        headroom: float = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.output_burndown = output_burndown
        self._clock = clock
        self._in_flight = 0
        # Unknown quota: start at half the ceiling (at least 32) and slow-start from there, so the first
        # wave, the one most likely to meet a quota, is not the whole ceiling at once. From a quarter,
        # a 1,024 ceiling at 2 s latency took two round trips to reach and cost 2.3 s of a 42 s run.
        start = max_in_flight if (tpm or not adaptive) else min(max_in_flight, max(32, max_in_flight // 2))
        learn = adaptive and not tpm
        self._routes: dict[Route, _RouteState] = {
            r: _RouteState(
                limit=AdaptiveLimit(ceiling=max_in_flight, value=float(start), slow_start=not tpm),
                # Unknown quota: track the same window with no cap until a throttle reveals one.
                window=TokenWindow(tpm=tpm or math.inf, headroom=headroom) if (tpm or learn) else None,
                learned=learn,
            )
            for r in routes
        }
        self._adaptive = adaptive

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def charge_of(self, usage: Usage) -> float:
        """Quota tokens a finished request costs: cache reads are free, output burns down."""
        return (
            usage.input_tokens
            + usage.cache_creation_input_tokens
            + usage.output_tokens * self.output_burndown
        )

    def _fits(self, state: _RouteState, tokens: float, now: float) -> float:
        """0 when the request may start now; else seconds to wait (``inf``: until a release)."""
        if self._in_flight >= self.max_in_flight:
            return math.inf
        if state.in_flight >= state.limit.slots:
            wait = state.limit.grow_with_time(now)
            if state.in_flight >= state.limit.slots:
                return wait
        if state.window is not None:
            if state.learned and now - state.probed_at >= PROBE_INTERVAL_S:
                state.probed_at = now
                state.window.tpm *= PROBE_GROWTH  # no-op while still unknown (inf)
            return state.window.wait_time(tokens, now)
        return 0.0

    async def acquire(self, route: Route, tokens: float) -> Permit:
        """Wait until a request reserving ``tokens`` may start on ``route`` (FIFO among waiters).

        Waiters are admitted by whatever frees room (:meth:`release`, the head's quota timer) as many
        at once as fit: handing over one waiter per wake-up admitted one request per event-loop
        iteration, which kept ~4 of 128 requests in flight at zero latency.
        """
        state = self._routes[route]
        now = self._clock()
        if not state.waiters and self._fits(state, tokens, now) == 0.0:
            return self._admit(route, state, tokens, now)
        waiter = _Waiter(tokens)
        state.waiters.append(waiter)
        try:
            while waiter.permit is None:
                wait = math.inf
                if state.waiters[0] is waiter:
                    # The head waits for a release, or for the quota window to slide.
                    wait = self._fits(state, tokens, self._clock())
                    if wait == 0.0:
                        self._grant(route, state)
                        continue
                with anyio.move_on_after(None if math.isinf(wait) else wait):
                    await waiter.event.wait()
                if waiter.permit is None and waiter.event.is_set():
                    waiter.event = anyio.Event()  # woken to re-time its wait as the new head
            return waiter.permit
        except BaseException:
            if waiter.permit is not None:
                self._revoke(waiter.permit)  # admitted, but cancelled before it could be sent
            elif waiter in state.waiters:
                head = state.waiters[0] is waiter
                state.waiters.remove(waiter)
                if head:
                    self._grant(route, state)
            raise

    def _grant(self, route: Route, state: _RouteState) -> None:
        """Admit waiters from the head of the queue while they fit; wake a head the quota holds back
        so it sets its own timer (a head held by the concurrency limit waits for a release)."""
        now = self._clock()
        while state.waiters:
            head = state.waiters[0]
            wait = self._fits(state, head.tokens, now)
            if wait != 0.0:
                if not math.isinf(wait):
                    head.event.set()
                return
            state.waiters.popleft()
            head.permit = self._admit(route, state, head.tokens, now)
            head.event.set()

    def _revoke(self, permit: Permit) -> None:
        """Undo an admission whose request was never sent: no quota charge, room for the next."""
        state = self._routes[permit.route]
        self._in_flight -= 1
        state.in_flight -= 1
        if permit.charge is not None and state.window is not None:
            state.window.settle(permit.charge, 0.0)
        for route, other in self._routes.items():
            self._grant(route, other)

    def _admit(self, route: Route, state: _RouteState, tokens: float, now: float) -> Permit:
        self._in_flight += 1
        state.in_flight += 1
        if state.window is None:
            return Permit(route=route, reserved=tokens, charge=None)
        charge = state.window.reserve(tokens, now)
        return Permit(route=route, reserved=tokens, charge=charge, level=state.window.used(now))

    def release(
        self, permit: Permit, outcome: Outcome, usage: Usage | None = None, *, server_s: float | None = None
    ) -> None:
        """End a request: settle its quota charge and adapt the route's limit to how it went.

        ``server_s``: the time the request spent at the service (its answer's invocation latency),
        which dates the quota charge from the request's arrival there.
        """
        state = self._routes[permit.route]
        self._in_flight -= 1
        state.in_flight -= 1
        now = self._clock()
        charged = self.charge_of(usage) if usage is not None else 0.0
        if permit.charge is not None and state.window is not None:
            # A throttled request was never admitted by Bedrock: it books nothing. Anything that ran
            # books what it used; a failure mid-flight keeps its reservation (Bedrock may have counted it).
            if outcome == "throttled":
                state.window.settle(permit.charge, 0.0)
            elif usage is not None:
                booked_at = now - server_s if server_s is not None else None
                state.window.settle(permit.charge, charged, booked_at)
        if usage is not None:
            state.settled.add(charged, now)
        if outcome == "throttled":
            state.throttles.append(now)
            if self._adaptive:
                state.limit.on_throttle(now)
            if state.learned and state.window is not None:
                # Bedrock refused this reservation on top of what the window held: evidence that
                # the quota is about that level, confirmed once LEARN_HITS throttles agree and no
                # request admitted at that level or above succeeded meanwhile.
                level = state.window.used(now) + permit.reserved
                if now - state.last_ok_at <= WINDOW_S:  # no scale to compare with before a success
                    state.candidate = min(state.candidate, level)
                    state.hits += 1
                if state.hits >= LEARN_HITS:
                    state.window.tpm = min(state.window.tpm, state.candidate)
                    state.probed_at = now
                    state.candidate, state.hits = math.inf, 0
        elif outcome == "ok" and self._adaptive:
            state.limit.on_success()
            if state.learned:
                if permit.level >= state.candidate:
                    state.candidate, state.hits = math.inf, 0  # the quota is higher than the throttles said
                state.last_ok_at = now
        for route, other in self._routes.items():
            self._grant(route, other)

    def figures(self) -> dict[str, RouteFigures]:
        """Live per-route figures: in flight, current limit, tokens per minute, quota share, throttles."""
        now = self._clock()
        out: dict[str, RouteFigures] = {}
        for route, state in self._routes.items():
            while state.throttles and state.throttles[0] <= now - WINDOW_S:
                state.throttles.popleft()
            used = state.settled.used(now)
            share = (
                used / state.window.tpm
                if state.window is not None and math.isfinite(state.window.tpm)
                else None
            )
            out[route.name] = RouteFigures(
                in_flight=state.in_flight,
                limit=state.limit.slots,
                tokens_last_minute=used,
                quota_share=share,
                throttles_last_minute=len(state.throttles),
            )
        return out
