"""Job time against the quota-bound limit, on every quota shape the emulator knows.

Bedrock does not document how its tokens-per-minute quota refills, nor whether a job finds it full.
Each scenario gives one emulator route a shape (``quota_shape`` window, bucket or fixed,
``quota_start``, another consumer, the quota changed mid-run, capacity 429s; see docs/emulator.md,
*Quota shapes*)
and runs three clients on it, each on its own route (its own quota) of one emulator: this runner's
two side by side, then the fixed pools (whose storms of 429s would starve the others of CPU):

* **known**: this runner told the quota (``[limits] tpm``);
* **unknown**: this runner not told (``tpm = 0``);
* **fixed**: what most tools do: ``max_in_flight`` (64) fixed workers with exponential backoff
  (``adaptive = false``).

The fixed client gives up the rows its backoff runs out on (throttled to the end: 30-110 of 600,
5-18 %, per scenario in the 2026-11-30 run), which ``bedrock-batch run`` reports as retryable:
"rerun the same command to retry them". So its job is rerun (same spec, same output directory: the
rerun sends only the failed rows) as soon as its previous pass ends, while it still has retryable
failed rows, at most 5 times (``MAX_RERUNS``). Its ``time_s`` is the time to the complete job: the
first pass plus each rerun's process from start to end (interpreter start-up included, as its user
pays it); ``first_pass_s``, ``failed_first_pass`` and ``reruns`` show the first pass beside it. This
runner's clients run once (a failed row misses their target), and their ``time_s`` is that run
(``run_job``, from call to return, as the fixed client's ``first_pass_s``). The emulator's counts
(requests, throttles, billed tokens) cover the reruns too: limit and throttled share are the
complete job's.

Per client: the job's time, the quota-bound limit, their ratio (limit / time: 1.0 is the physics),
the share of requests throttled (quota throttles and capacity throttles apart), failed rows, and rows
billed twice. The limit is ``(billed quota tokens - quota free at the start) / refill rate + one
latency`` (the refill taken piece by piece when the quota changes, and less the other consumer's
share of it: it draws at its rate, so the quota free at the start is all the route's), or the
concurrency bound ``rows x mean latency / max_in_flight`` when that is longer. A rolling
window that starts full frees each charge only a minute after it was booked: its limit is the
whole minutes the job's quota tokens span, plus the rest sent at the concurrency bound. A fixed
window (a counter per calendar minute, here its first minute ending 30 s into the job) gives a whole
minute's quota as each minute opens: its limit spends each at the concurrency bound as it opens,
which a client that paces cannot do (the issue's matrix is the first sixteen cells; these two were
added with the emulator's third shape).

Targets (issue 10): limit / time >= 0.9, <= 2 % of requests throttled (beyond the injected capacity
429s), 0 failed rows, 0 rows billed twice, faster than the fixed client (to its complete job).

Knobs: ``BENCH_QUOTA_ROWS`` (600), ``BENCH_QUOTA_TPM`` (300,000), ``BENCH_QUOTA_MAX_IN_FLIGHT`` (64,
every client's, the fixed pool's workers too), ``BENCH_QUOTA_PARALLEL`` (scenarios run at once, 4),
``BENCH_QUOTA_ONLY`` (scenarios to run, by part of their names, ``;``-separated:
``window, empty;halved``), ``BENCH_LOG_LEVEL`` (``info`` keeps each route's quota decisions in its
job's ``events.jsonl``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from bench._common import (
    SONNET,
    EmulatorProcess,
    dataset,
    env_int,
    fresh_dir,
    job_spec,
    rounded,
    run_jobs,
)

TARGET_RATIO = 0.9
TARGET_THROTTLED = 0.02
MAX_TOKENS = 256
LATENCY_MS = 1500.0
SIGMA = 0.3
PER_TOKEN_MS = 2.0
OUTPUT = (100, 200)
MAX_IN_FLIGHT = 64
ROUND_SCENARIOS = 4
"""Scenarios run at once (their clients side by side): 2 cores serve 8 clients and the emulator."""
STAGGER_S = 2.0
MAX_RERUNS = 5
"""Reruns of a fixed client's job that still has failed rows (``bedrock-batch run`` again)."""
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
OPUS_4_5 = "anthropic.claude-opus-4-5-20251101-v1:0"
MODELS = (SONNET, SONNET_4, OPUS_4_5)
"""Models with a ``global.`` profile and a 5x output burndown: each (model, region) is a quota of its
own, so each (scenario, client) pair gets one (two pairs on one route would share its quota and its
counters: the 18-cell matrix's first run did, and read 3.4 times its limit)."""

