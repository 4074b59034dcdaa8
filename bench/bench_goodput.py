"""Goodput under a tokens-per-minute quota: how much of the quota a job turns into billed tokens.

One emulator (its own process) with realistic Claude Sonnet 4.5 behaviour: lognormal latency (median
1.5 s, sigma 0.5) plus 8 ms per output token, answers of 150-450 tokens (``max_tokens`` 1,024), and a
quota of ``BENCH_GOODPUT_TPM`` tokens per rolling 60 s on each route, booked the way Bedrock books it
(``input + cache_write + max_tokens`` reserved at admission, settled to ``input + cache_write + 5 x
output``: Sonnet 4.5's output burndown). Three clients run side by side, each on its own route (the
``global.`` profile called from three regions, so three separate quotas), each in its own process:

* **a**: this runner told the quota (``[limits] tpm`` = quota, adaptive on, ``max_in_flight`` 256);
* **b**: this runner not told (``tpm = 0``: AIMD on throttles only, ``max_in_flight`` 256);
* **c**: what most tools do: 64 fixed workers, exponential backoff with jitter, no quota model
  (``adaptive = false``, ``tpm = 0``, ``max_in_flight = 64``; the same retry policy as a and b).

After a warm-up longer than the 60 s window (the first minute lets a burst through an empty window),
the emulator's counters are read over ``BENCH_GOODPUT_MEASURE_S`` seconds of steady state:
goodput = quota tokens billed per minute (``input + cache_write + 5 x output`` of answered requests) /
quota, and the share of InvokeModel requests answered ThrottlingException.

Target for a: goodput >= 0.95 with <= 2 % of requests throttled.

Knobs: ``BENCH_GOODPUT_TPM`` (1,000,000), ``BENCH_GOODPUT_WARMUP_S`` (75), ``BENCH_GOODPUT_MEASURE_S`` (180).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from bench._common import (
    PYTHON,
    SONNET,
    Child,
    EmulatorProcess,
    dataset,
    env_int,
    fresh_dir,
    job_spec,
    rounded,
    sampler,
)

TARGET_GOODPUT = 0.95
TARGET_THROTTLED = 0.02
PROFILE = "global." + SONNET

CLIENTS: dict[str, dict[str, Any]] = {
    "a": {"region": "us-east-1", "tpm": True, "adaptive": True, "max_in_flight": 256,
          "label": "runner, quota known (tpm = quota, adaptive)"},
    "b": {"region": "us-west-2", "tpm": False, "adaptive": True, "max_in_flight": 256,
          "label": "runner, quota unknown (adaptive only)"},
    "c": {"region": "eu-west-1", "tpm": False, "adaptive": False, "max_in_flight": 64,
          "label": "64 fixed workers + exponential backoff, no quota model"},
}  # fmt: skip


def emulator_faults(tpm: int) -> dict[str, Any]:
    return {
        "seed": 7,
        "defaults": {
            "latency": {"dist": "lognormal", "median_ms": 1500, "sigma": 0.5, "max_ms": 20000},
            "per_output_token_ms": 8,
            "output_tokens": {"min": 150, "max": 450},
        },
        "routes": [{"profile": "global.*", "region": c["region"], "tpm": tpm} for c in CLIENTS.values()],
    }


def quota_tokens(counters: dict[str, Any], route: str, burndown: float) -> float:
    t = counters.get("tokens", {}).get(route)
    if not t:
        return 0.0
    return float(t["input"] + t["cache_write"] + burndown * t["output"])


def requests_of(counters: dict[str, Any], route: str) -> tuple[int, int]:
    """(all InvokeModel requests, throttled ones) of a route."""
    r: dict[str, int] = counters.get("requests", {}).get(route, {})
    return sum(r.values()), r.get("ThrottlingException", 0)


def run(
    *, tpm: int | None = None, warmup_s: int | None = None, measure_s: int | None = None
) -> dict[str, Any]:
    from runner.catalog import find_model

    tpm = tpm or env_int("BENCH_GOODPUT_TPM", 1_000_000)
    warmup_s = warmup_s or env_int("BENCH_GOODPUT_WARMUP_S", 75, quick=5)
    measure_s = measure_s or env_int("BENCH_GOODPUT_MEASURE_S", 180, quick=60)
    burndown = find_model(SONNET)[0].output_burndown
    started = time.monotonic()
    data = dataset(20_000)
    results: dict[str, Any] = {}
    with EmulatorProcess() as emulator:
        emulator.put_faults(emulator_faults(tpm))
        children: dict[str, Child] = {}
        try:
            for name, c in CLIENTS.items():
                spec = job_spec(
                    input=data,
                    output=fresh_dir(f"goodput-{name}"),
                    endpoint_url=emulator.url,
                    model=SONNET,
                    region=c["region"],
                    endpoints=("global",),
                    max_in_flight=c["max_in_flight"],
                    tpm=tpm if c["tpm"] else 0,
                    adaptive=c["adaptive"],
                    max_tokens=1024,
                )
                import json

                children[name] = Child(
                    [PYTHON, "-m", "bench._child", "job"],
                    name=f"goodput-{name}",
                    stdin=json.dumps({"spec": spec, "grace_s": 1.0, "log_level": "info"}),
                )
            with sampler(emulator, 1.0) as samples:
                time.sleep(warmup_s + measure_s + 1.0)
            for child in children.values():
                child.signal(signal.SIGTERM)
            for name, child in children.items():
                child.wait(timeout=120)
                try:
                    results[name] = child.result()
                except RuntimeError:
                    results[name] = {}
        finally:
            for child in children.values():
                child.kill() if child.returncode is None else None
    t0 = samples[0][0]
    begin = min(samples, key=lambda s: abs(s[0] - (t0 + warmup_s)))
    end = min(samples, key=lambda s: abs(s[0] - (t0 + warmup_s + measure_s)))
    minutes = (end[0] - begin[0]) / 60
    clients: dict[str, Any] = {}
    for name, c in CLIENTS.items():
        route = f"{PROFILE}@{c['region']}"
        tokens = quota_tokens(end[1], route, burndown) - quota_tokens(begin[1], route, burndown)
        all_end, thr_end = requests_of(end[1], route)
        all_begin, thr_begin = requests_of(begin[1], route)
        n, throttled = all_end - all_begin, thr_end - thr_begin
        per_minute = [
            round(
                (quota_tokens(b[1], route, burndown) - quota_tokens(a[1], route, burndown))
                / ((b[0] - a[0]) / 60)
                / tpm,
                3,
            )
            for a, b in _minutes(samples, t0)
        ]
        runner = results.get(name, {})
        clients[name] = {
            "label": c["label"],
            "goodput": rounded(tokens / minutes / tpm),
            "throttled_share": rounded(throttled / n if n else 0.0, 4),
            "requests": n,
            "throttled": throttled,
            "ok": n - throttled,
            "quota_tokens_per_min": round(tokens / minutes),
            "goodput_by_minute": per_minute,
            "runner_rows": runner.get("rows"),
            "runner_exit": runner.get("exit_code"),
        }
    a = clients["a"]
    return {
        "name": "goodput",
        "title": "Goodput under a TPM quota",
        "checks": [
            {
                "metric": "a: quota tokens billed per minute ÷ quota",
                "value": a["goodput"],
                "target": f">= {TARGET_GOODPUT}",
                "passed": a["goodput"] >= TARGET_GOODPUT,
            },
            {
                "metric": "a: share of requests throttled",
                "value": a["throttled_share"],
                "target": f"<= {TARGET_THROTTLED}",
                "passed": a["throttled_share"] <= TARGET_THROTTLED,
            },
        ],
        "figures": clients,
        "params": {
            "tpm": tpm,
            "warmup_s": warmup_s,
            "measure_s": measure_s,
            "model": SONNET,
            "output_burndown": burndown,
            "max_tokens": 1024,
            "latency": "lognormal median 1.5 s, sigma 0.5, + 8 ms per output token; 150-450 output tokens",
        },
        "reproduce": (
            f"BENCH_GOODPUT_TPM={tpm} BENCH_GOODPUT_WARMUP_S={warmup_s} "
            f"BENCH_GOODPUT_MEASURE_S={measure_s} python -m bench goodput"
        ),
        "seconds": round(time.monotonic() - started, 1),
    }


def _minutes(
    samples: list[tuple[float, dict[str, Any]]], t0: float
) -> list[tuple[tuple[float, dict[str, Any]], tuple[float, dict[str, Any]]]]:
    """Consecutive whole-minute spans of the run: [(start sample, end sample), ...]."""
    spans = []
    edge = t0
    while edge + 60 <= samples[-1][0] + 0.5:
        a = min(samples, key=lambda s: abs(s[0] - edge))
        b = min(samples, key=lambda s: abs(s[0] - (edge + 60)))
        spans.append((a, b))
        edge += 60
    return spans
