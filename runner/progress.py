"""What a person watching a run sees: a live display on a terminal, ``job.progress`` events otherwise.

Both read the same figures (the pool's counters and the admission's per-route snapshot), so a
scheduler's log and a terminal tell the same story. ``job.progress`` events always reach the job's
``events.jsonl`` (every ``interval_s``, and once at the end): ``stats --html`` draws throttles and
requests in flight over time from them.

The terminal display is two lines, drawn by :func:`progress_lines` for the terminal's width::

    ▕██████▍         ▏  42%   4,200/10,000   350.2 rows/s  ETA  0:16  $1.24  err 3  429 12
    global@us-east-1 61 in flight, quota 61% of 2,000k/min · us@us-east-1 3 in flight, quota 8% ...

The first line keeps the percentage, done/total, rows/s and the ETA whatever the width and adds the
rest while it fits; the second shows each route's requests in flight and quota share, shorter when
that is what fits, and goes when nothing does. It is redrawn every ``refresh_s`` (twice a second).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from runner.limits import Admission
from runner.logging import FILE_ONLY
from runner.pool import Counters

if TYPE_CHECKING:
    from rich.console import Console

log = structlog.get_logger("runner.progress")

SEPARATOR = "  "
BAR_MIN, BAR_MAX = 10, 30
"""Columns of the bar, drawn only when the first line has that much room left."""
EXTRAS_ROOM = 22
"""Columns the bar leaves for cost, failed rows and throttles (``  $1.24  err 3  429 12``)."""


def figures(counters: Counters, admission: Admission, total: int) -> dict[str, Any]:
    """The live figures of a run, as one flat-ish dict (also the ``job.progress`` event).

    ``elapsed_s`` counts from the start of the run; ``eta_s`` is the time the rows left would take at
    the rate since the first request (``None`` before the first row is done).
    """
    now = time.monotonic()
    elapsed = max(1e-9, now - counters.started)
    done = counters.ok + counters.failed
    sending_s = now - (counters.first_request_at or counters.started)
    eta_s = max(0, total - done) / (done / sending_s) if done and sending_s > 0 else None
    routes = {
        name: {
            "in_flight": f.in_flight,
            "quota_tpm": round(f.quota_tpm) if f.quota_tpm is not None else None,
            "tpm": round(f.tokens_last_minute),
            "quota_share": round(f.quota_share, 3) if f.quota_share is not None else None,
            "throttles_per_min": f.throttles_last_minute,
            "capacity_share": round(f.capacity_share, 3),
        }
        for name, f in admission.figures().items()
    }
    return {
        "done": done,
        "total": total,
        "ok": counters.ok,
        "failed": counters.failed,
        "rows_per_s": round(done / elapsed, 1),
        "elapsed_s": round(elapsed, 1),
        "eta_s": round(eta_s, 1) if eta_s is not None else None,
        "tokens": counters.input_tokens + counters.output_tokens,
        "cost_usd": round(counters.cost_usd, 4),
        "in_flight": admission.in_flight,
        "throttles": counters.throttles,
        "routes": routes,
    }


# -- the terminal display --------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``0:16``, ``12:05``, ``3:02:41``; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = round(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar(fraction: float, width: int) -> str:
    """A bar of ``width`` columns (frame included), filled in eighths of a column."""
    inner = width - 2
    full, part = divmod(round(max(0.0, min(1.0, fraction)) * inner * 8), 8)
    cells = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return "▕" + cells.ljust(inner) + "▏"


def headline(f: Mapping[str, Any], width: int) -> str:
    """First line: percentage, done/total, rows/s and ETA always; a bar and the rest while they fit.

    The four are padded to steady widths and the bar's width depends on them alone, so the line does
    not jitter from one redraw to the next.
    """
    total, done = f["total"], f["done"]
    fraction = done / total if total else 1.0
    core = [
        f"{fraction:>4.0%}",
        f"{done:>{len(f'{total:,}')},}/{total:,}",
        f"{f['rows_per_s']:>7,.1f} rows/s",
        f"ETA {duration(f['eta_s']):>5}",
    ]
    line = SEPARATOR.join(core)
    room = width - len(line) - 1 - EXTRAS_ROOM
    if room >= BAR_MIN:
        line = bar(fraction, min(BAR_MAX, room)) + " " + line
    extras = [f"${f['cost_usd']:,.2f}", f"err {f['failed']:,}", f"429 {f['throttles']:,}"]
    extras += [f"{f['tokens']:,} tok", f"{f['in_flight']:,} in flight", f"{duration(f['elapsed_s'])} elapsed"]
    return _fill(line, extras, width)[:width]


def _fill(line: str, extras: list[str], width: int) -> str:
    """``line`` with as many of ``extras``, in order, as fit in ``width``."""
    for extra in extras:
        if len(line) + len(SEPARATOR) + len(extra) > width:
            break
        line += SEPARATOR + extra
    return line


def _route_text(name: str, r: Mapping[str, Any], detail: int) -> str:
    """One route, from the most detailed form (3) to the shortest (0)."""
    share, quota = r["quota_share"], r["quota_tpm"]
    if detail >= 2:
        text = f"{name} {r['in_flight']} in flight"
        if share is not None:
            text += f", quota {share:.0%}"
            if detail == 3 and quota:
                text += f" of {quota / 1000:,.0f}k/min"
        if detail == 3 and r["throttles_per_min"]:
            text += f", 429 {r['throttles_per_min']}/min"
        return text
    short = name if detail == 1 else name.split("@")[0]
    return f"{short} {r['in_flight']}" + (f" q{share:.0%}" if share is not None else "")


def route_line(f: Mapping[str, Any], width: int) -> str | None:
    """Second line: each route's requests in flight and quota share, as detailed as ``width`` allows."""
    routes: Mapping[str, Mapping[str, Any]] = f["routes"]
    for detail in (3, 2, 1, 0):
        line = " · ".join(_route_text(name, r, detail) for name, r in routes.items())
        if line and len(line) <= width:
            return line
    return None