SCENARIOS: dict[str, dict[str, Any]] = {
    "window, full": {"quota_shape": "window", "quota_start": "full"},
    "window, empty": {"quota_shape": "window", "quota_start": "empty"},
    "bucket, full": {"quota_shape": "bucket", "quota_start": "full"},
    "bucket, empty": {"quota_shape": "bucket", "quota_start": "empty"},
    "another consumer takes half": {
        "quota_shape": "bucket",
        "quota_start": "full",
        "other_consumer": {"share": 0.5, "pattern": "steady"},
    },
    "quota doubled at 20 s": {"quota_shape": "bucket", "quota_start": "full", "tpm_changes": "x2"},
    "quota halved at 20 s": {"quota_shape": "bucket", "quota_start": "full", "tpm_changes": "x0.5"},
    "2 % capacity throttles": {"quota_shape": "bucket", "quota_start": "full", "throttle_rate": 0.02},
    "fixed window, full": {"quota_shape": "fixed", "quota_start": "full", "quota_reset_s": 30.0},
    "fixed window, empty": {"quota_shape": "fixed", "quota_start": "empty", "quota_reset_s": 30.0},
}
CLIENTS: dict[str, dict[str, Any]] = {
    "known": {"tpm": True, "adaptive": True},
    "unknown": {"tpm": False, "adaptive": True},
    "fixed": {"tpm": False, "adaptive": False},
}
REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-central-1", "eu-west-1", "eu-west-2",
    "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2", "ap-northeast-1",
)  # fmt: skip


def fault_rule(scenario: Mapping[str, Any], tpm: int) -> dict[str, Any]:
    """A scenario as the emulator's fault rule takes it: a change of the quota (``"x2"``) as the
    list of changes it applies, at 20 s."""
    rule = dict(scenario)
    change = rule.pop("tpm_changes", None)
    if change is not None:
        rule["tpm_changes"] = [{"at_s": 20.0, "tpm": int(tpm * float(change[1:]))}]
    return rule


