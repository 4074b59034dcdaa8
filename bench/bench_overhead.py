"""Overhead: rows/s through the whole pipeline vs bare ``invoke_model`` calls, and CPU per row.

Against a zero-latency emulator (its own process), in one run and alternating, so drift of a noisy
machine hits both sides alike:

* **bare**: the job's own aioboto3 client (``AioBotoTransport.open``, ``runner.bedrock.client_config``)
  sending the same request bodies with ``max_in_flight`` workers; the bodies are built beforehand;
* **pipeline**: ``run_job`` on the same input and concurrency: Parquet read, request building,
  admission, routing, retries, journal, part files and ``results.parquet`` included.

Target: pipeline rows/s >= 0.8 x bare calls/s. CPU per row is the runner process's CPU time over
``run_job`` divided by rows (the mission's bar: well under 1 ms), beside the CPU of one bare call.

Knobs: ``BENCH_OVERHEAD_ROWS`` (20,000), ``BENCH_OVERHEAD_MAX_IN_FLIGHT`` (128),
``BENCH_OVERHEAD_ROUNDS`` (2: bare, pipeline, bare, pipeline).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench._common import EmulatorProcess, dataset, env_int, fresh_dir, job_spec, rounded, run_child

TARGET_RATIO = 0.8
TARGET_CPU_MS = 1.0


def run(
    *, rows: int | None = None, max_in_flight: int | None = None, rounds: int | None = None
) -> dict[str, Any]:
    rows = rows or env_int("BENCH_OVERHEAD_ROWS", 20_000, quick=5_000)
    max_in_flight = max_in_flight or env_int("BENCH_OVERHEAD_MAX_IN_FLIGHT", 128)
    rounds = rounds or env_int("BENCH_OVERHEAD_ROUNDS", 2, quick=1)
    started = time.monotonic()
    data = dataset(rows)
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "job": []}
    with EmulatorProcess() as emulator:
        for i in range(rounds):
            for kind in ("bare", "job"):
                out = fresh_dir(f"overhead-{kind}-{i}")
                spec = job_spec(
                    input=data, output=out, endpoint_url=emulator.url, max_in_flight=max_in_flight
                )
                emu_cpu = emulator.cpu_s()
                result = run_child(kind, {"spec": spec}, name=f"overhead-{kind}-{i}")
                result["emulator_cpu_s"] = emulator.cpu_s() - emu_cpu
                if kind == "job" and (result["exit_code"] != 0 or result["ok"] != rows):
                    raise RuntimeError(f"overhead: the job did not finish cleanly: {result}")
                runs[kind].append(result)

    def median(kind: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[kind]))

    bare_rps, job_rps = median("bare", "rows_per_s"), median("job", "rows_per_s")
    bare_cpu, job_cpu = median("bare", "cpu_ms_per_row"), median("job", "cpu_ms_per_row")
    ratio = job_rps / bare_rps
    emulator_ms = statistics.median(
        1000 * r["emulator_cpu_s"] / r["rows"] for kind in runs for r in runs[kind]
    )
    return {
        "name": "overhead",
        "title": "Pipeline overhead vs bare invoke_model",
        "checks": [
            {
                "metric": "pipeline rows/s ÷ bare calls/s",
                "value": rounded(ratio),
                "target": f">= {TARGET_RATIO}",
                "passed": ratio >= TARGET_RATIO,
            },
            {
                "metric": "runner CPU per row (ms)",
                "value": rounded(job_cpu),
                "target": f"< {TARGET_CPU_MS:g} (well under)",
                "passed": job_cpu < TARGET_CPU_MS,
            },
        ],
        "figures": {
            "pipeline_rows_per_s": round(job_rps, 1),
            "bare_calls_per_s": round(bare_rps, 1),
            "pipeline_cpu_ms_per_row": rounded(job_cpu),
            "bare_cpu_ms_per_call": rounded(bare_cpu),
            "cpu_ratio_bare_over_pipeline": rounded(bare_cpu / job_cpu),
            "pipeline_extra_cpu_ms_per_row": rounded(job_cpu - bare_cpu),
            "emulator_cpu_ms_per_request": rounded(emulator_ms),
            "per_round_ratio": [
                rounded(j["rows_per_s"] / b["rows_per_s"])
                for b, j in zip(runs["bare"], runs["job"], strict=True)
            ],
            "pipeline_peak_rss_mb": round(max(r["vmhwm_mb"] for r in runs["job"]), 1),
        },
        "params": {"rows": rows, "max_in_flight": max_in_flight, "rounds": rounds, "emulator_latency_ms": 0},
        "reproduce": (
            f"BENCH_OVERHEAD_ROWS={rows} BENCH_OVERHEAD_MAX_IN_FLIGHT={max_in_flight} "
            f"BENCH_OVERHEAD_ROUNDS={rounds} python -m bench overhead"
        ),
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }
