"""One route's tokens-per-minute quota, as the client can know it: pure maths over a clock.

Bedrock books a request against the quota of its route by *reserving* ``input + cache_write +
max_tokens`` when it arrives and *settling* to ``input + cache_write + output x burndown`` when it
ends. How the quota refills is not documented: a rolling 60 s window and a token bucket refilled
continuously are both plausible, the quota may be drained when a job starts (a crashed run, another
job on the account), another consumer may share it, it may be raised or cut mid-run, and Bedrock
also answers 429 for capacity, whatever the quota. :class:`RouteQuota` assumes none of these:

* **A paced bucket that books like the service.** Admissions draw from a client-side bucket refilled
  at ``rate`` (quota tokens per second) up to a minute of it; each admission takes its reservation
  and each settlement the difference, so what the model believes and what the service charges do
  not drift apart (and ``quota_share`` means what it says). A throttle says the quota is empty
  *now*: the level goes to zero, less what the requests still in flight will add when they settle.
* **Startup in waves.** The first admissions are released in waves that double every
  :data:`STARTUP_DOUBLING_S` while nothing throttles: a full quota is used within a second or two;
  a drained one costs the first small wave, not a storm.
* **The rate is measured, not guessed.** Between two throttles the quota was empty at both ends, so
  what it took in between (reservations admitted, settlements landed) is what it refilled: that
  sample is the rate to pace at. A sample is taken only over :data:`MIN_SAMPLE_S` or more, never
  from one moment's level. With the quota unknown the rate doubles every second until the first
  sample (discovery); with ``tpm`` given it starts at ``tpm`` and only samples lower it (another
  consumer, a cut).
* **Probing runs on a clock.** After a sample the rate holds for :data:`PROBE_HOLD_S`, then grows by
  steps that double every :data:`PROBE_EVERY_S` while no throttle answers (5 %, 10 %, 20 %, ...):
  a raised quota is found within a minute, a steady one costs a throttle or two per probe.
* **Capacity 429s are not the quota.** A throttle while the quota took all that was sent is no
  over-sending; and a cut after which the next sample fell with the rate (the quota would not
  have moved) was capacity throttling: it is undone.
* **The window guard.** A bucket lets a job spend its capacity at once *and* refill during the
  same minute; a rolling window does not. Until the route shows otherwise, its own charges of the
  last 60 s stay within ``60 x rate`` (exact for a window, safe for a bucket); when the guard holds
  requests back, one is sent past it now and then, and once one is admitted the guard is lifted.

All figures are quota tokens; ``now`` is any monotonic clock in seconds (tests drive it).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from runner.window import WINDOW_S, TokenWindow, WindowCharge

STARTUP_DOUBLING_S = 0.25
"""While starting up, the released allowance doubles this often if no throttle comes back. A 429
answers in milliseconds, an admitted request only when its generation ends: a wave that drew no
throttle in this time was admitted."""
STARTUP_FIRST_WAVE = 4
"""Requests in the first wave: what a drained quota costs in throttles."""
STARTUP_MAX_S = 4.0
"""Startup ends after this long at the latest (its allowance is then 65,000 requests)."""
STARTUP_EXIT_THROTTLES = 3
STARTUP_EXIT_SHARE = 0.5
"""A startup wave with at least 3 throttles, and at least this share of its admissions, says the
quota is not full: startup ends. Capacity throttles, a few per cent, do not end it."""
MIN_SAMPLE_S = 1.0
"""Shortest span between two throttles that measures the refill (shorter: one request's size is
a large error)..."""
MAX_SAMPLE_S = 15.0
"""...and longest (longer: the quota may have filled up in between, and the sample be too low)."""
PACED_SLACK = 2.0
"""A throttle counts as a measure of the rate only when the model had at most this many
reservations' worth of room left: the route was sending as fast as its rate let it."""
UNPACED_THROTTLES = 3
UNPACED_SHARE = 0.1
"""Throttles with room left in the model empty it only when at least 3 came within a second, and
at least this share of that second's admissions: a drained or shared quota, not capacity 429s."""
ADMITTED_KEPT = 4096
OVER_SENDING = 0.95
"""A sample under this share of what was sent (less the capacity throttles) is over-sending."""
PACE_MARGIN = 0.97
"""The rate is set a little under a sample, so an empty quota refills a little."""
CAPACITY_SAME = 0.05
"""After a cut, a next sample that took no larger share of what was sent (within this) says the
throttles did not depend on the rate: capacity 429s; the cut is undone..."""
CAPACITY_MIN_ACCEPTED = 0.4
"""...unless the quota took less than this share before the cut (a quota in debt, not capacity)."""
DISCOVERY_S = 1.0
"""An unknown quota's rate doubles this often while requests wait for it, until a sample."""
PROBE_HOLD_S = 20.0
"""After a sample the rate holds this long..."""
PROBE_EVERY_S = 5.0
"""...then grows every so often by a step that doubles each time no throttle answered..."""
PROBE_FIRST_STEP = 0.05
PROBE_MAX_STEP = 0.2
GUARD_PROBE_S = 2.0
"""When the guard first holds requests back, one is sent past it at once; after each refusal the
next waits this long, doubling..."""
GUARD_PROBE_MAX_S = 16.0
"""...up to this."""
GUARD_PROBE_MIN_HOLD_S = 2.0
"""A request is sent past the guard only when the guard would hold it longer than this: admitted
just before the window frees, it would prove nothing."""
EXTRA_WEIGHT = 0.05
"""Weight of one settlement in the running mean of settlement minus reservation (the first ones
make a plain mean, so the first answers teach it at once)."""
MIN_REQUESTS_PER_S = 0.5
"""Floor of the rate, in requests (of the largest size seen) per second."""
SLOT_S = 0.1

