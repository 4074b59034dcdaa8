"""Tokens-per-minute arithmetic, the way BEDROCK.md describes Bedrock's on-demand quota.

Pure: every call takes ``now`` (seconds, any monotonic origin), so tests drive the clock.

At admission a request reserves ``input + cache_write + max_tokens`` in a rolling 60-second window
and is throttled if the window would go over the quota; when it ends the reservation is settled to
``input + cache_write + output x burndown`` (cache reads are free). A large ``max_tokens`` therefore
throttles long before real output would, which is the effect a client's limiter has to model. The
settled amount stays at the admission time: a simplification (Bedrock does not document when the
settlement lands), harmless because a window entry lives only 60 s either way.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW_S = 60.0


def reservation_tokens(input_tokens: int, cache_write_tokens: int, max_tokens: int) -> int:
    """What admission reserves against the quota."""
    return input_tokens + cache_write_tokens + max_tokens


def settled_tokens(input_tokens: int, cache_write_tokens: int, output_tokens: int, burndown: float) -> int:
    """What a finished request finally costs against the quota (output burns ``burndown`` each)."""
    return input_tokens + cache_write_tokens + math.ceil(output_tokens * burndown)


class Reservation:
    """One request's entry in the window; ``live`` turns false once it has aged out."""

    __slots__ = ("at", "live", "tokens")

    def __init__(self, at: float, tokens: int) -> None:
        self.at = at
        self.tokens = tokens
        self.live = True


class TokenWindow:
    """A rolling-window quota: the sum of tokens admitted in the last ``window_s`` seconds.

    Mutable, single-threaded (the emulator's event loop owns it). ``limit`` may be changed while
    requests are in flight: reservations already made stay.
    """

    __slots__ = ("_entries", "_used", "limit", "window_s")

    def __init__(self, limit: int, *, window_s: float = WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._entries: deque[Reservation] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        entries = self._entries
        while entries and entries[0].at <= horizon:
            entry = entries.popleft()
            entry.live = False
            self._used -= entry.tokens

    def used(self, now: float) -> int:
        """Tokens counted in the window ending at ``now``."""
        self._expire(now)
        return self._used

    def try_reserve(self, tokens: int, now: float) -> Reservation | None:
        """Admit ``tokens`` if the window stays within the limit, else ``None`` (throttle).

        A request whose reservation alone exceeds the limit is never admitted: lowering ``max_tokens``
        is the only way through, as with the real quota.
        """
        self._expire(now)
        if self._used + tokens > self.limit:
            return None
        entry = Reservation(now, tokens)
        self._entries.append(entry)
        self._used += tokens
        return entry

    def settle(self, entry: Reservation, tokens: int, now: float) -> None:
        """Replace a reservation by the real cost; a no-op once the entry has left the window."""
        self._expire(now)
        if entry.live:
            self._used += tokens - entry.tokens
            entry.tokens = tokens

    def seconds_until(self, tokens: int, now: float) -> float | None:
        """How long until ``tokens`` would be admitted (``None``: never, it exceeds the limit)."""
        if tokens > self.limit:
            return None
        self._expire(now)
        excess = self._used + tokens - self.limit
        if excess <= 0:
            return 0.0
        for entry in self._entries:
            excess -= entry.tokens
            if excess <= 0:
                return max(0.0, entry.at + self.window_s - now)
        return 0.0  # pragma: no cover - the loop always drains the excess
