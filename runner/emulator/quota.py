"""Tokens-per-minute arithmetic, the way BEDROCK.md describes Bedrock's on-demand quota, in several shapes.

Pure: every call takes ``now`` (seconds, any monotonic origin), so tests drive the clock.

At admission a request reserves ``input + cache_write + max_tokens`` and is throttled if the quota
has no room for it; when it ends the reservation is settled to ``input + cache_write + output x
burndown`` (cache reads are free). A large ``max_tokens`` therefore throttles long before real output
would, which is the effect a client's limiter has to model.

Bedrock does not document how its quota refills, so there are three shapes behind one protocol,
:class:`QuotaShape`:

* :class:`TokenWindow`: the sum of what was admitted in the last 60 s must stay within the limit. The
  settled amount stays at the admission time: a simplification (Bedrock does not document when the
  settlement lands), harmless because a window entry lives only 60 s either way.
* :class:`TokenBucket`: a bucket of ``limit`` tokens refilled continuously at ``limit / 60`` a second;
  settlement debits or credits the difference, so the level may go negative.
* :class:`FixedWindow`: a counter of the tokens admitted in the current minute, reset to zero at each
  minute boundary (the simplest rate limiter there is). Minutes count from the quota's creation, the
  first one ending ``reset_s`` after it. A settlement lands in its entry's minute if that minute is
  still the current one, nowhere otherwise.

:class:`RouteQuota` runs one of them for a route, with what happens to it over time (the level it
starts at, another consumer drawing on it, ``tpm`` changes) and a per-second timeline for counters.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from runner.emulator.config import (
    MIN_CONSUMER_PERIOD_S,
    MINUTE_S,
    OtherConsumer,
    QuotaShapeName,
    TpmChange,
)

WINDOW_S = MINUTE_S
"""The quota's period: a window's length, the time a bucket takes to refill from empty, a fixed minute."""

SLOT_S = 0.1
"""Step of the steady other consumer's draws and of a window's pre-filled charges."""


def reservation_tokens(input_tokens: int, cache_write_tokens: int, max_tokens: int) -> int:
    """What admission reserves against the quota."""
    return input_tokens + cache_write_tokens + max_tokens


def settled_tokens(input_tokens: int, cache_write_tokens: int, output_tokens: int, burndown: float) -> int:
    """What a finished request finally costs against the quota (output burns ``burndown`` each)."""
    return input_tokens + cache_write_tokens + math.ceil(output_tokens * burndown)


class Reservation:
    """One request's entry in a quota; ``live`` turns false once it has aged out of a window, or once
    the minute of a fixed window that admitted it is over."""

    __slots__ = ("at", "live", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens
        self.live = True


class QuotaShape(Protocol):
    """What a quota does, whatever its shape; mutable, single-threaded, every method takes ``now``."""

    @property
    def limit(self) -> int:
        """Tokens per minute."""
        ...

    def set_limit(self, limit: int, now: float) -> None:
        """Raise or cut the quota at ``now``; reservations already made stay."""
        ...

    def try_reserve(self, tokens: int, now: float) -> Reservation | None:
        """Admit ``tokens`` or answer ``None`` (throttle); more than ``limit`` is never admitted."""
        ...

    def settle(self, entry: Reservation, tokens: int, now: float) -> None:
        """Replace a reservation by what the request really cost."""
        ...

    def seconds_until(self, tokens: int, now: float) -> float | None:
        """How long until ``tokens`` would be admitted (``None``: never, it exceeds the limit)."""
        ...

    def used(self, now: float) -> float:
        """Tokens counted against the quota at ``now`` (``limit - used`` is what is left)."""
        ...

    def take(self, tokens: int, now: float) -> int:
        """Draw up to ``tokens`` for another consumer without a reservation; returns what it got."""
        ...


class _CountingWindow:
    """What the two window shapes share: a count of the tokens in the window, and the entries behind
    it, each admitted if it fits under the limit and settled in place while its window holds it
    (``live``). A subclass says how the window moves on (:meth:`_advance`), how long a request
    waits, and how another consumer's draw is booked."""

    __slots__ = ("_entries", "_used", "limit")

    _entries: deque[Reservation]
    _used: int
    limit: int

    def _advance(self, now: float) -> None:
        """Let go of what the window no longer holds at ``now`` (its entries turn not ``live``)."""
        raise NotImplementedError

    def used(self, now: float) -> int:
        """Tokens counted in the window at ``now``."""
        self._advance(now)
        return self._used

    def set_limit(self, limit: int, now: float) -> None:
        """The new limit from ``now``; what the window holds stays."""
        self._advance(now)
        self.limit = limit

    def try_reserve(self, tokens: int, now: float) -> Reservation | None:
        """Admit ``tokens`` if the window stays within the limit, else ``None`` (throttle).

        A request whose reservation alone exceeds the limit is never admitted: lowering ``max_tokens``
        is the only way through, as with the real quota.
        """
        self._advance(now)
        if self._used + tokens > self.limit:
            return None
        entry = Reservation(now, tokens)
        self._entries.append(entry)
        self._used += tokens
        return entry

    def _room_for(self, tokens: int, now: float) -> int:
        """What fits under the limit at ``now``, up to ``tokens`` (another consumer's draw)."""
        self._advance(now)
        return min(tokens, max(self.limit - self._used, 0))

    def settle(self, entry: Reservation, tokens: int, now: float) -> None:
        """Replace a reservation by the real cost; the count changes only while the window holds it."""
        self._advance(now)
        if entry.live:
            self._used += tokens - entry.tokens
        entry.tokens = tokens