Phase = Literal["startup", "steady"]


@dataclass(eq=False, slots=True)
class _Ledger:
    """Quota tokens the service took, summed per 0.1 s slot over the last minute.

    A reservation counts when admitted (a throttle takes it back: the service booked nothing) and a
    settlement its difference when it lands. One entry per request would hold ~90,000 a minute.
    """

    slots: deque[list[float]] = field(default_factory=deque)

    def add(self, tokens: float, now: float) -> None:
        slots = self.slots
        if slots and now < slots[-1][0] + SLOT_S:
            slots[-1][1] += tokens
        else:
            slots.append([now, tokens])
            while slots[0][0] < now - WINDOW_S:
                slots.popleft()

    def since(self, start: float) -> float:
        """Tokens taken from ``start`` on (a slot counts when it began at or after ``start``)."""
        total = 0.0
        for begun, tokens in reversed(self.slots):
            if begun < start:
                break
            total += tokens
        return total


class QuotaFigures(NamedTuple):
    """A snapshot of one route's quota model, for progress and logs."""

    rate_tpm: float | None
    """The rate admissions are paced at, in tokens per minute (``None``: not yet limited)."""
    settled_last_minute: float
    """Quota tokens the route's requests settled to over the last 60 s."""
    quota_share: float | None
    """``settled_last_minute`` over the quota the model paces at (``tpm``, or the measured rate)."""
    capacity_share: float
    """Share of requests refused whatever the quota (capacity 429s), as far as it was told apart."""
    guard: bool


@dataclass(eq=False, slots=True)
class Charge:
    """One admitted request's reservation, so the settlement can replace exactly it."""

    reserved: float
    window_charge: WindowCharge
    probe: bool
    startup: bool
    owed: float = 0.0
    """What the settlement is expected to add to the reservation, taken from the level already
    (so the settlement books only the surprise)."""


