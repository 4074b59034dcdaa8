"""Latency hiding: with a 2 s emulator latency and ``max_in_flight`` 1,024, does the job keep 1,024
requests in flight, i.e. reach the ideal 1,024 / 2 s = 512 rows/s?

The job runs start to finish (client start-up, the first 2 s with nothing back yet, the drain of
the last wave, writing ``results.parquet``), and the figure is rows / wall time of ``run_job``; so a
perfect pool scores a little under 1 (20,000 rows: 39.1 s of waves for ~40 s of run). The steady-state
rate (emulator counters between 20 % and 80 % of the run) is reported beside it.

Two runs: the job with the default limits (adaptive, quota unknown, so concurrency starts at half of
``max_in_flight`` and doubles per round trip up to it), which is the figure checked, and the same job with
``adaptive = false`` (all ``max_in_flight`` from the first second), which shows what the ramp costs.

Knobs: ``BENCH_LATENCY_ROWS`` (20,000), ``BENCH_LATENCY_MS`` (2,000), ``BENCH_LATENCY_MAX_IN_FLIGHT`` (1,024).
"""

from __future__ import annotations

import time
from typing import Any

from bench._common import (
    EmulatorProcess,
    dataset,
    env_int,
    fresh_dir,
    job_spec,
    ok_requests,
    rounded,
    run_child,
    sampler,
)

TARGET = 0.9
VARIANTS: dict[str, dict[str, Any]] = {"default": {}, "fixed": {"adaptive": False}}
"""``default``: the spec's defaults (adaptive, quota unknown); ``fixed``: ``adaptive = false``."""


def steady_rate(
    samples: list[tuple[float, dict[str, Any]]], lo: float = 0.2, hi: float = 0.8
) -> float | None:
    """Billed answers per second between the ``lo`` and ``hi`` fractions of the active span."""
    active = [(t, ok_requests(c)) for t, c in samples]
    active = [(t, n) for t, n in active if n > 0]
    if len(active) < 4:
        return None
    t_start, t_end = active[0][0], active[-1][0]
    a = min(active, key=lambda s: abs(s[0] - (t_start + lo * (t_end - t_start))))
    b = min(active, key=lambda s: abs(s[0] - (t_start + hi * (t_end - t_start))))
    return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else None


def run(
    *, rows: int | None = None, latency_ms: int | None = None, max_in_flight: int | None = None
) -> dict[str, Any]:
    rows = rows or env_int("BENCH_LATENCY_ROWS", 20_000, quick=6_000)
    latency_ms = latency_ms or env_int("BENCH_LATENCY_MS", 2_000)
    max_in_flight = max_in_flight or env_int("BENCH_LATENCY_MAX_IN_FLIGHT", 1_024)
    started = time.monotonic()
    ideal = max_in_flight / (latency_ms / 1000)
    waves = rows / max_in_flight * latency_ms / 1000
    data = dataset(rows)
    runs: dict[str, dict[str, Any]] = {}
    with EmulatorProcess("--latency-ms", str(latency_ms)) as emulator:
        for name, limits in VARIANTS.items():
            spec = job_spec(
                input=data,
                output=fresh_dir(f"latency-{name}"),
                endpoint_url=emulator.url,
                max_in_flight=max_in_flight,
                **limits,
            )
            emulator.reset()
            cpu = emulator.cpu_s()
            with sampler(emulator, 0.5) as samples:
                result = run_child("job", {"spec": spec}, name=f"latency-{name}")
            if result["exit_code"] != 0 or result["ok"] != rows:
                raise RuntimeError(f"latency: the job did not finish cleanly: {result}")
            steady = steady_rate(samples)
            runs[name] = {
                "ratio": rounded(result["rows_per_s"] / ideal),
                "rows_per_s": round(result["rows_per_s"], 1),
                "elapsed_s": round(result["elapsed_s"], 2),
                "steady_rows_per_s": round(steady, 1) if steady else None,
                "steady_ratio": rounded(steady / ideal) if steady else None,
                "runner_cpu_ms_per_row": rounded(result["cpu_ms_per_row"]),
                "runner_peak_rss_mb": round(result["vmhwm_mb"], 1),
                "emulator_cpu_s": round(emulator.cpu_s() - cpu, 1),
            }
    main = runs["default"]
    return {
        "name": "latency",
        "title": "Latency hiding",
        "checks": [
            {
                "metric": f"rows/s ÷ ideal {ideal:g} rows/s (whole run, default limits)",
                "value": main["ratio"],
                "target": f">= {TARGET}",
                "passed": main["ratio"] >= TARGET,
            }
        ],
        "figures": {
            "ideal_rows_per_s": ideal,
            "lower_bound_s": round(waves, 2),
            "default": main,
            "fixed": runs["fixed"],
        },
        "params": {
            "rows": rows,
            "latency_ms": latency_ms,
            "max_in_flight": max_in_flight,
            "default": "adaptive = true, tpm = 0 (AIMD slow start from max_in_flight / 2)",
            "fixed": "adaptive = false (all max_in_flight from the start)",
        },
        "reproduce": (
            f"BENCH_LATENCY_ROWS={rows} BENCH_LATENCY_MS={latency_ms} "
            f"BENCH_LATENCY_MAX_IN_FLIGHT={max_in_flight} python -m bench latency"
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
