"""One route's tokens-per-minute quota, as the client can know it: pure maths over a clock.

Bedrock books a request against the quota of its route by *reserving* ``input + cache_write +
max_tokens`` when it arrives and *settling* to ``input + cache_write + output x burndown`` when it
ends. How the quota refills is not documented: a rolling 60 s window and a token bucket refilled
continuously are both plausible, the quota may be half drained when a job starts (a crashed run,
another job on the account), another consumer may share it, it may be raised or cut mid-run, and
Bedrock also answers 429 for capacity, whatever the quota. :class:`RouteQuota` assumes none of
these, and holds on all of them:

* **A paced bucket.** Admissions draw from a client-side bucket refilled at ``rate`` (quota tokens
  per second) up to ``burst``; each admission takes its reservation and the settlement books the
  difference, exactly as the service does, so what the bucket believes and what the service
  charges cannot drift apart (and ``quota_share`` means what it says).
* **Startup.** The first admissions are released in waves that double every
  :data:`STARTUP_DOUBLING_S` while nothing throttles: a full quota is used within a second or
  two, a drained one costs the first small wave in throttles, not a storm. With the quota unknown
  the rate itself starts small and doubles the same way.
* **The rate follows delivery.** Every evaluation interval (a clock, not wake-ups) compares the
  share of requests throttled with its baseline. Clearly more throttles: the quota admits about
  ``rate x (1 - excess)``, and the rate is set there. Not more, and requests waited for the rate:
  the rate grows (fast far below the last rate that throttled, slowly near it). A cut that does
  not lower the throttle share was capacity throttling, not the quota: it is undone and the
  share becomes the baseline. One throttle alone never sets the quota.
* **The window guard.** A bucket lets a job spend ``burst`` at once *and* refill at ``rate``
  during the same minute; a rolling window does not. Until the route shows otherwise, the
  client's own charges of the last 60 s stay within ``60 x rate`` (exact for a window, and safe
  for a bucket). When the guard alone holds requests back, one request is sent past it now and
  then: admitted, the quota refills continuously and the guard is lifted for good.

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
"""A startup wave with at least 3 throttles, and at least this share of its outcomes, says the quota
is not full: startup ends. Capacity throttles, a few per cent, do not end it."""
EVAL_S = 1.0
"""Evaluation interval of the rate: at least this long..."""
EVAL_MIN_OUTCOMES = 8
"""...and at least this many outcomes (or :data:`EVAL_MAX_S`), so one 429 among three is no share."""
EVAL_MAX_S = 4.0
CUT_MARGIN = 0.04
"""Throttle share above the baseline that is evidence of the quota (a cut)."""
GROW_MARGIN = 0.01
"""Throttle share above the baseline below which the rate may grow."""
PACE_MARGIN = 0.97
"""A cut sets the rate a little under what the quota delivered, so a drained bucket refills."""
MAX_CUT = 0.5
"""A cut at most halves the rate: a share measured while a quota was briefly empty is no rate."""
GROWTH_FAR = 1.25
"""Growth per second while far below the last rate that throttled..."""
GROWTH_NEAR = 1.01
"""...and near it (per second): the quota is probed upward on a clock, gently where it was last found."""
NEAR = 0.9
CAPACITY_RATIO = 0.75
"""A cut after which the throttle share stayed above this share of what it was did not help:
the throttles do not depend on load (capacity 429s). The cut is undone..."""
CAPACITY_MAX_SHARE = 0.6
"""...unless most requests are refused: a quota still in debt, not capacity, refuses nearly all."""
CAPACITY_JUDGE_S = 5.0
"""...judged on the first interval that starts this long after the cut, once the settlements of
the requests admitted before it have landed (a bucket pays them after the answer)."""
GUARD_PROBE_S = 2.0
"""When the guard first holds requests back, one is sent past it at once; after each refusal the
next waits this long, doubling..."""
GUARD_PROBE_MAX_S = 16.0
"""...up to this."""
GUARD_PROBE_MIN_HOLD_S = 2.0
"""A request is sent past the guard only when the guard would hold it longer than this: admitted
just before the window frees, it would prove nothing."""
MIN_RATE = 1.0
"""Floor of the rate (quota tokens per second), so a route whose quota vanished still probes."""

Phase = Literal["startup", "steady"]


class QuotaFigures(NamedTuple):
    """A snapshot of one route's quota model, for progress and logs."""

    rate_tpm: float | None
    """The rate admissions are paced at, in tokens per minute (``None``: not yet limited)."""
    settled_last_minute: float
    """Quota tokens the route's requests settled to over the last 60 s."""
    quota_share: float | None
    """``settled_last_minute`` over the quota the model holds (the given ``tpm`` or the learned rate)."""
    baseline_throttle_share: float
    guard: bool


