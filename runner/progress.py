"""What a person watching a run sees: a live bar on a terminal, periodic ``job.progress`` events otherwise.

Both read the same figures (the pool's counters and the admission's per-route snapshot), so a
scheduler's log and a terminal tell the same story.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from runner.limits import Admission
from runner.pool import Counters

log = structlog.get_logger("runner.progress")


def figures(counters: Counters, admission: Admission, total: int) -> dict[str, Any]:
    """The live figures of a run, as one flat-ish dict (also the ``job.progress`` event)."""
    elapsed = max(1e-9, time.monotonic() - counters.started)
    done = counters.ok + counters.failed
    routes = {
        name: {
            "in_flight": f.in_flight,
            "quota_tpm": round(f.quota_tpm) if f.quota_tpm is not None else None,
            "tpm": round(f.tokens_last_minute),
            "quota_share": round(f.quota_share, 3) if f.quota_share is not None else None,
            "throttles_per_min": f.throttles_last_minute,
        }
        for name, f in admission.figures().items()
    }
    return {
        "done": done,
        "total": total,
        "ok": counters.ok,
        "failed": counters.failed,
        "rows_per_s": round(done / elapsed, 1),
        "tokens": counters.input_tokens + counters.output_tokens,
        "cost_usd": round(counters.cost_usd, 4),
        "in_flight": admission.in_flight,
        "throttles": counters.throttles,
        "routes": routes,
    }


async def report_progress(
    counters: Counters,
    admission: Admission,
    total: int,
    *,
    tty: bool,
    interval_s: float = 10.0,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Run until cancelled: refresh the bar twice a second, or log every ``interval_s`` seconds."""
    if not tty:
        while True:
            await anyio.sleep(interval_s)
            log.info("job.progress", **figures(counters, admission, total))
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[line]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, redirect_stderr=True) as bar:
        task = bar.add_task("rows", total=total, line="")
        try:
            while True:
                f = figures(counters, admission, total)
                limits = " ".join(
                    f"{name}:{r['in_flight']}"
                    + (f" {r['quota_tpm'] / 1000:,.0f}k/min" if r["quota_tpm"] is not None else "")
                    + (f" q{r['quota_share']:.0%}" if r["quota_share"] is not None else "")
                    for name, r in f["routes"].items()
                )
                line = (
                    f"{f['rows_per_s']:.0f} rows/s · {f['tokens']:,} tok · ${f['cost_usd']:.2f} · "
                    f"err {f['failed']} · 429 {f['throttles']} · {limits}"
                )
                bar.update(task, completed=f["done"], line=line)
                await anyio.sleep(0.5)
        finally:
            f = figures(counters, admission, total)
            bar.update(task, completed=f["done"])
