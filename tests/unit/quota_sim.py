"""A discrete-time model of one route under a quota shape, to test :class:`RouteQuota` on its own.

Not the emulator (which the integration tests use over HTTP): three small service models, a token
bucket, a rolling window and a fixed (calendar-minute) window, each booking reservations and
settlements the documented way, and a pool of ``max_in_flight`` slots that retries throttled rows at
once. Pure and seeded.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Literal

from runner.quota import Charge, Notify, RouteQuota

Shape = Literal["bucket", "window", "fixed"]


class Bucket:
    """Capacity = ``burst_s`` of refill (a minute: tpm), refilled at tpm/60 per second; settlements
    may drive it negative."""

    def __init__(self, tpm: float, start: float, burst_s: float = 60.0) -> None:
        self.burst_s = burst_s
        self.cap, self.rate, self.t = tpm * burst_s / 60.0, tpm / 60.0, 0.0
        self.level = self.cap * start

    def _refill(self, now: float) -> None:
        self.level = min(self.cap, self.level + (now - self.t) * self.rate)
        self.t = now

    def admit(self, tokens: float, now: float) -> bool:
        self._refill(now)
        if self.level < tokens:
            return False
        self.level -= tokens
        return True

    def settle(self, reserved: float, settled: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.cap, self.level - (settled - reserved))

    def draw(self, tokens: float, now: float) -> None:
        self._refill(now)
        self.level -= min(tokens, max(self.level, 0.0))

    def set_tpm(self, tpm: float, now: float) -> None:
        self._refill(now)
        self.cap, self.rate = tpm * self.burst_s / 60.0, tpm / 60.0


class Window:
    """The sum of the last 60 s of charges stays under tpm; drained = spread over the last minute."""

    def __init__(self, tpm: float, start: float) -> None:
        self.limit = tpm
        self.entries: list[list[float]] = [[-60.0 + i * 0.1, tpm * (1 - start) / 600] for i in range(600)]
        self.sum = sum(e[1] for e in self.entries)
        self.head = 0

    def _expire(self, now: float) -> None:
        while self.head < len(self.entries) and self.entries[self.head][0] <= now - 60.0:
            self.sum -= self.entries[self.head][1]
            self.head += 1

    def admit(self, tokens: float, now: float) -> list[float] | None:
        self._expire(now)
        if self.sum + tokens > self.limit:
            return None
        entry = [now, tokens]
        self.entries.append(entry)
        self.sum += tokens
        return entry

    def settle_entry(self, entry: list[float], settled: float, now: float) -> None:
        self._expire(now)
        if entry[0] > now - 60.0:  # still in the window
            self.sum += settled - entry[1]
        entry[1] = settled

    def draw(self, tokens: float, now: float) -> None:
        self._expire(now)
        take = min(tokens, max(0.0, self.limit - self.sum))
        if take > 0:
            self.entries.append([now, take])
            self.sum += take

    def set_tpm(self, tpm: float, now: float) -> None:
        self._expire(now)
        self.limit = tpm


class Fixed:
    """A counter per minute, the first ending at ``reset_s``; a settlement counts in its minute only
    if that is still the current one (the emulator's ``quota_shape = "fixed"``)."""

    def __init__(self, tpm: float, start: float, reset_s: float) -> None:
        self.limit, self.reset_s = tpm, reset_s
        self.used, self.minute = tpm * (1 - start), 0

    def _roll(self, now: float) -> int:
        minute = 0 if now < self.reset_s else 1 + int((now - self.reset_s) // 60.0)
        if minute != self.minute:
            self.used, self.minute = 0.0, minute
        return minute

    def admit(self, tokens: float, now: float) -> list[float] | None:
        minute = self._roll(now)
        if self.used + tokens > self.limit:
            return None
        self.used += tokens
        return [minute, tokens]

    def settle_entry(self, entry: list[float], settled: float, now: float) -> None:
        if self._roll(now) == entry[0]:
            self.used += settled - entry[1]
        entry[1] = settled

    def draw(self, tokens: float, now: float) -> None:
        self._roll(now)
        self.used += min(tokens, max(0.0, self.limit - self.used))

    def set_tpm(self, tpm: float, now: float) -> None:
        self._roll(now)
        self.limit = tpm


@dataclass(frozen=True, slots=True)
class Outcome:
    seconds: float
    requests: int
    throttled: int
    """Requests refused, for the quota or for capacity..."""
    capacity: int
    """...and of them, those refused at random (``capacity_429``), whatever the quota."""
    quota: RouteQuota


def run(
    *,
    shape: Shape = "bucket",
    start: float = 1.0,
    tpm: float = 600_000,
    known: bool = True,
    rows: int = 1200,
    max_in_flight: int = 64,
    reserved: float = 306,
    settled: float = 800,
    latency_s: float = 2.4,
    capacity_429: float = 0.0,
    other_share: float = 0.0,
    seed: int = 1,
    dt: float = 0.005,
    lag_s: float = 0.0,
    notify: Notify | None = None,
    given_tpm: float | None = None,
    tpm_change: tuple[float, float] | None = None,
    reset_s: float = 60.0,
    burst_s: float = 60.0,
) -> Outcome:
    """Run ``rows`` identical requests to the end; returns the job's time and its throttles.

    ``lag_s``: a busy client reads each answer late, by a random delay of this mean (a 429 that the
    service sent in 10 ms reaches the quota model after the next wave may have gone out).
    ``notify``: told the model's decisions, as the job's event log is, with the sim's time ``t``.
    ``given_tpm``: the tpm the user gives, when it is not the service's (``known`` only).
    ``tpm_change``: (at, tpm): the service's quota is raised or cut to ``tpm`` at ``at`` seconds.
    ``reset_s``: when a fixed window's first minute ends.
    ``burst_s``: a bucket's capacity, in seconds of its refill (a minute: the documented ``tpm``).
    """
    rnd = random.Random(seed)
    service: Bucket | Window | Fixed
    if shape == "bucket":
        service = Bucket(tpm, start, burst_s)
    elif shape == "fixed":
        service = Fixed(tpm, start, reset_s)
    else:
        service = Window(tpm, start)
    quota = RouteQuota.create(tpm=(given_tpm or tpm) if known else 0, now=0.0)
    if notify is not None:
        quota.notify = lambda event, fields: notify(event, {**fields, "t": t})  # the time of the call
    queue = list(range(rows))
    events: list[tuple[float, int, bool, Charge, list[float] | None, float, float]] = []
    in_flight = done = requests = throttled = capacity = seq = 0
    t = 0.0
    while done < rows and t < 3600:
        t += dt
        if tpm_change is not None and tpm_change[0] <= t < tpm_change[0] + dt:
            service.set_tpm(tpm_change[1], t)
        if other_share:
            service.draw(other_share * tpm / 60.0 * dt, t)
        while events and events[0][0] <= t:
            _, _, ok, charge, entry, admitted_at, served = heapq.heappop(events)
            in_flight -= 1
            if ok:
                if isinstance(service, Bucket):
                    service.settle(reserved, settled, t)
                elif entry is not None:
                    service.settle_entry(entry, settled, t)
                quota.settle(charge, settled, t, booked_at=admitted_at, server_s=served)
                done += 1
            else:
                quota.throttled(charge, t)
                queue.append(0)
        while queue and in_flight < max_in_flight and quota.delay(reserved, t) == 0.0:
            queue.pop()
            charge = quota.admit(reserved, t)
            requests += 1
            in_flight += 1
            seq += 1
            accepted: bool | list[float] | None = None
            if rnd.random() >= capacity_429:
                accepted = service.admit(reserved, t)
            else:
                capacity += 1
            if not accepted:
                throttled += 1
                late = rnd.expovariate(1.0 / lag_s) if lag_s else 0.0
                heapq.heappush(events, (t + 0.01 + late, seq, False, charge, None, t, 0.0))
                continue
            served = latency_s * math.exp(0.3 * rnd.gauss(0.0, 1.0))
            wait = served + (rnd.expovariate(1.0 / lag_s) if lag_s else 0.0)
            entry = accepted if isinstance(accepted, list) else None
            heapq.heappush(events, (t + wait, seq, True, charge, entry, t, served))
    return Outcome(t, requests, throttled, capacity, quota)