def _routes(tpm: int) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """(scenario, client, model, region, fault rule) for every pair, each on a route of its own."""
    out = []
    pairs = [(s, c) for s in SCENARIOS for c in CLIENTS]
    if len(pairs) > len(MODELS) * len(REGIONS):
        raise ValueError(f"{len(pairs)} scenario/client pairs, only {len(MODELS) * len(REGIONS)} routes")
    for i, (scenario, client) in enumerate(pairs):
        model = MODELS[i // len(REGIONS)]
        region = REGIONS[i % len(REGIONS)]
        rule = fault_rule(SCENARIOS[scenario], tpm)
        rule.update({"profile": f"global.{model}", "region": region, "tpm": tpm})
        out.append((scenario, client, model, region, rule))
    return out


def quota_start(rule: Mapping[str, Any]) -> float:
    """The share of a rule's quota free when it is created (``quota_start``: full, empty or a share)."""
    start = rule.get("quota_start", "full")
    return {"full": 1.0, "empty": 0.0}[start] if isinstance(start, str) else float(start)


def limit_s(
    *,
    billed: float,
    tpm: int,
    rule: dict[str, Any],
    rows: int,
    latency_s: float,
    ceiling: int | None,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> float:
    """The quota-bound limit of one route's job (see the module docstring); a client told ``tpm``
    (``ceiling``) is held to it, even when the quota is raised past it."""
    # a bucket holding less than a minute of its refill (quota_burst_s: quota_sim's only) starts
    # with that much at most
    start = quota_start(rule) * float(rule.get("quota_burst_s", 60.0)) / 60.0
    share = 1.0 - float(rule.get("other_consumer", {}).get("share", 0.0))
    # The other consumer draws its share of the refill as it comes (docs/emulator.md), not a share
    # of what the quota holds at the start: the route may spend all of that. (Taking only its share
    # of the start put the limit 40 % above what both clients ran at.)
    need = billed - start * tpm
    t, rate = 0.0, tpm / 60.0 * share
    for change in rule.get("tpm_changes", []):
        new_tpm = min(float(change["tpm"]), ceiling or math.inf)
        at, new = float(change["at_s"]), new_tpm / 60.0 * share
        if need <= rate * (at - t):
            break
        need -= rate * (at - t)
        t, rate = at, new
    quota_bound = t + max(0.0, need) / rate + latency_s
    concurrency_bound = rows * latency_s / max_in_flight
    if rule.get("quota_shape") == "fixed" and "tpm_changes" not in rule:
        # A fixed window gives a whole minute's quota as each minute opens (the first at
        # ``quota_reset_s``): spent at the concurrency bound, the job waits out the minutes it needs.
        minutes = math.ceil(max(0.0, need) / (tpm * share))
        if minutes:
            rest = (need - (minutes - 1) * tpm * share) / billed
            reset = float(rule.get("quota_reset_s", 60.0))
            quota_bound = reset + 60.0 * (minutes - 1) + rest * concurrency_bound + latency_s
        else:
            quota_bound = latency_s
    if rule.get("quota_shape") == "window" and start == 1.0 and "tpm_changes" not in rule:
        # A rolling window frees a charge only a minute after it was booked: a job of several
        # windows' worth waits out each minute, then sends the rest at the concurrency bound.
        minutes = max(0, math.ceil(billed / (tpm * share)) - 1)
        rest = (billed - minutes * tpm * share) / billed
        quota_bound = 60.0 * minutes + rest * concurrency_bound + latency_s
    return max(quota_bound, concurrency_bound)


def run(*, rows: int | None = None, tpm: int | None = None) -> dict[str, Any]:
    from runner.catalog import find_model

    rows = rows or env_int("BENCH_QUOTA_ROWS", 600)
    tpm = tpm or env_int("BENCH_QUOTA_TPM", 300_000)
    max_in_flight = env_int("BENCH_QUOTA_MAX_IN_FLIGHT", MAX_IN_FLIGHT)
    parallel = env_int("BENCH_QUOTA_PARALLEL", ROUND_SCENARIOS)
    only = [w.strip() for w in os.environ.get("BENCH_QUOTA_ONLY", "").split(";") if w.strip()]
    started = time.monotonic()
    data = dataset(rows)
    routes = _routes(tpm)
    if only:
        routes = [r for r in routes if any(w in r[0] for w in only)]
    faults = {
        "seed": 11,
        "defaults": {
            "latency": {"dist": "lognormal", "median_ms": LATENCY_MS, "sigma": SIGMA},
            "per_output_token_ms": PER_TOKEN_MS,
            "output_tokens": {"min": OUTPUT[0], "max": OUTPUT[1]},
        },
        "routes": [rule for *_, rule in routes],
    }
    mean_latency_s = (LATENCY_MS * math.exp(SIGMA**2 / 2) + PER_TOKEN_MS * sum(OUTPUT) / 2) / 1000
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with EmulatorProcess() as emulator:
        emulator.put_faults(faults)
        # Rounds on one emulator: this runner's clients four scenarios at a time, then the fixed
        # pools, whose storms of 429s (thousands a minute each) would starve the others of CPU.
        scenarios = list(dict.fromkeys(r[0] for r in routes))
        rounds = [
            (clients, scenarios[i : i + parallel])
            for clients in (("known", "unknown"), ("fixed",))
            for i in range(0, len(scenarios), parallel)
        ]
        for round_clients, round_scenarios in rounds:
            specs: dict[str, dict[str, Any]] = {}
            keys: dict[str, tuple[str, str]] = {}
            for index, (scenario, client, model, region, _) in enumerate(routes):
                if client not in round_clients or scenario not in round_scenarios:
                    continue
                c = CLIENTS[client]
                name = f"quota-{index:02d}"
                keys[name] = (scenario, client)
                specs[name] = job_spec(
                    input=data,
                    output=fresh_dir(name),
                    endpoint_url=emulator.url,
                    model=model,
                    region=region,
                    endpoints=("global",),
                    max_in_flight=max_in_flight,
                    tpm=tpm if c["tpm"] else 0,
                    adaptive=c["adaptive"],
                    max_tokens=MAX_TOKENS,
                )
            # The fixed client is rerun while rows failed: its time is that of a complete job.
            reruns = MAX_RERUNS if "fixed" in round_clients else 0
            ran = run_jobs(specs, stagger_s=STAGGER_S, max_reruns=reruns)
            for name, result in ran.items():
                results[keys[name]] = result
        counters = emulator.counters()
    matrix: dict[str, dict[str, Any]] = {}
    checks = []
    for scenario, client, model, region, rule in routes:
        route = f"global.{model}@{region}"
        burndown = find_model(model)[0].output_burndown
        t = counters.get("tokens", {}).get(route, {})
        billed = t.get("input", 0) + t.get("cache_write", 0) + burndown * t.get("output", 0)
        req = counters.get("requests", {}).get(route, {})
        n = sum(req.values())
        thr = counters.get("throttles", {}).get(route, {})
        quota_thr, cap_thr = thr.get("quota", 0), thr.get("capacity", 0)
        r = results.get((scenario, client), {})
        elapsed = float(r.get("elapsed_s") or math.inf)
        failed = r.get("failed")
        passes = r.get("passes", [])
        if passes:  # the first pass, then each rerun's process from its start to its end
            elapsed += sum(float(p["wall_s"]) for p in passes[1:])
            failed = passes[-1]["progress"]["failed"]
        ceiling = tpm if CLIENTS[client]["tpm"] else None
        lim = limit_s(
            billed=billed,
            tpm=tpm,
            rule=rule,
            rows=rows,
            latency_s=mean_latency_s,
            ceiling=ceiling,
            max_in_flight=max_in_flight,
        )
        row = {
            "time_s": rounded(elapsed, 1),
            "limit_s": rounded(lim, 1),
            "ratio": rounded(lim / elapsed if elapsed else 0.0),
            "requests": n,
            "throttled_share": rounded(quota_thr / n if n else 0.0, 4),
            "capacity_429_share": rounded(cap_thr / n if n else 0.0, 4),
            "failed": failed,
            "ok": passes[-1]["progress"]["ok"] if passes else r.get("ok"),
        }
        if client == "fixed":
            row["first_pass_s"] = rounded(float(r.get("elapsed_s") or math.inf), 1)
            row["failed_first_pass"] = r.get("failed")
            row["reruns"] = r.get("reruns")
        matrix.setdefault(scenario, {})[client] = row
    for scenario, by_client in matrix.items():
        for client in ("known", "unknown"):
            row = by_client[client]
            fixed = by_client["fixed"]
            checks.append(
                {
                    "metric": f"{scenario}, tpm {client}: limit / time; throttled; failed; "
                    "vs fixed (complete job)",
                    "value": f"{row['ratio']}; {row['throttled_share']:.1%}; {row['failed']}; "
                    f"{row['time_s']} s vs {fixed['time_s']} s (first pass {fixed['first_pass_s']} s, "
                    f"{fixed['failed_first_pass']} failed, {fixed['reruns']} reruns"
                    + (f", {fixed['failed']} still failed)" if fixed["failed"] else ")"),
                    "target": ">= 0.9; <= 2 %; 0; faster",
                    "passed": bool(
                        row["ratio"] >= TARGET_RATIO
                        and row["throttled_share"] <= TARGET_THROTTLED
                        and row["failed"] == 0
                        and row["time_s"] < fixed["time_s"]
                    ),
                }
            )
    billed_twice = sum(1 for n in counters.get("bodies", {}).values() if n > 1)
    return {
        "name": "quota",
        "title": "Job time against the quota-bound limit, every quota shape",
        "checks": checks,
        "figures": {"matrix": matrix, "bodies_billed_twice": billed_twice},
        "params": {
            "rows": rows,
            "tpm": tpm,
            "model": f"{SONNET} / {SONNET_4} (burndown 5)",
            "max_tokens": MAX_TOKENS,
            "max_in_flight": max_in_flight,
            "latency": f"lognormal median {LATENCY_MS:g} ms, sigma {SIGMA}, + {PER_TOKEN_MS:g} ms per "
            f"output token; {OUTPUT[0]}-{OUTPUT[1]} output tokens",
        },
        "reproduce": f"BENCH_QUOTA_ROWS={rows} BENCH_QUOTA_TPM={tpm} "
        f"BENCH_QUOTA_MAX_IN_FLIGHT={max_in_flight} python -m bench quota",
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
