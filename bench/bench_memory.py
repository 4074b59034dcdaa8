"""Memory: peak RSS of ``bedrock-batch run`` on a large input vs a 10,000-row one, same settings.

Each job runs the real CLI (``bedrock-batch run``, in a child process that reports its own ``VmHWM``
when the command returns: the kernel's high-water mark, start-up and the final ``results.parquet``
included) against a zero-latency emulator (its own process); the RSS is also sampled every second to
show its course. (``wait4``'s ``ru_maxrss`` is no use here: Linux counts in it the image the child
was forked from, i.e. the benchmark process.)

Targets: peak RSS on a 1,000,000-row input <= 300 MB, and <= 1.3 x the peak on 10,000 rows.

This machine pushes ~1,400 rows/s through aioboto3 at zero latency (the client's CPU is the limit),
so a 1,000,000-row job takes ~12 minutes: more than the whole benchmark run may take. ``make bench``
therefore runs the large input at 200,000 rows, and the 1,000,000-row figure comes from the same
benchmark run on its own (``BENCH_MEMORY_ROWS=1000000 python -m bench memory``), stored as its own
entry with its own date.

Knobs: ``BENCH_MEMORY_ROWS`` (the large input, 200,000), ``BENCH_MEMORY_SMALL_ROWS`` (10,000),
``BENCH_MEMORY_MAX_IN_FLIGHT`` (128).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench._common import (
    EmulatorProcess,
    cli_child,
    dataset,
    env_int,
    fresh_dir,
    job_spec,
    rounded,
    write_toml,
)

DEFAULT_ROWS = 200_000
TARGET_MB = 300.0
TARGET_GROWTH = 1.3


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(emulator: EmulatorProcess, rows: int, max_in_flight: int) -> dict[str, Any]:
    """One CLI run on ``rows`` rows: peak RSS, wall time, RSS samples (MB, one a second)."""
    out = fresh_dir(f"memory-{rows}")
    spec = job_spec(input=dataset(rows), output=out, endpoint_url=emulator.url, max_in_flight=max_in_flight)
    spec_path = write_toml(spec, out.with_suffix(".toml"))
    samples: list[float] = []
    with cli_child(["run", str(spec_path), "--no-progress"], name=f"memory-{rows}") as child:
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(1.0):
                rss = _rss_mb(child.pid)
                if rss is not None:
                    samples.append(round(rss, 1))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        child.wait(timeout=3600)
        stop.set()
        watcher.join()
    result = child.result()
    code = result["exit_code"]
    if code != 0:
        raise RuntimeError(f"memory: the {rows:,}-row job exited {code} (log: {child.log_path})")
    wall = child.rusage["wall_s"]
    return {
        "rows": rows,
        "peak_rss_mb": round(result["vmhwm_mb"], 1),
        "wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall, 1),
        "cpu_ms_per_row": rounded(1000 * child.rusage["cpu_s"] / rows),
        "rss_samples_mb": samples[:: max(1, len(samples) // 12)],
    }


def run(
    *, rows: int | None = None, small_rows: int | None = None, max_in_flight: int | None = None
) -> dict[str, Any]:
    rows = rows or env_int("BENCH_MEMORY_ROWS", DEFAULT_ROWS, quick=50_000)
    small_rows = small_rows or env_int("BENCH_MEMORY_SMALL_ROWS", 10_000)
    max_in_flight = max_in_flight or env_int("BENCH_MEMORY_MAX_IN_FLIGHT", 128)
    started = time.monotonic()
    dataset(rows)
    with EmulatorProcess() as emulator:
        small = measure(emulator, small_rows, max_in_flight)
        emulator.reset()
        large = measure(emulator, rows, max_in_flight)
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    return {
        "name": "memory",
        "variant": None if rows == DEFAULT_ROWS else f"{rows:,} rows",
        "title": "Peak memory",
        "checks": [
            {
                "metric": f"peak RSS, {rows:,} rows (MB)",
                "value": large["peak_rss_mb"],
                "target": f"<= {TARGET_MB:g}",
                "passed": large["peak_rss_mb"] <= TARGET_MB,
            },
            {
                "metric": f"peak RSS {rows:,} rows ÷ {small_rows:,} rows",
                "value": rounded(growth),
                "target": f"<= {TARGET_GROWTH}",
                "passed": growth <= TARGET_GROWTH,
            },
        ],
        "figures": {
            "growth_mb_per_100k_rows": round(
                (large["peak_rss_mb"] - small["peak_rss_mb"]) / (rows - small_rows) * 100_000, 2
            ),
            "large": large,
            "small": small,
        },
        "params": {
            "rows": rows,
            "small_rows": small_rows,
            "max_in_flight": max_in_flight,
            "emulator_latency_ms": 0,
        },
        "reproduce": (
            f"BENCH_MEMORY_ROWS={rows} BENCH_MEMORY_SMALL_ROWS={small_rows} "
            f"BENCH_MEMORY_MAX_IN_FLIGHT={max_in_flight} python -m bench memory"
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
