"""The quota model alone, on bench_quota's cells, over many seeds: what one end-to-end run cannot say.

bench_quota runs each cell once, end to end (the emulator over HTTP, the CLI, a fixed pool beside
it), and a cell's share of throttled requests moves by a few tenths of a per cent from run to run:
one run cannot tell a change that helps from the noise, nor show a tail that comes one run in
twenty. This runs :class:`runner.quota.RouteQuota` alone in ``tests/unit/quota_sim.py`` (a
discrete-time model of one route: a token bucket or a rolling window booking reservations and
settlements as documented, 64 slots that retry a throttled row at once) on bench_quota's route
(300,000 TPM, 600 rows reserving 656 quota tokens and settling to 1,150, answers in 1.8 s), each
cell with ``tpm`` given and unknown, over 30 seeds x 2 read lags (none, and 150 ms on average: a
busy client reading its 429s late). Per cell: the mean and the worst of limit / time (the limit as
bench_quota computes it, from the mean answer time) and of the share of requests the quota refused
(capacity 429s left out), and how many runs meet both targets.

A model of a model: its quotas are exact and its answers come back on time; its other consumer
draws its share of the refill whenever the bucket holds any, and a drained window is one spread
over the last minute. It shows the controller's logic, its tails and its regressions in half a
minute on 2 cores; it says nothing of Bedrock, and the headline stays bench_quota's.

bench_quota's cells include a third shape, a fixed window (a counter per minute, the emulator's
``quota_shape = "fixed"``), found full and found used up, its minute ending 30 s into the job: its
limit spends each minute's quota at the concurrency bound as the minute opens, which a controller
that paces cannot do (it learns the quota as a rate), so those cells measure how far a bursty
shape's limit is from a paced one, and whether a minute that stays closed costs a storm.

Six cells are the model's alone (bench_quota has no such route): 10 % capacity 429s on the same
full bucket, and on a route with no quota at all (5-10 % is where the controller is weakest); a
window and a bucket found 30 % free (a crashed run, another job: the window's charges leave it over
the next minute). The limit of a window not found full is the bucket's, a little optimistic: the
route's own charges booked as the job starts free the window only a minute later. Last, token
buckets whose capacity is one second and twenty seconds of their refill, not a minute
(``quota_burst_s``, quota_sim's alone: the emulator's bucket holds a minute): the first admits no
startup burst, and an overshoot's measure of its refill reads low; the second's refused burst reads a
minute of what it took, 38 % of its refill.

**The issue's second trial**, at its own speed: no quota, 30 % capacity 429s, 300 rows, answers in
75 ms. Its limit is the concurrency bound (0.37 s), which no client meets with 30 % of its requests
refused, so its ratios are small both ways; what it shows is the tail: a run or two in twenty held
near the rate's floor for minutes (the worst ratio), where the same rows with ``tpm`` given take a
few seconds.

**Overnight**: a few cells again with ten times the rows (6,000: about 23 minutes of quota), over
fewer seeds. bench_quota's jobs last a minute or two, so what they show is mostly how the controller
starts; what a small bias does over an hour (capacity 429s that each cut the rate a little, probes
that win it back or not) shows only in a long job.

**Short answers**: a few cells again with answers in 0.5 s instead of 1.8 s (short outputs:
classification, extraction). Settlements then land while the startup still ramps up, and a full
quota spent in the first seconds looked like a drained one; bench_quota's 1.8 s never shows it.

**max_tokens above the answers**: the full bucket and window again with ``max_tokens`` 1,024 (the
runner's default: 1,424 quota tokens reserved, 1,150 settled) and 4,096 (4,496 reserved) for the same
answers: what most jobs reserve, for bench_quota's ``max_tokens`` 256 is tight. A window then holds, for each
request in flight, a reservation four times its settled charge, just as the window guard books it;
the guard's probe past it needs a *last filler* (``runner/quota.py``), without which a bucket ran
at a window's pace. The limit is bench_quota's, from the settled charges: it does not count what
the reservations in flight hold back, so it is a little optimistic here.

Targets, on the means: limit / time >= 0.9, at most 2 % of requests refused by the quota.

Knobs: ``BENCH_QUOTA_MODEL_SEEDS`` (30; the short-answer cells too), ``BENCH_QUOTA_MODEL_OVERNIGHT_SEEDS``
(4).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench._common import env_int
from bench.bench_quota import SCENARIOS, TARGET_RATIO, TARGET_THROTTLED, fault_rule, limit_s, quota_start

TPM = 300_000
ROUTE: dict[str, Any] = {"tpm": TPM, "rows": 600, "reserved": 656, "settled": 1150, "latency_s": 1.8}
LATENCY_SIGMA = 0.3
"""quota_sim's answer times are lognormal around ``latency_s`` with this sigma."""
LAGS = (0.0, 0.15)
WORKERS = 2
METRIC = "mean limit / time; mean throttled by the quota; worst of each; runs meeting both"