class TokenWindow(_CountingWindow):
    """A rolling-window quota: the sum of tokens admitted in the last ``window_s`` seconds.

    Mutable, single-threaded (the emulator's event loop owns it). ``limit`` may be changed while
    requests are in flight: reservations already made stay. ``start`` is the share of the limit free
    at ``now``: the rest is pre-filled as charges spread evenly over the ``window_s`` before ``now``
    (as if a steady consumer had just used it), so it frees up progressively, not in one lump.
    """

    __slots__ = ("window_s",)

    def __init__(
        self, limit: int, *, window_s: float = WINDOW_S, start: float = 1.0, now: float = 0.0
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._entries = deque()
        self._used = 0
        if start < 1.0:
            self._prefill(round((1.0 - start) * limit), now)

    def _prefill(self, total: int, now: float) -> None:
        slots = max(1, round(self.window_s / SLOT_S))
        step = self.window_s / slots
        for k in range(slots):  # slot k leaves the window at now + (k + 1) x step
            tokens = total * (k + 1) // slots - total * k // slots
            if tokens:
                self._entries.append(Reservation(now - (slots - 1 - k) * step, tokens))
                self._used += tokens

    def _advance(self, now: float) -> None:
        horizon = now - self.window_s
        entries = self._entries
        while entries and entries[0].at <= horizon:
            entry = entries.popleft()
            entry.live = False
            self._used -= entry.tokens

    def seconds_until(self, tokens: int, now: float) -> float | None:
        """How long until ``tokens`` would be admitted (``None``: never, it exceeds the limit)."""
        if tokens > self.limit:
            return None
        self._advance(now)
        excess = self._used + tokens - self.limit
        if excess <= 0:
            return 0.0
        for entry in self._entries:
            excess -= entry.tokens
            if excess <= 0:
                return max(0.0, entry.at + self.window_s - now)
        return 0.0  # pragma: no cover - the loop always drains the excess

    def take(self, tokens: int, now: float) -> int:
        """Add what fits under the limit, up to ``tokens``, as one charge at ``now``."""
        taken = self._room_for(tokens, now)
        if taken:
            self._entries.append(Reservation(now, taken))
            self._used += taken
        return taken


class TokenBucket:
    """A token-bucket quota: ``limit`` tokens of capacity, refilled continuously at ``limit / 60`` a second.

    Admission needs the level to hold the whole reservation and debits it; settlement debits the
    excess (the level may go negative: it refills from there) or credits back the unused part, never
    above the capacity. A reservation larger than the capacity is never admitted. ``start`` is the
    share of the capacity in the bucket at ``now``. Mutable, single-threaded, like :class:`TokenWindow`.
    """

    __slots__ = ("_at", "_level", "_limit", "_rate")

    def __init__(self, limit: int, *, start: float = 1.0, now: float = 0.0) -> None:
        self._limit = limit
        self._rate = limit / WINDOW_S
        self._level = start * limit
        self._at = now

    @property
    def limit(self) -> int:
        return self._limit

    def _refill(self, now: float) -> None:
        if now > self._at:
            level = self._level + (now - self._at) * self._rate
            self._level = level if level < self._limit else float(self._limit)
            self._at = now

    def level(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (negative after settlements that cost more than reserved)."""
        self._refill(now)
        return self._level

    def used(self, now: float) -> float:
        return self._limit - self.level(now)

    def set_limit(self, limit: int, now: float) -> None:
        """New capacity and refill rate from ``now``; the level is clipped to the new capacity."""
        self._refill(now)
        self._limit = limit
        self._rate = limit / WINDOW_S
        self._level = min(self._level, float(limit))

    def try_reserve(self, tokens: int, now: float) -> Reservation | None:
        self._refill(now)
        if tokens > self._limit or self._level < tokens:
            return None
        self._level -= tokens
        return Reservation(now, tokens)

    def settle(self, entry: Reservation, tokens: int, now: float) -> None:
        self._refill(now)
        level = self._level - (tokens - entry.tokens)
        self._level = level if level < self._limit else float(self._limit)
        entry.tokens = tokens

    def seconds_until(self, tokens: int, now: float) -> float | None:
        if tokens > self._limit:
            return None
        deficit = tokens - self.level(now)
        return 0.0 if deficit <= 0 else deficit / self._rate

    def take(self, tokens: int, now: float) -> int:
        """Take ``min(tokens, level)`` (nothing from an empty or negative bucket)."""
        self._refill(now)
        taken = min(tokens, max(int(self._level), 0))
        self._level -= taken
        return taken


class FixedWindow(_CountingWindow):
    """A fixed-window quota: a counter of the tokens admitted in the current minute, reset at each boundary.

    Minutes count from the quota's creation (``now`` of the constructor): the first ends ``reset_s``
    seconds later (the boundary's phase: a job does not start on one), then one every ``WINDOW_S``
    seconds; the current minute is computed from ``now``, so hours of minutes do not drift. Admission
    needs ``counter + tokens <= limit`` and adds the reservation to the counter (a reservation above the
    limit is never admitted). A settlement replaces the reservation in the counter only while the minute
    that admitted it is still the current one; a reservation from an earlier minute settles nowhere, its
    minute being over. ``start`` is the share of the limit free in the first minute: a drained window
    (``start = 0``) is closed until its first reset, then wholly open. Time never runs backwards here: a
    ``now`` older than the current minute counts in it. Mutable, single-threaded, like :class:`TokenWindow`.
    """

    __slots__ = ("_first_end", "_minute", "_next_reset")

    def __init__(
        self, limit: int, *, reset_s: float = WINDOW_S, start: float = 1.0, now: float = 0.0
    ) -> None:
        if not 0.0 < reset_s <= WINDOW_S:
            raise ValueError(f"reset_s must be in (0, {WINDOW_S:g}], got {reset_s!r}")
        self.limit = limit
        self._first_end = now + reset_s
        self._minute = 0
        self._next_reset = self._first_end
        self._used = round((1.0 - start) * limit) if start < 1.0 else 0
        self._entries = deque()  # the current minute's, to close when it ends

    def _advance(self, now: float) -> None:
        if now < self._next_reset:
            return
        # the minute is how many boundaries ``first_end + k x WINDOW_S`` are <= now: the division
        # gives it, the loops correct a rounding of it at a boundary (each runs once at most)
        first_end = self._first_end
        minute = max(self._minute + 1, math.floor((now - first_end) / WINDOW_S) + 1)
        while first_end + minute * WINDOW_S <= now:
            minute += 1
        while minute > self._minute + 1 and first_end + (minute - 1) * WINDOW_S > now:
            minute -= 1
        self._minute = minute
        self._next_reset = first_end + minute * WINDOW_S
        for entry in self._entries:
            entry.live = False
        self._entries.clear()
        self._used = 0

    def seconds_until(self, tokens: int, now: float) -> float | None:
        """0 if ``tokens`` fits in this minute, else the time to the next reset (``None``: never)."""
        if tokens > self.limit:
            return None
        self._advance(now)
        if self._used + tokens <= self.limit:
            return 0.0
        return self._next_reset - now

    def take(self, tokens: int, now: float) -> int:
        """Add what fits under the limit in this minute, up to ``tokens``."""
        taken = self._room_for(tokens, now)
        self._used += taken
        return taken


def make_shape(
    shape: QuotaShapeName, limit: int, *, start: float = 1.0, now: float = 0.0, reset_s: float = WINDOW_S
) -> QuotaShape:
    """A fresh quota of that shape, with ``start`` of it available at ``now`` (``reset_s``: fixed only)."""
    if shape == "bucket":
        return TokenBucket(limit, start=start, now=now)
    if shape == "fixed":
        return FixedWindow(limit, reset_s=reset_s, start=start, now=now)
    return TokenWindow(limit, start=start, now=now)


class TimelineRow(NamedTuple):
    """One second of a route's quota, ``t`` seconds after it was created."""

    t: int
    admitted: int
    """Tokens reserved by the requests admitted in that second."""
    settled: int
    """What the requests that ended in that second finally cost."""
    quota_throttles: int
    """Requests refused for want of quota (429 "Too many tokens")."""
    capacity_throttles: int
    """Requests refused whatever the quota (``throttle_rate``: 429 "Too many requests")."""
    other_consumer: int
    """Tokens the other consumer drew."""


class QuotaSnapshot(NamedTuple):
    """A route's quota for the counters: shape, limit now, what is used and left, the timeline."""

    shape: QuotaShapeName
    limit: int
    used: int
    available: int
    timeline: list[TimelineRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "limit": self.limit,
            "used": self.used,
            "available": self.available,
            "timeline": [row._asdict() for row in self.timeline],
        }


# indexes of a live timeline row (a small list per second, turned into a TimelineRow on demand)
_ADMITTED, _SETTLED, _QUOTA_THROTTLES, _CAPACITY_THROTTLES, _OTHER = range(5)
_NO_ROW = -(2**62)  # no second is this one: the first look-up always misses the cached row


class RouteQuota:
    """One route's quota as the emulator runs it: a shape, what happens to it over time, and a timeline.

    Time starts when it is created (``now`` of the constructor; the emulator creates it on the route's
    first call, or when the quota's shape or scenario changes): ``start`` of the quota is free then,
    ``other_consumer`` starts drawing then, ``tpm_changes`` fire ``at_s`` seconds later, and a fixed
    window's first minute ends ``reset_s`` seconds later. The consumer and the changes happen lazily,
    in time order, whenever the quota is touched with a later ``now``, so an idle route costs nothing
    and the hot path costs one comparison when nothing is due. The timeline keeps one row per second
    that saw any activity (memory grows with the seconds of activity, not with requests).
    """

    __slots__ = (
        "_carry",
        "_changes",
        "_draw_at",
        "_draw_first",
        "_draw_period",
        "_draws",
        "_last_row",
        "_last_t",
        "_next",
        "_rows",
        "_share",
        "created",
        "shape",
        "shape_name",
    )

    def __init__(
        self,
        limit: int,
        *,
        now: float,
        shape: QuotaShapeName = "window",
        start: float = 1.0,
        reset_s: float = WINDOW_S,
        other_consumer: OtherConsumer | None = None,
        tpm_changes: Sequence[TpmChange] = (),
    ) -> None:
        self.shape_name: QuotaShapeName = shape
        self.shape = make_shape(shape, limit, start=start, now=now, reset_s=reset_s)
        self.created = now
        self._changes = deque(sorted((now + c.at_s, c.tpm) for c in tpm_changes))
        self._share = 0.0
        self._draw_period = SLOT_S
        self._draw_first = math.inf
        self._draws = 0
        self._carry = 0.0
        if other_consumer is not None:
            self._share = other_consumer.share
            if other_consumer.pattern == "bursty":
                self._draw_period = max(other_consumer.period_s, MIN_CONSUMER_PERIOD_S)
                self._draw_first = now  # the first burst as it starts
            else:
                self._draw_first = now + SLOT_S  # a steady slot draws at its end
        self._draw_at = self._draw_first
        self._rows: dict[int, list[int]] = {}
        self._last_t = _NO_ROW
        self._last_row: list[int] = []
        self._next = self._next_event()

    # --- time --------------------------------------------------------------------------------------

    def _next_event(self) -> float:
        change = self._changes[0][0] if self._changes else math.inf
        return change if change < self._draw_at else self._draw_at

    def advance(self, now: float) -> None:
        """Apply every tpm change and consumer draw due by ``now``, in time order."""
        if now < self._next:
            return
        changes = self._changes
        while True:
            change_at = changes[0][0] if changes else math.inf
            if change_at <= self._draw_at:
                if change_at > now:
                    break
                _, tpm = changes.popleft()
                self.shape.set_limit(tpm, change_at)
            else:
                if self._draw_at > now:
                    break
                self._draw(self._draw_at)
        self._next = self._next_event()

    def _draw(self, at: float) -> None:
        shape = self.shape
        self._carry += self._share * shape.limit * self._draw_period / WINDOW_S
        want = int(self._carry)
        self._carry -= want
        if want:
            taken = shape.take(want, at)
            if taken:
                self._row(at)[_OTHER] += taken
        self._draws += 1
        self._draw_at = self._draw_first + self._draws * self._draw_period  # no drift over hours

    def _row(self, now: float) -> list[int]:
        t = int(now - self.created)
        return self._last_row if t == self._last_t else self._new_row(t)

    def _new_row(self, t: int) -> list[int]:
        t = max(t, 0)  # a call that read the clock before a PATCH made this quota counts in its first second
        row = self._rows.get(t)
        if row is None:
            row = self._rows[t] = [0, 0, 0, 0, 0]
        self._last_t, self._last_row = t, row
        return row

    # --- the quota ---------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self.shape.limit

    def set_limit(self, limit: int, now: float) -> None:
        self.advance(now)
        self.shape.set_limit(limit, now)

    def try_reserve(self, tokens: int, now: float) -> Reservation | None:
        """Admit or refuse ``tokens`` at ``now``; either way the timeline counts it."""
        if now >= self._next:  # the hot path: checks inlined, no call when nothing is due
            self.advance(now)
        entry = self.shape.try_reserve(tokens, now)
        t = int(now - self.created)
        row = self._last_row if t == self._last_t else self._new_row(t)
        if entry is None:
            row[_QUOTA_THROTTLES] += 1
        else:
            row[_ADMITTED] += tokens
        return entry

    def settle(self, entry: Reservation, tokens: int, now: float) -> None:
        if now >= self._next:
            self.advance(now)
        self.shape.settle(entry, tokens, now)
        t = int(now - self.created)
        row = self._last_row if t == self._last_t else self._new_row(t)
        row[_SETTLED] += tokens

    def capacity_throttled(self, now: float) -> None:
        """Count a throttle the quota did not cause (``throttle_rate``) in the timeline."""
        self._row(now)[_CAPACITY_THROTTLES] += 1

    def seconds_until(self, tokens: int, now: float) -> float | None:
        self.advance(now)
        return self.shape.seconds_until(tokens, now)

    def used(self, now: float) -> float:
        self.advance(now)
        return self.shape.used(now)

    def timeline(self) -> list[TimelineRow]:
        """The seconds with activity, in order."""
        return [TimelineRow(t, *self._rows[t]) for t in sorted(self._rows)]

    def snapshot(self, now: float) -> QuotaSnapshot:
        used = round(self.used(now))
        limit = self.shape.limit
        return QuotaSnapshot(self.shape_name, limit, used, limit - used, self.timeline())
