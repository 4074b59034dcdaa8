"""A rolling 60-second window of quota charges: each reserved at admission, settled when it ends.

Bedrock's own bookkeeping as far as it is documented (BEDROCK.md, "Quotas"). The quota model of a
route (:mod:`runner.quota`) keeps its own charges here for the window guard and the settled usage
of the last minute.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0
DEFAULT_HEADROOM = 1.0
"""Share of a given ``tpm`` the route is paced at. It was 0.98 (slack for clock skew and settle
timing), which the controller does not need: the window guard books the whole quota, and a quota a
little under its given tpm is measured by the samples like another consumer's share. The slack cost
every job given its tpm 2-4 % of its time; at 1.0 quota_sim's `tpm`-given cells ran at 0.99-1.00 of
their limit with the same 429s."""
MEASURED_HEADROOM = 0.98
"""Share of a *measured* quota (a refused burst's minute, a sample) the route is paced at: a
measure is read from what the quota took, a little high as often as low. (At 1.0, a long job with
2 % capacity 429s, `tpm` unknown, ran at 0.86 of its limit over ten seeds, 0.90 at 0.98.)"""

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
class WindowCharge:
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

    def leaving(self, now: float, within: float) -> list[tuple[float, float]]:
        """(start, tokens) of the slots holding a charge due to leave within ``within`` seconds of
        ``now``: what a window keeping each charge apart may let go before this one does (a slot
        leaves with its last charge)."""
        self._expire(now)
        horizon = now + within - WINDOW_S
        out = []
        for slot in self._slots:
            if slot.start > horizon:
                break
            out.append((slot.start, slot.tokens))
        return out

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

    def reserve(self, tokens: float, now: float) -> WindowCharge:
        """Count ``tokens`` at ``now`` until :meth:`settle` replaces them by what the request used."""
        return WindowCharge(self.add(tokens, now), now, tokens)

    def settle(self, charge: WindowCharge, tokens: float, booked_at: float | None = None) -> None:
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
