"""Admission: when a request may start, and on which route. A small async gate over pure models.

Each route's tokens-per-minute quota is modelled by a :class:`~runner.quota.RouteQuota` (pacing,
startup, the window guard, learning the rate from throttles). This module adds what is job-wide:
``max_in_flight``, one FIFO queue of waiting requests, and the choice of route. A waiter names the
routes it may take in its order of preference; it starts on the first that admits it now, so a
route held back by its quota spills rows to the next instead of leaving it idle, and the head of
the queue waits only as long as the soonest route needs.

``adaptive = False`` is the plain fixed pool (no quota model): only ``max_in_flight`` holds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import anyio
import structlog

from runner.quota import Charge, RouteQuota
from runner.types import Route, Usage
from runner.window import WINDOW_S

log = structlog.get_logger("runner.quota")

SPILL_AFTER_S = 1.0
"""A request spills to the next route only when its preferred route would hold it longer than this."""

Outcome = Literal["ok", "throttled", "failed", "cancelled"]


def _notifier(route: str) -> Callable[[str, dict[str, Any]], None]:
    """Log a route's quota decisions (a rate measured, cut, undone, probed; a drained start) as events."""

    def notify(event: str, fields: dict[str, Any]) -> None:
        (log.debug if fields.get("why") in ("probe", "discovery") else log.info)(event, route=route, **fields)

    return notify


class RouteFigures(NamedTuple):
    """A snapshot of one route's admission state, for the progress display and logs."""

    in_flight: int
    quota_tpm: float | None
    """The rate admissions are paced at, tokens per minute (``None``: not limited yet)."""
    tokens_last_minute: float
    quota_share: float | None
    throttles_last_minute: int
    capacity_share: float = 0.0
    """Share of requests the route's model takes for capacity 429s (refused whatever the quota)."""


class RouteUse(NamedTuple):
    """One route's use of its quota over the whole run, for the advice at the job's end
    (:func:`runner.advice.quota_advice`)."""

    requests: int
    """Requests sent and answered (an answer, a throttle or another error)..."""
    throttled: int
    """...and of them, those Bedrock throttled."""
    answered: int
    reserved: float
    """Quota tokens Bedrock reserved for the ``answered`` requests while they ran (its own count of
    the input, plus ``max_tokens``)..."""
    settled: float
    """...and what they settled to."""
    tpm: int
    """The quota given for the route (0: learned from throttles)."""
    adaptive: bool


@dataclass(frozen=True, slots=True)
class Permit:
    """The right to send one request on ``route``; hand it back with :meth:`Admission.release`."""

    route: Route
    reserved: float
    charge: Charge | None


@dataclass(eq=False, slots=True)
class _Waiter:
    """A request waiting for admission; :meth:`Admission._grant` sets ``permit``, then ``event``."""

    routes: Sequence[Route]
    tokens: float
    event: anyio.Event = field(default_factory=anyio.Event)
    permit: Permit | None = None


@dataclass(eq=False)
class _RouteState:
    quota: RouteQuota | None
    tpm: int = 0
    in_flight: int = 0
    throttles: deque[float] = field(default_factory=deque)
    requests: int = 0
    throttled: int = 0
    answered: int = 0
    reserved: float = 0.0
    settled: float = 0.0