@dataclass(eq=False)
class RouteQuota:
    """The quota model and pacer of one route (mutable; owned by one event loop)."""

    ceiling: float
    """Rate never exceeded, tokens per second: ``tpm / 60 x headroom`` when ``tpm`` is given."""
    known: bool
    headroom: float = 1.0
    rate: float = math.inf
    """Pacing rate, quota tokens per second (``inf``: unpaced, no quota seen yet)."""
    burst: float = math.inf
    level: float = math.inf
    """Tokens the model believes the service would admit now (negative while settlements are owed)."""
    phase: Phase = "startup"
    discovering: bool = False
    guard: bool = True
    capacity_share: float = 0.0
    window: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf, headroom=1.0))
    """The route's own charges of the last 60 s (reserved, then settled): the window guard."""
    settled: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf, headroom=1.0))
    _stamp: float = 0.0
    _startup_from: float = 0.0
    _startup_released: float = 0.0
    _wave: int = 0
    """The startup wave (one per doubling) whose admissions and throttles are counted."""
    _wave_admitted: int = 0
    _wave_throttled: int = 0
    _guard_probe_at: float = -math.inf
    _guard_probe_wait: float = GUARD_PROBE_S
    _probe_in_flight: bool = False
    _taken: _Ledger = field(default_factory=_Ledger)
    _in_flight: set[Charge] = field(default_factory=set)
    _extra: float = 0.0
    """Running mean of what a settlement adds to its reservation (output burndown over max_tokens)."""
    _settled_n: int = 0
    _floor: float = 1.0
    _admitted: deque[float] = field(default_factory=deque)
    """Times of the last admissions (a second's worth at most, for the share of unpaced throttles)."""
    _unpaced: deque[float] = field(default_factory=deque)
    _throttles: deque[float] = field(default_factory=deque)
    """Times of the recent throttles that may start a sample."""
    _cut: tuple[float, float] | None = None
    """(rate before, share of it the quota took) of the last cut, until the next sample says
    whether it was capacity 429s."""
    _last_sample_rate: float | None = None
    """The last rate measured between two throttles (quota tokens per second), for logs and tests."""
    _grown_at: float = 0.0
    _probe_at: float = 0.0
    _probe_step: float = PROBE_FIRST_STEP

    @classmethod
    def create(cls, *, tpm: float, headroom: float, now: float) -> RouteQuota:
        """A route's model: ``tpm`` > 0 is the user's quota (a ceiling), 0 is unknown."""
        if tpm > 0:
            rate = tpm / WINDOW_S * headroom
            q = cls(ceiling=rate, known=True, headroom=headroom, rate=rate, burst=rate * WINDOW_S)
            q.level = q.burst
        else:
            q = cls(ceiling=math.inf, known=False, headroom=headroom)
        q._stamp = q._startup_from = q._grown_at = now
        q._probe_at = now + PROBE_HOLD_S
        return q

    # -- admission ---------------------------------------------------------------------------------

    def delay(self, tokens: float, now: float) -> float:
        """0 when a request reserving ``tokens`` may start now, else the seconds to wait."""
        self._refill(now)
        if self.phase == "startup" and (
            self._startup_released >= self.burst or now - self._startup_from > STARTUP_MAX_S
        ):
            self.phase = "steady"  # the burst went out without a storm: pacing alone from here
        wait = 0.0
        if self.phase == "startup":
            released = (self._startup_released + tokens) / (STARTUP_FIRST_WAVE * tokens)
            if released > 1.0:
                wait = self._startup_from + STARTUP_DOUBLING_S * math.log2(released) - now
        need = min(tokens, self.burst)
        if self.level < need:
            wait = max(wait, (need - self.level) / self.rate)
            self._grow(now)  # the rate holds requests back: time to probe it upward, if due
        if self.guard and math.isfinite(self.rate):
            self.window.tpm = self.guard_quota
            held = self.window.wait_time(tokens, now)
            if held > 0.0:
                if wait <= 0.0 and held > GUARD_PROBE_MIN_HOLD_S and self._guard_probe_due(now):
                    return 0.0
                wait = max(wait, min(held, max(self._guard_probe_at - now, 1e-3)))
        return max(wait, 1e-3) if wait > 0.0 else 0.0

    def admit(self, tokens: float, now: float) -> Charge:
        """Book an admission that :meth:`delay` allowed."""
        self._refill(now)
        probe = False
        if self.guard and math.isfinite(self.rate):
            self.window.tpm = self.guard_quota
            if self.window.wait_time(tokens, now) > GUARD_PROBE_MIN_HOLD_S:
                probe = self._probe_in_flight = True
        # Book what the request is expected to cost in the end, not only its reservation: the
        # service charges the rest when the answer ends, and an answer read late (a busy client)
        # must not look like quota still free.
        owed = max(self._extra, 0.0)
        self.level -= tokens + owed
        self._floor = max(self._floor, tokens * MIN_REQUESTS_PER_S)
        self._taken.add(tokens, now)
        self._admitted.append(now)
        if len(self._admitted) > ADMITTED_KEPT:
            self._admitted.popleft()
        startup = self.phase == "startup"
        if startup:
            self._startup_released += tokens
            wave = int((now - self._startup_from) / STARTUP_DOUBLING_S)
            if wave != self._wave:
                self._wave, self._wave_admitted, self._wave_throttled = wave, 0, 0
            self._wave_admitted += 1
        charge = Charge(tokens, self.window.reserve(tokens, now), probe, startup, owed)
        self._in_flight.add(charge)
        return charge

    def settle(self, charge: Charge, tokens: float, now: float, booked_at: float | None = None) -> None:
        """The request ran: book its real charge (cache reads free, output burnt down)."""
        self._refill(now)
        self._in_flight.discard(charge)
        extra = tokens - charge.reserved
        self.level -= extra - charge.owed
        self._settled_n += 1
        self._extra += max(EXTRA_WEIGHT, 1.0 / self._settled_n) * (extra - self._extra)
        self.window.settle(charge.window_charge, tokens, booked_at)
        self.settled.add(tokens, now)
        self._taken.add(extra, now)
        if charge.probe:
            # Admitted past the window guard: the quota refills continuously, not minute by minute.
            self.guard = False
            self._probe_in_flight = False

    def throttled(self, charge: Charge, now: float) -> None:
        """The service refused the request: it booked nothing, and the quota is empty now."""
        self._refill(now)
        self._in_flight.discard(charge)
        self._taken.add(-charge.reserved, now)
        self.window.settle(charge.window_charge, 0.0)
        if charge.probe:  # a refused probe tells the shape, not the rate
            self._probe_in_flight = False
            self._guard_probe_wait = min(self._guard_probe_wait * 2, GUARD_PROBE_MAX_S)
            self._guard_probe_at = now + self._guard_probe_wait
            return
        if self.phase == "startup":
            self._wave_throttled += 1
            if (
                self._wave_throttled >= STARTUP_EXIT_THROTTLES
                and self._wave_throttled >= STARTUP_EXIT_SHARE * self._wave_admitted
            ):
                self._drained(now)
            return
        # Paced to the end of its allowance, a throttle measures the rate; with room left in the
        # model it says the quota was taken by someone else, or refused for capacity: the level
        # empties (and the next throttle, paced, will measure), the rate stays.
        paced = self.level <= PACED_SLACK * charge.reserved
        if not math.isfinite(self.rate):
            # An unpaced route: one throttle is no quota (capacity 429s come alone). A run of them
            # is a burst into a quota that filled: pace at half what it took lately, and let the
            # next samples say more (or undo it, if they fall with the rate: capacity after all).
            refused = self._refused(now)
            if refused:
                span = min(now - self._startup_from, MAX_SAMPLE_S)
                taken = self._taken.since(now - span) / max(span, MIN_SAMPLE_S)
                self._set_rate(taken / 2.0)
                self._cut = (math.inf, 1.0 - refused)
                self._throttles.append(now)
                self._hold(now)
                self._empty()
            return
        self._sample(now, paced=paced)
        if paced or self._refused(now) > 0.0:
            self._empty()

    def cancelled(self, charge: Charge, now: float) -> None:
        """Admitted but never sent: give the reservation back."""
        self._refill(now)
        self._in_flight.discard(charge)
        self._taken.add(-charge.reserved, now)
        if math.isfinite(self.level):
            self.level = min(self.burst, self.level + charge.reserved + charge.owed)
        self.window.settle(charge.window_charge, 0.0)
        if charge.startup:
            self._startup_released -= charge.reserved
        if charge.probe:
            self._probe_in_flight = False

    def failed(self, charge: Charge) -> None:
        """Sent, no answer (5xx, timeout): the service may have booked the reservation; keep it."""
        self._in_flight.discard(charge)
        self.level += charge.owed
        if charge.probe:
            self._probe_in_flight = False

    @property
    def guard_quota(self) -> float:
        """What the route's own charges of the last 60 s may add up to while the guard holds: the
        whole quota (no headroom), so that a request past it that is admitted proves that the quota
        is not a 60 s window of that size."""
        return self.rate * WINDOW_S / self.headroom

    # -- figures -----------------------------------------------------------------------------------

    def figures(self, now: float) -> QuotaFigures:
        settled = self.settled.used(now)
        rate = self.rate if math.isfinite(self.rate) else None
        return QuotaFigures(
            rate_tpm=rate * WINDOW_S if rate is not None else None,
            settled_last_minute=settled,
            quota_share=settled / (rate * WINDOW_S) if rate else None,
            capacity_share=self.capacity_share,
            guard=self.guard,
        )

    # -- internals ---------------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            if math.isfinite(self.rate) and self.level < self.burst:
                self.level = min(self.burst, self.level + (now - self._stamp) * self.rate)
            self._stamp = now

    def _set_rate(self, rate: float) -> None:
        if not math.isfinite(self.rate):
            self.level = 0.0  # from unpaced to paced: the quota has just been found full
        self.rate = max(self._floor, min(rate, self.ceiling))
        self.burst = self.rate * WINDOW_S
        self.level = min(self.level, self.burst) if math.isfinite(self.level) else 0.0

    def _empty(self) -> None:
        """The quota is empty now, and what the requests in flight will settle to is owed already."""
        self.level = min(self.level, 0.0)
        expected = max(self._extra, 0.0)
        if expected:
            for other in self._in_flight:
                if not other.owed:
                    other.owed = expected
                    self.level -= expected

    def _refused(self, now: float) -> float:
        """The share of the last second's admissions refused, when the throttles that came with room
        left in the model are too many for capacity 429s (:data:`UNPACED_THROTTLES` within a second,
        and :data:`UNPACED_SHARE` of its admissions above the capacity share); else 0."""
        times = self._unpaced
        times.append(now)
        while times[0] < now - 1.0:
            times.popleft()
        admitted = self._admitted
        while admitted and admitted[0] < now - 1.0:
            admitted.popleft()
        share = len(times) / max(len(admitted), 1)
        if len(times) >= UNPACED_THROTTLES and share >= UNPACED_SHARE + self.capacity_share:
            return min(share, 1.0)
        return 0.0

    def _hold(self, now: float) -> None:
        """A sample was taken: no probing upward for a while, and the next probe a small one."""
        self.discovering = False
        self._probe_at = now + PROBE_HOLD_S
        self._probe_step = PROBE_FIRST_STEP

    def _drained(self, now: float) -> None:
        """A startup wave was mostly refused: the quota is not full (drained, or shared)."""
        self.phase = "steady"
        if not self.known:
            # Half the rate of the wave that overshot, and discovery from there.
            span = max(now - self._startup_from, STARTUP_DOUBLING_S)
            self._set_rate(self._startup_released / span / 2.0)
            self.discovering = True
            self._grown_at = now
        self._throttles.append(now)
        self._empty()

    def _sample(self, now: float, *, paced: bool) -> None:
        """A throttle: measure what the quota took since an earlier one, and act on it."""
        throttles = self._throttles
        while throttles and throttles[0] < now - MAX_SAMPLE_S:
            throttles.popleft()
        start = None
        for t in throttles:  # the latest throttle at least MIN_SAMPLE_S ago
            if t > now - MIN_SAMPLE_S:
                break
            start = t
        throttles.append(now)
        if start is None:
            if self.discovering:
                self._set_rate(self.rate * 0.75)  # the last doubling overshot: between r/2 and r
                self._hold(now)
            return
        if not paced:
            return
        sample = self._taken.since(start) / (now - start)
        self._last_sample_rate = sample
        sent = self.rate * (1.0 - self.capacity_share)
        accepted = sample / self.rate
        cut = self._cut
        if cut is not None:
            self._cut = None
            before, accepted_before = cut
            if accepted_before >= CAPACITY_MIN_ACCEPTED and accepted <= accepted_before + CAPACITY_SAME:
                # Cut, the quota still refused the same share: those were capacity 429s, not it.
                self.capacity_share = max(self.capacity_share, min(0.9, 1.0 - accepted))
                if math.isfinite(before):
                    self._set_rate(before)
                else:
                    self.rate = self.burst = self.level = math.inf
                self._hold(now)
                return
        if sample < OVER_SENDING * sent:
            before = self.rate
            self._set_rate(sample * PACE_MARGIN)
            self._cut = (before, accepted)
            self._hold(now)
        elif self.discovering:
            self._hold(now)  # the quota took all that was sent: a capacity 429, or the rate is right

    def _grow(self, now: float) -> None:
        """The rate holds requests back: discovery doubles it each second; later, probe on a clock."""
        if not math.isfinite(self.rate) or self.rate >= self.ceiling:
            return
        if self.discovering:
            if now >= self._grown_at + DISCOVERY_S:
                self._set_rate(self.rate * 2.0)
                self._grown_at = now
        elif now >= self._probe_at:
            self._set_rate(self.rate * (1.0 + self._probe_step))
            self._probe_step = min(self._probe_step * 2.0, PROBE_MAX_STEP)
            self._probe_at = now + PROBE_EVERY_S
            self._cut = None

    def _guard_probe_due(self, now: float) -> bool:
        return not self._probe_in_flight and now >= self._guard_probe_at