def progress_lines(f: Mapping[str, Any], width: int) -> list[str]:
    """The terminal display for ``width`` columns: the headline, then the routes when they fit."""
    lines = [headline(f, width)]
    routes = route_line(f, width)
    if routes is not None:
        lines.append(routes)
    return lines


# -- the reporter -----------------------------------------------------------------------------------


async def report_progress(
    counters: Counters,
    admission: Admission,
    total: int,
    *,
    tty: bool,
    interval_s: float = 10.0,
    refresh_s: float = 0.5,
    console: Console | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Run until cancelled: redraw the display every ``refresh_s`` on a terminal (else log there), and
    log ``job.progress`` every ``interval_s`` (to the events file only, on a terminal) and at the end."""
    quiet = {FILE_ONLY: True} if tty else {}
    try:
        if not tty:
            while True:
                await anyio.sleep(interval_s)
                log.info("job.progress", **figures(counters, admission, total))
        await _live(counters, admission, total, interval_s, refresh_s, console, quiet)
    finally:
        log.info("job.progress", **figures(counters, admission, total), **quiet)


async def _live(
    counters: Counters,
    admission: Admission,
    total: int,
    interval_s: float,
    refresh_s: float,
    console: Console | None,
    quiet: dict[str, Any],
) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = console or Console(stderr=True)

    def draw(live: Live) -> None:
        lines = progress_lines(figures(counters, admission, total), console.width)
        live.update(Text("\n".join(lines), no_wrap=True, overflow="crop"), refresh=True)

    logged = time.monotonic()
    with Live(console=console, auto_refresh=False, transient=False, redirect_stderr=True) as live:
        try:
            while True:
                draw(live)
                if time.monotonic() - logged >= interval_s:
                    logged = time.monotonic()
                    log.info("job.progress", **figures(counters, admission, total), **quiet)
                await anyio.sleep(refresh_s)
        finally:
            draw(live)
