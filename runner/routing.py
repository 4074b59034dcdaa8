"""Which route a request takes: the endpoint order, data residency, fallback and circuit breakers.

Pure policy over a clock, no I/O, so it is unit-tested directly. The attempt order is documented in
the README ("Routes and fallback"):

1. A row's first attempt goes to the first *usable* route in the spec's order (default: ``global``,
   then the home region's geography). A route is usable unless its breaker is open or it was removed.
2. After a retryable failure on route R, the next attempt starts from the route *after* R, so a
   failing endpoint does not get the same row straight back while another is healthy. (A quota's
   429 is not a failure here: the pool keeps the row's order and admission paces or spills it.)
3. A route answering AccessDenied or not-found is removed for the rest of the job; the row moves on
   at once, without backoff.
4. Breaker: opens after ``failure_threshold`` consecutive failures, or when at least half of the last
   ``window`` calls failed; after ``cooldown_s`` it lets one probe through (half-open); a success
   closes it, a failure re-opens it with a doubled cool-down (capped). Throttles are the quota
   talking, not ill health, and do not count (admission control handles them).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner import catalog
from runner.errors import SpecError
from runner.types import Route

if TYPE_CHECKING:
    from runner.spec import JobSpec


def job_routes(spec: JobSpec) -> list[Route]:
    """The routes of a job spec (its model, source regions, endpoints and residency)."""
    return plan_routes(
        spec.model.id, regions=spec.regions, endpoints=spec.model.endpoints, residency=spec.model.residency
    )


def plan_routes(
    model_id: str,
    *,
    region: str = "",
    regions: Sequence[str] = (),
    endpoints: Sequence[str] = (),
    residency: str = "",
) -> list[Route]:
    """The ordered routes for a job, checked against the catalogue before anything runs.

    Each geography of the order (``global`` first by default, then the home geography) is called
    from every source region that may call it: Bedrock's quotas are per model *per source region*,
    so three regions are three quotas. A geography none of the regions belongs to is called from its
    own home region. Routes of one geography form a tier that admission spreads rows over.
    Raises ``SpecError`` naming the model and geography when the model lacks one that was asked for,
    and for a region the catalogue does not know (a typo would otherwise quietly call another region).
    """
    try:
        model, pinned = catalog.find_model(model_id)
    except catalog.UnknownModelError:
        raise SpecError(f"[model] `id` {model_id!r} is not a Claude model on Bedrock") from None
    profile = catalog.app_profile(model_id)
    if profile is not None:
        return [_app_profile_route(profile, residency)]
    sources = list(dict.fromkeys(regions)) or [region]
    for source in sources:
        try:
            catalog.check_region(source)
        except catalog.UnknownRegionError as exc:
            raise SpecError(f"region {exc}; set [model] `region` or AWS_REGION to a Bedrock region") from None
    home_geos = [g for g in dict.fromkeys(catalog.region_geography(r, model) for r in sources) if g]
    if pinned:
        order = [pinned]
    elif endpoints:
        order = list(endpoints)
    else:
        order = [g for g in ("global", *home_geos) if g in model.geographies]
        if not order:
            order = sorted(model.geographies - {"global"})
    if residency:
        outside = [g for g in order if g != residency]
        if pinned and outside:
            raise SpecError(f"[model] `id` pins {pinned!r}, outside `residency` {residency!r}")
        order = [residency]
    routes: list[Route] = []
    for geo in dict.fromkeys(order):
        if geo not in model.geographies:
            have = ", ".join(sorted(model.geographies))
            raise SpecError(f"{model.name} has no {geo!r} inference profile (it has: {have})")
        callers = [r for r in sources if geo == "global" or geo in catalog.region_geographies(r)]
        for caller in callers or [catalog.home_region(geo)]:
            routes.append(Route(model_id=model.profile_id(geo), region=caller, geography=geo))
    return routes


def _app_profile_route(profile: catalog.AppProfile, residency: str) -> Route:
    """The one route of an application inference profile: its ARN, called from the ARN's region.

    Its geography is the system profile it copies, or (wrapping the foundation model) the region's
    own: that is what residency is checked against, and what the route is called in logs.
    """
    geo = profile.geography or catalog.region_geography(profile.region, profile.model) or profile.region
    if residency and geo != residency:
        raise SpecError(
            f"[model] `id` is the application inference profile {profile.name or profile.arn}, which "
            f"routes through {geo!r}, outside `residency` {residency!r}"
        )
    return Route(model_id=profile.arn, region=profile.region, geography=geo)


@dataclass(eq=False)
class Breaker:
    """Circuit breaker of one route (mutable state, owned by the :class:`Router`)."""

    failure_threshold: int = 5
    window: int = 20
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0
    state: str = "closed"  # closed | open | half_open
    consecutive: int = 0
    opened_at: float = 0.0
    current_cooldown: float = 0.0
    probing: bool = False
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=20))

    def allows(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and now - self.opened_at >= self.current_cooldown:
            self.state = "half_open"
            self.probing = False
        return self.state == "half_open" and not self.probing

    def on_dispatch(self) -> None:
        if self.state == "half_open":
            self.probing = True

    def on_success(self) -> None:
        self.consecutive = 0
        self.recent.append(True)
        if self.state != "closed":
            self.state = "closed"
            self.current_cooldown = 0.0
            self.recent.clear()
        self.probing = False

    def on_failure(self, now: float) -> bool:
        """Record a failure; returns True when this failure opened the breaker."""
        self.consecutive += 1
        self.recent.append(False)
        failures = self.recent.count(False)
        trip = self.consecutive >= self.failure_threshold or (
            len(self.recent) >= self.window // 2 and failures * 2 >= len(self.recent)
        )
        if self.state == "half_open" or (self.state == "closed" and trip):
            self.current_cooldown = (
                min(self.max_cooldown_s, self.current_cooldown * 2)
                if self.current_cooldown
                else self.cooldown_s
            )
            self.state = "open"
            self.opened_at = now
            self.probing = False
            return True
        return False


class Router:
    """Chooses a route per attempt and keeps each route's health."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        clock: Callable[[], float] = time.monotonic,
        cooldown_s: float = 5.0,
        failure_threshold: int = 5,
    ) -> None:
        if not routes:
            raise ValueError("a job needs at least one route")
        self.routes: tuple[Route, ...] = tuple(routes)
        self._clock = clock
        self._breakers = {
            r: Breaker(cooldown_s=cooldown_s, failure_threshold=failure_threshold) for r in self.routes
        }
        self._removed: dict[Route, str] = {}

    @property
    def active(self) -> list[Route]:
        """Routes not removed for the rest of the job (breakers may still be open)."""
        return [r for r in self.routes if r not in self._removed]

    def removed(self) -> dict[Route, str]:
        return dict(self._removed)

    def choose(self, after: Route | None = None) -> Route | None:
        """The route for the next attempt, or ``None`` when every live route's breaker is open.

        ``after``: the route of the previous failed attempt; the search starts past it.
        """
        routes = self.candidates(after)
        if not routes:
            return None
        self.dispatched(routes[0])
        return routes[0]

    def candidates(self, after: Route | None = None) -> list[Route]:
        """Every route an attempt may take now, best first (see :meth:`choose` for the order).

        Admission starts the request on the first of them whose quota admits it, so a route held
        back by its quota spills to the next; :meth:`dispatched` then tells the breaker.
        """
        live = self.active
        if after is not None and after in self.routes:
            idx = self.routes.index(after)
            live = [r for r in self.routes[idx + 1 :] + self.routes[: idx + 1] if r in live]
        now = self._clock()
        return [r for r in live if self._breakers[r].allows(now)]

    def dispatched(self, route: Route) -> None:
        """A request was sent on ``route`` (a half-open breaker lets no second one through)."""
        self._breakers[route].on_dispatch()

    def retry_in(self) -> float:
        """Seconds until some open breaker half-opens (for a caller that got ``None``)."""
        now = self._clock()
        waits = [
            max(0.0, b.opened_at + b.current_cooldown - now)
            for r, b in self._breakers.items()
            if r not in self._removed and b.state == "open"
        ]
        return min(waits, default=0.05) or 0.05

    def success(self, route: Route) -> None:
        self._breakers[route].on_success()

    def failure(self, route: Route) -> bool:
        """A retryable failure (5xx, timeout, cut-off). Returns True when it opened the breaker."""
        return self._breakers[route].on_failure(self._clock())

    def remove(self, route: Route, reason: str) -> None:
        """Take a route out for the rest of the job (AccessDenied, not found, failed preflight)."""
        self._removed.setdefault(route, reason)

    def state(self, route: Route) -> str:
        if route in self._removed:
            return "removed"
        return self._breakers[route].state