MODEL_ONLY: dict[str, dict[str, Any]] = {
    "10 % capacity throttles": {"quota_shape": "bucket", "quota_start": "full", "throttle_rate": 0.1},
    "10 % capacity throttles, no quota": {
        "quota_shape": "bucket",
        "quota_start": "full",
        "throttle_rate": 0.1,
        "tpm": 10**9,
    },
    "window, 30 % free": {"quota_shape": "window", "quota_start": 0.3},
    "bucket, 30 % free": {"quota_shape": "bucket", "quota_start": 0.3},
    "bucket with a 1 s burst, full": {"quota_shape": "bucket", "quota_start": "full", "quota_burst_s": 1.0},
    "bucket with a 20 s burst, full": {"quota_shape": "bucket", "quota_start": "full", "quota_burst_s": 20.0},
}
CELLS = {**SCENARIOS, **MODEL_ONLY}
OVERNIGHT_ROWS = 6_000
OVERNIGHT: dict[str, dict[str, Any]] = {
    "bucket, full": SCENARIOS["bucket, full"],
    "window, full": SCENARIOS["window, full"],
    "another consumer takes half": SCENARIOS["another consumer takes half"],
    "2 % capacity throttles": SCENARIOS["2 % capacity throttles"],
    "2 % capacity throttles, window": {**SCENARIOS["2 % capacity throttles"], "quota_shape": "window"},
}
SHORT_LATENCY_S = 0.5
SHORT = ["bucket, full", "window, full", "another consumer takes half", "quota halved at 20 s"]
TRIAL_ROWS = 300
TRIAL_LATENCY_S = 0.075
TRIAL: dict[str, dict[str, Any]] = {
    "30 % capacity throttles, no quota": {
        **MODEL_ONLY["10 % capacity throttles, no quota"],
        "throttle_rate": 0.3,
    },
}
"""The issue's second trial (its 5 % of 503s left out: quota_sim has none)."""
LONG_MAX_TOKENS = (1_024, 4_096)
"""``max_tokens`` above the answers: the runner's default (1,024), and 4,096, for the same answers
(the route's reservation is its input plus 256), so the service holds a reservation 1.2 and 3.9
times the answer's settled charge while it runs."""
LONG: dict[str, dict[str, Any]] = {
    "bucket, full": SCENARIOS["bucket, full"],
    "window, full": SCENARIOS["window, full"],
}
RULES = {**CELLS, **OVERNIGHT, **TRIAL}
"""Every cell's rule by name (the short-answer cells are bench_quota's)."""


def _sim_kwargs(rule: dict[str, Any]) -> dict[str, Any]:
    """quota_sim's arguments for a cell's rule (bench_quota's emulator fault rule)."""
    kwargs: dict[str, Any] = {
        "shape": rule["quota_shape"],
        "start": quota_start(rule),
        "other_share": float(rule.get("other_consumer", {}).get("share", 0.0)),
        "capacity_429": float(rule.get("throttle_rate", 0.0)),
        "tpm": float(rule.get("tpm", TPM)),
        "reset_s": float(rule.get("quota_reset_s", 60.0)),
        "burst_s": float(rule.get("quota_burst_s", 60.0)),
    }
    for change in rule.get("tpm_changes", []):  # one change at most, as bench_quota's
        kwargs["tpm_change"] = (float(change["at_s"]), float(change["tpm"]))
    return kwargs


Job = tuple[str, bool, int, float, int, float, int]
"""(scenario, known, seed, read lag, rows, answer time, tokens reserved)"""


def _one(job: Job) -> tuple[str, bool, int, float, int, float, float]:
    """One run: (scenario, known, rows, answer time, reserved, limit / time, share the quota
    refused)."""
    from tests.unit.quota_sim import run

    scenario, known, seed, lag, rows, latency_s, reserved = job
    rule = fault_rule(RULES[scenario], TPM)
    tpm = int(rule.get("tpm", TPM))
    route = {**ROUTE, "rows": rows, "latency_s": latency_s, "reserved": reserved}
    out = run(known=known, seed=seed, lag_s=lag, **{**route, **_sim_kwargs(rule)})
    latency = latency_s * math.exp(LATENCY_SIGMA**2 / 2)  # the lognormal's mean
    limit = limit_s(
        billed=rows * ROUTE["settled"],
        tpm=tpm,
        rule=rule,
        rows=rows,
        latency_s=latency,
        ceiling=tpm if known else None,
    )
    return (
        scenario,
        known,
        rows,
        latency_s,
        reserved,
        limit / out.seconds,
        (out.throttled - out.capacity) / out.requests,
    )