class Admission:
    """Admission of requests onto routes: job-wide ``max_in_flight``, a quota model per route."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        max_in_flight: int,
        tpm: int | Mapping[Route, int] = 0,
        adaptive: bool = True,
        output_burndown: float = 1.0,
        headroom: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.adaptive = adaptive
        self.output_burndown = output_burndown
        self._clock = clock
        self._in_flight = 0
        now = clock()
        quotas = tpm if isinstance(tpm, Mapping) else dict.fromkeys(routes, tpm)
        self._routes: dict[Route, _RouteState] = {
            r: _RouteState(
                quota=RouteQuota.create(
                    tpm=quotas.get(r, 0), now=now, headroom=headroom, notify=_notifier(r.name)
                )
                if (adaptive or quotas.get(r, 0))
                else None,
                tpm=quotas.get(r, 0),
            )
            for r in routes
        }
        self._waiters: deque[_Waiter] = deque()
        self._turn = 0
        """Rotates the start of each tier's search, so a tier's routes share the rows evenly."""

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

    @staticmethod
    def reservation_of(usage: Usage, max_tokens: int) -> float:
        """Quota tokens the service reserved for a request while it ran, by its own count of the
        input: input, cache writes and ``max_tokens`` (the admission booked the runner's estimate).
        """
        return usage.input_tokens + usage.cache_creation_input_tokens + max_tokens

    def _delay(self, route: Route, tokens: float, now: float) -> float:
        """0 when a request may start on ``route`` now; else seconds to wait (``inf``: a release)."""
        if self._in_flight >= self.max_in_flight:
            return math.inf
        quota = self._routes[route].quota
        return 0.0 if quota is None else quota.delay(tokens, now)

    def _place(self, routes: Sequence[Route], tokens: float, now: float) -> tuple[Route | None, float]:
        """The route of ``routes`` that admits now, else (None, the soonest wait).

        Consecutive routes of one geography are a tier (one profile called from several source
        regions, each its own quota): a request takes any route of the first tier that admits it,
        the search starting at a rotating place so the tier's quotas share the rows. A tier whose
        routes all admit within :data:`SPILL_AFTER_S` is waited for: the order of tiers is also an
        order of price (``global.`` costs less than a regional profile), so rows move on only when
        a tier is held back for real, not for a startup wave or a paced gap.
        """
        soonest = math.inf
        start = 0
        while start < len(routes):
            end = start + 1
            while end < len(routes) and routes[end].geography == routes[start].geography:
                end += 1
            tier = routes[start:end]
            self._turn += 1
            tier_wait = math.inf
            for i in range(len(tier)):
                route = tier[(i + self._turn) % len(tier)]
                wait = self._delay(route, tokens, now)
                if wait == 0.0:
                    return route, 0.0
                tier_wait = min(tier_wait, wait)
            if tier_wait <= SPILL_AFTER_S:
                return None, tier_wait
            soonest = min(soonest, tier_wait)
            start = end
        return None, soonest

    async def acquire(self, routes: Sequence[Route], tokens: float) -> Permit:
        """Wait until a request reserving ``tokens`` may start on one of ``routes`` (FIFO among waiters).

        Waiters are admitted by whatever frees room (:meth:`release`, the head's quota timer) as many
        at once as fit: handing over one waiter per wake-up admitted one request per event-loop
        iteration, which kept ~4 of 128 requests in flight at zero latency.
        """
        if not routes:
            raise ValueError("acquire needs at least one route")
        if not self._waiters:
            route, _ = self._place(routes, tokens, self._clock())
            if route is not None:
                return self._admit(route, tokens)
        waiter = _Waiter(routes, tokens)
        self._waiters.append(waiter)
        try:
            while waiter.permit is None:
                wait = math.inf
                if self._waiters[0] is waiter:
                    # The head waits for a release, or for the soonest route's quota.
                    route, wait = self._place(routes, tokens, self._clock())
                    if route is not None:
                        self._grant()
                        continue
                with anyio.move_on_after(None if math.isinf(wait) else wait):
                    await waiter.event.wait()
                if waiter.permit is None and waiter.event.is_set():
                    waiter.event = anyio.Event()  # woken to re-time its wait as the new head
            return waiter.permit
        except BaseException:
            if waiter.permit is not None:
                self._revoke(waiter.permit)  # admitted, but cancelled before it could be sent
            elif waiter in self._waiters:
                head = self._waiters[0] is waiter
                self._waiters.remove(waiter)
                if head:
                    self._grant()
            raise

    def _grant(self) -> None:
        """Admit waiters from the head of the queue while they fit; wake a head that must wait for a
        quota so it sets its own timer (a head held by ``max_in_flight`` waits for a release)."""
        now = self._clock()
        while self._waiters:
            head = self._waiters[0]
            route, wait = self._place(head.routes, head.tokens, now)
            if route is None:
                if not math.isinf(wait):
                    head.event.set()
                return
            self._waiters.popleft()
            head.permit = self._admit(route, head.tokens)
            head.event.set()

    def _admit(self, route: Route, tokens: float) -> Permit:
        self._in_flight += 1
        state = self._routes[route]
        state.in_flight += 1
        charge = state.quota.admit(tokens, self._clock()) if state.quota is not None else None
        return Permit(route=route, reserved=tokens, charge=charge)

    def _revoke(self, permit: Permit) -> None:
        """Undo an admission whose request was never sent: no quota charge, room for the next."""
        state = self._routes[permit.route]
        self._in_flight -= 1
        state.in_flight -= 1
        if permit.charge is not None and state.quota is not None:
            state.quota.cancelled(permit.charge, self._clock())
        self._grant()

    def release(
        self,
        permit: Permit,
        outcome: Outcome,
        usage: Usage | None = None,
        *,
        server_s: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """End a request: book its quota charge and let the route's model learn from how it went.

        ``server_s``: the time the request spent at the service (its answer's invocation latency),
        which dates the quota charge from the request's arrival there. ``max_tokens``: the request's,
        which with the answer's usage gives its reservation in the service's count (the permit's is
        the runner's estimate of the input).
        """
        state = self._routes[permit.route]
        self._in_flight -= 1
        state.in_flight -= 1
        now = self._clock()
        quota, charge = state.quota, permit.charge
        if outcome != "cancelled":
            state.requests += 1
        if outcome == "throttled":
            state.throttles.append(now)
            state.throttled += 1
        reserved = settled = None
        if usage is not None:
            settled = self.charge_of(usage)
            if max_tokens is not None:
                reserved = self.reservation_of(usage, max_tokens)
                state.answered += 1
                state.reserved += reserved
                state.settled += settled
        if quota is not None and charge is not None:
            if outcome == "throttled":
                quota.throttled(charge, now)
            elif settled is not None:
                booked_at = now - server_s if server_s is not None else None
                quota.settle(
                    charge,
                    settled,
                    now,
                    booked_at,
                    server_s=server_s,
                    service_reserved=reserved,
                )
            elif outcome == "cancelled":
                quota.cancelled(charge, now)
            else:
                quota.failed(charge, now)
        self._grant()

    def figures(self) -> dict[str, RouteFigures]:
        """Live per-route figures: in flight, paced rate, tokens per minute, quota share, throttles."""
        now = self._clock()
        out: dict[str, RouteFigures] = {}
        for route, state in self._routes.items():
            while state.throttles and state.throttles[0] <= now - WINDOW_S:
                state.throttles.popleft()
            q = state.quota.figures(now) if state.quota is not None else None
            out[route.name] = RouteFigures(
                in_flight=state.in_flight,
                quota_tpm=q.rate_tpm if q is not None else None,
                tokens_last_minute=q.settled_last_minute if q is not None else 0.0,
                quota_share=q.quota_share if q is not None else None,
                throttles_last_minute=len(state.throttles),
                capacity_share=q.capacity_share if q is not None else 0.0,
            )
        return out

    def uses(self) -> dict[str, RouteUse]:
        """Each route's use of its quota over the run (what the advice at the job's end reads)."""
        return {
            route.name: RouteUse(
                requests=state.requests,
                throttled=state.throttled,
                answered=state.answered,
                reserved=state.reserved,
                settled=state.settled,
                tpm=state.tpm,
                adaptive=self.adaptive,
            )
            for route, state in self._routes.items()
        }