@dataclass(eq=False, slots=True)
class Charge:
    """One admitted request's reservation, so the settlement can replace exactly it."""

    reserved: float
    window_charge: WindowCharge
    probe: bool
    startup: bool


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
    """Tokens the client believes the service would admit now (negative after large settlements)."""
    phase: Phase = "startup"
    guard: bool = True
    baseline: float = 0.0
    """Throttle share that does not depend on load (capacity 429s), learned from cuts that did not help."""
    window: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf, headroom=1.0))
    """The route's own charges of the last 60 s (reserved, then settled): the window guard."""
    settled: TokenWindow = field(default_factory=lambda: TokenWindow(tpm=math.inf, headroom=1.0))
    _stamp: float = 0.0
    _startup_from: float = 0.0
    _startup_released: float = 0.0
    _wave_ok: int = 0
    _wave_throttled: int = 0
    _guard_probe_at: float = -math.inf
    _guard_probe_wait: float = GUARD_PROBE_S
    _probe_in_flight: bool = False
    _last_cut_rate: float = math.inf
    _cut: tuple[float, float, float] | None = None
    """(when, rate before, share that caused it) of the last cut, to tell capacity throttles."""
    _eval_from: float = 0.0
    _eval_admitted: int = 0
    """Requests admitted this interval: a throttle answers in milliseconds and a success only when
    its generation ends, so a share of *answers* would count throttles seconds before successes."""
    _eval_throttled: int = 0
    _eval_waited: bool = False
    _delivered: deque[tuple[float, float]] = field(default_factory=deque)
    """(time, tokens) of admissions the service accepted, for the delivered rate."""

    @classmethod
    def create(cls, *, tpm: float, headroom: float, now: float) -> RouteQuota:
        """A route's model: ``tpm`` > 0 is the user's quota (a ceiling), 0 is unknown."""
        if tpm > 0:
            rate = tpm / WINDOW_S * headroom
            q = cls(
                ceiling=rate,
                known=True,
                headroom=headroom,
                rate=rate,
                burst=tpm * headroom,
                level=tpm * headroom,
            )
        else:
            q = cls(ceiling=math.inf, known=False, headroom=headroom)
        q._stamp = q._startup_from = q._eval_from = now
        return q

    # -- admission ---------------------------------------------------------------------------------

    def delay(self, tokens: float, now: float) -> float:
        """0 when a request reserving ``tokens`` may start now, else the seconds to wait."""
        self._refill(now)
        self._evaluate(now)
        wait = 0.0
        if self.phase == "startup":
            released = (self._startup_released + tokens) / (STARTUP_FIRST_WAVE * tokens)
            if released > 1.0:
                due = self._startup_from + STARTUP_DOUBLING_S * math.log2(released)
                wait = max(wait, due - now)
        need = min(tokens, self.burst)
        if self.level < need:
            wait = max(wait, (need - self.level) / self.rate)
        if self.guard and math.isfinite(self.rate):
            self.window.tpm = self.guard_quota
            held = self.window.wait_time(tokens, now)
            if held > 0.0:
                if wait <= 0.0 and held > GUARD_PROBE_MIN_HOLD_S and self._guard_probe_due(now):
                    return 0.0
                wait = max(wait, min(held, max(self._guard_probe_at - now, 1e-3)))
        if wait <= 0.0:
            return 0.0
        self._eval_waited = True
        return max(wait, 1e-3)

    def admit(self, tokens: float, now: float) -> Charge:
        """Book an admission that :meth:`delay` allowed."""
        self._refill(now)
        probe = False
        if self.guard and math.isfinite(self.rate):
            self.window.tpm = self.guard_quota
            if self.window.wait_time(tokens, now) > GUARD_PROBE_MIN_HOLD_S:
                probe = self._probe_in_flight = True
        self.level -= tokens
        self._eval_admitted += not probe
        startup = self.phase == "startup"
        if startup:
            self._startup_released += tokens
        return Charge(tokens, self.window.reserve(tokens, now), probe, startup)

    def settle(self, charge: Charge, tokens: float, now: float, booked_at: float | None = None) -> None:
        """The request ran: book its real charge (cache reads free, output burnt down)."""
        self._refill(now)
        self.level -= tokens - charge.reserved
        self.window.settle(charge.window_charge, tokens, booked_at)
        self.settled.add(tokens, now)
        self._delivered.append((now, tokens))
        if charge.startup:
            self._wave_ok += 1
        if charge.probe:
            # Admitted past the window guard: the quota refills continuously, not minute by minute.
            self.guard = False
            self._probe_in_flight = False
        self._evaluate(now)

    def throttled(self, charge: Charge, now: float) -> None:
        """The service refused the request: it booked nothing, and its level is under one request."""
        self._refill(now)
        if self.phase == "steady" and not math.isfinite(self.rate):
            # The first throttle of an unpaced route: pace at what the service delivered so far
            # (a throttle storm waits for no evaluation interval); the intervals correct it.
            delivered = self._delivered_rate(now, since=now - 2 * EVAL_MAX_S)
            if delivered > 0.0:
                self._set_rate(delivered, now)
        if math.isfinite(self.level):
            self.level = min(self.level + charge.reserved, 0.0)
        self.window.settle(charge.window_charge, 0.0)
        self._eval_throttled += not charge.probe  # a refused probe tells the shape, not the rate
        if charge.probe:
            self._probe_in_flight = False
            self._guard_probe_wait = min(self._guard_probe_wait * 2, GUARD_PROBE_MAX_S)
            self._guard_probe_at = now + self._guard_probe_wait
        if charge.startup and self.phase == "startup":
            self._wave_throttled += 1
            n = self._wave_throttled + self._wave_ok
            if (
                self._wave_throttled >= STARTUP_EXIT_THROTTLES
                and self._wave_throttled >= STARTUP_EXIT_SHARE * n
            ):
                self._drained(now)
        self._evaluate(now)

    def cancelled(self, charge: Charge, now: float) -> None:
        """Admitted but never sent: give the reservation back."""
        self._refill(now)
        if math.isfinite(self.level):
            self.level = min(self.burst, self.level + charge.reserved)
        self.window.settle(charge.window_charge, 0.0)
        if charge.startup:
            self._startup_released -= charge.reserved
        if charge.probe:
            self._probe_in_flight = False

    def failed(self, charge: Charge) -> None:
        """Sent, no answer (5xx, timeout): the service may have booked the reservation; keep it."""
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
            baseline_throttle_share=self.baseline,
            guard=self.guard,
        )

    # -- internals ---------------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            if math.isfinite(self.rate) and self.level < self.burst:
                self.level = min(self.burst, self.level + (now - self._stamp) * self.rate)
            self._stamp = now

    def _drained(self, now: float) -> None:
        """A startup wave was mostly refused: the quota is not full (drained, or shared)."""
        self.phase = "steady"
        if not self.known:
            # The wave that overshot was released at twice the rate of the one before it.
            span = max(now - self._startup_from, STARTUP_DOUBLING_S)
            self._set_rate(self._startup_released / span / 2.0, now)
        self.level = 0.0
        self._restart_interval(now)

    def _delivered_rate(self, now: float, since: float) -> float:
        """Quota tokens per second the service accepted since ``since`` (the last 60 s at most)."""
        horizon = max(since, now - WINDOW_S)
        while self._delivered and self._delivered[0][0] < now - WINDOW_S:
            self._delivered.popleft()
        tokens = sum(t for at, t in self._delivered if at >= horizon)
        return tokens / max(now - horizon, EVAL_S)

    def _set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = max(MIN_RATE, min(rate, self.ceiling))
        self.burst = self.rate * WINDOW_S
        self.level = min(self.level, self.burst) if math.isfinite(self.level) else 0.0

    def _guard_probe_due(self, now: float) -> bool:
        return not self._probe_in_flight and now >= self._guard_probe_at

    def _restart_interval(self, now: float) -> None:
        self._eval_from = now
        self._eval_admitted = self._eval_throttled = 0
        self._eval_waited = False

    def _evaluate(self, now: float) -> None:
        """Once per interval: cut, undo a cut, hold or grow the rate from the throttle share."""
        if self.phase == "startup" and (
            self._startup_released >= self.burst or now - self._startup_from > STARTUP_MAX_S
        ):
            self.phase = "steady"  # the whole burst went out without a storm: pacing alone from here
        span = now - self._eval_from
        n = max(self._eval_admitted, self._eval_throttled)
        if span < EVAL_S or (n < EVAL_MIN_OUTCOMES and span < EVAL_MAX_S):
            return
        share = self._eval_throttled / n if n else 0.0
        excess = share - self.baseline
        cut = self._cut
        if cut is not None and self._eval_from >= cut[0] + CAPACITY_JUDGE_S:
            self._cut = None
            if n >= EVAL_MIN_OUTCOMES and CAPACITY_RATIO * cut[2] <= share <= CAPACITY_MAX_SHARE:
                # Cutting did not lower the share: those throttles do not depend on our load.
                self.baseline = max(self.baseline, share)
                self._set_rate(cut[1], now)
                self._restart_interval(now)
                return
        if excess > CUT_MARGIN and n:
            before = self.rate
            if math.isfinite(before):
                target = before * max(1.0 - excess, MAX_CUT)
            else:
                # No rate yet: what the service accepted lately is the first estimate.
                target = before = self._delivered_rate(now, since=now - 2 * EVAL_MAX_S)
            if self._cut is None:
                self._cut = (now, before, share)
            self._last_cut_rate = before
            self._set_rate(max(target, MIN_RATE) * PACE_MARGIN, now)
            self.level = min(self.level, 0.0)
            self.phase = "steady"
        elif (
            excess <= GROW_MARGIN
            and self._eval_waited
            and math.isfinite(self.rate)
            and (self._cut is None or now >= self._cut[0] + CAPACITY_JUDGE_S)
        ):
            near = self.rate >= NEAR * self._last_cut_rate
            growth = (GROWTH_NEAR if near else GROWTH_FAR) ** (span / EVAL_S)
            # Never far past what the service is seen to deliver: settlements lag by a request's
            # latency, and a rate that grows faster than they show overshoots into a debt.
            delivered = self._delivered_rate(now, since=now - 2 * EVAL_MAX_S)
            self._set_rate(max(self.rate, min(self.rate * growth, GROWTH_FAR * delivered)), now)
            if self.rate > self._last_cut_rate:
                self._last_cut_rate = math.inf  # past the rate that throttled: the quota was raised
        if self.baseline and share < self.baseline:
            self.baseline = 0.8 * self.baseline + 0.2 * share
        self._restart_interval(now)