def run(*, seeds: int | None = None, overnight_seeds: int | None = None) -> dict[str, Any]:
    seeds = seeds or env_int("BENCH_QUOTA_MODEL_SEEDS", 30)
    overnight_seeds = overnight_seeds or env_int("BENCH_QUOTA_MODEL_OVERNIGHT_SEEDS", 4, quick=1)
    started = time.monotonic()
    reserved = ROUTE["reserved"]
    sections = [
        (list(CELLS), ROUTE["rows"], ROUTE["latency_s"], reserved, seeds, ""),
        (SHORT, ROUTE["rows"], SHORT_LATENCY_S, reserved, seeds, f"answers in {SHORT_LATENCY_S:g} s: "),
        (
            list(OVERNIGHT),
            OVERNIGHT_ROWS,
            ROUTE["latency_s"],
            reserved,
            overnight_seeds,
            f"overnight ({OVERNIGHT_ROWS:,} rows): ",
        ),
        (
            list(TRIAL),
            TRIAL_ROWS,
            TRIAL_LATENCY_S,
            reserved,
            seeds,
            f"issue's trial ({TRIAL_ROWS} rows, answers in {TRIAL_LATENCY_S * 1000:g} ms): ",
        ),
        *(
            (
                list(LONG),
                ROUTE["rows"],
                ROUTE["latency_s"],
                ROUTE["reserved"] - 256 + max_tokens,
                seeds,
                f"max_tokens {max_tokens:,} ({ROUTE['reserved'] - 256 + max_tokens:,} reserved, "
                f"{ROUTE['settled']:,} settled): ",
            )
            for max_tokens in LONG_MAX_TOKENS
        ),
    ]
    jobs: list[Job] = [
        (scenario, known, seed, lag, rows, latency, reserved)
        for cells, rows, latency, reserved, n, _ in sections
        for scenario in cells
        for known in (True, False)
        for seed in range(1, n + 1)
        for lag in LAGS
    ]
    with ProcessPoolExecutor(max_workers=WORKERS) as pool:
        # The long jobs first: a worker left with one of them at the end idles the other core.
        results = list(pool.map(_one, sorted(jobs, key=lambda job: -job[4]), chunksize=1))
    checks, figures = [], {}
    cells = [
        (scenario, rows, latency, reserved, prefix)
        for names, rows, latency, reserved, _, prefix in sections
        for scenario in names
    ]
    for scenario, rows, latency, reserved, prefix in cells:
        for known in (True, False):
            key = (scenario, known, rows, latency, reserved)
            cell = [(ratio, thr) for s, k, n, lat, res, ratio, thr in results if (s, k, n, lat, res) == key]
            ratio = sum(r for r, _ in cell) / len(cell)
            throttled = sum(t for _, t in cell) / len(cell)
            worst_ratio = min(r for r, _ in cell)
            worst_throttled = max(t for _, t in cell)
            meeting = sum(1 for r, t in cell if r >= TARGET_RATIO and t <= TARGET_THROTTLED)
            name = f"{prefix}{scenario}, tpm {'known' if known else 'unknown'}"
            checks.append(
                {
                    "metric": f"{name}: {METRIC}",
                    "value": (
                        f"{ratio:.3f}; {throttled:.2%}; {worst_ratio:.3f}, {worst_throttled:.2%}; "
                        f"{meeting} of {len(cell)}"
                    ),
                    "target": f">= {TARGET_RATIO}; <= {TARGET_THROTTLED * 100:.0f} % (means)",
                    "passed": ratio >= TARGET_RATIO and throttled <= TARGET_THROTTLED,
                }
            )
            figures[name] = {
                "mean_ratio": round(ratio, 4),
                "mean_throttled": round(throttled, 5),
                "worst_ratio": round(worst_ratio, 4),
                "worst_throttled": round(worst_throttled, 5),
                "runs_meeting_both": meeting,
                "runs": len(cell),
            }
    return {
        "name": "quota_model",
        "title": "The quota model alone, every quota shape, many seeds",
        "checks": checks,
        "figures": figures,
        "params": {
            "route": ROUTE,
            "seeds": seeds,
            "overnight": {"rows": OVERNIGHT_ROWS, "seeds": overnight_seeds},
            "short_answers": {"latency_s": SHORT_LATENCY_S, "cells": SHORT},
            "issue_trial": {"rows": TRIAL_ROWS, "latency_s": TRIAL_LATENCY_S, "cells": list(TRIAL)},
            "long_max_tokens": {
                "max_tokens": LONG_MAX_TOKENS,
                "reserved": [ROUTE["reserved"] - 256 + n for n in LONG_MAX_TOKENS],
                "cells": list(LONG),
            },
            "lags_s": list(LAGS),
            "model": "tests/unit/quota_sim.py",
        },
        "reproduce": (
            f"BENCH_QUOTA_MODEL_SEEDS={seeds} BENCH_QUOTA_MODEL_OVERNIGHT_SEEDS={overnight_seeds} "
            "python -m bench quota_model"
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
