"""Several source regions: the account's whole quota, not one region's (issue 15).

Bedrock's on-demand quotas are per model per *source region*: the ``global.`` profile called from
three regions draws on three quotas. One emulator gives every (profile, region) route its own token
bucket, started empty so the quota alone sets the pace; three jobs run side by side on the same
rows, each on regions of its own (so no two share a quota):

* **one**: one region, ``tpm`` = T;
* **three**: three regions, ``tpm`` = T each;
* **uneven**: three regions with quotas 1x, 2x and 0.5x T (a raised quota in one region only).

Targets: *three* takes <= 0.37 of *one*'s time (>= 2.7x), <= 2 % of requests throttled, 0 failed
rows; in *uneven*, each region's share of the quota tokens billed is within 10 % of its share of
the total quota.

Knobs: ``BENCH_REGIONS_ROWS`` (600), ``BENCH_REGIONS_TPM`` (300,000).
"""

from __future__ import annotations

import json
import time
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

TARGET_SPEEDUP_RATIO = 0.37
TARGET_THROTTLED = 0.02
TARGET_SHARE_GAP = 0.10
JOBS: dict[str, list[tuple[str, float]]] = {
    "one": [("eu-west-1", 1.0)],
    "three": [("us-east-1", 1.0), ("us-east-2", 1.0), ("us-west-2", 1.0)],
    "uneven": [("ap-northeast-1", 1.0), ("ap-southeast-2", 2.0), ("ap-south-1", 0.5)],
}


def run(*, rows: int | None = None, tpm: int | None = None) -> dict[str, Any]:
    from runner.catalog import find_model

    rows = rows or env_int("BENCH_REGIONS_ROWS", 600)
    tpm = tpm or env_int("BENCH_REGIONS_TPM", 300_000)
    started = time.monotonic()
    data = dataset(rows)
    burndown = find_model(SONNET)[0].output_burndown
    rules = [
        {"profile": f"global.{SONNET}", "region": region, "tpm": int(tpm * weight)}
        for regions in JOBS.values()
        for region, weight in regions
    ]
    faults = {
        "seed": 5,
        "defaults": {
            "latency": {"dist": "lognormal", "median_ms": 1500, "sigma": 0.3},
            "per_output_token_ms": 2,
            "output_tokens": {"min": 100, "max": 200},
            "quota_shape": "bucket",
            "quota_start": "empty",
        },
        "routes": rules,
    }
    with EmulatorProcess() as emulator:
        emulator.put_faults(faults)
        specs: dict[str, dict[str, Any]] = {}
        for name, regions in JOBS.items():
            spec = job_spec(
                input=data,
                output=fresh_dir(f"regions-{name}"),
                endpoint_url=emulator.url,
                model=SONNET,
                region=regions[0][0],
                endpoints=("global",),
                max_in_flight=128,
                max_tokens=256,
            )
            spec["model"]["regions"] = [r for r, _ in regions]
            spec["limits"]["tpm"] = {r: int(tpm * w) for r, w in regions}
            specs[name] = spec
        results = run_jobs(specs)
        counters = emulator.counters()
    figures: dict[str, Any] = {}
    for name, regions in JOBS.items():
        r = results.get(name, {})
        per_region = {}
        requests = throttled = 0
        billed_total = 0.0
        for region, weight in regions:
            route = f"global.{SONNET}@{region}"
            t = counters.get("tokens", {}).get(route, {})
            billed = t.get("input", 0) + t.get("cache_write", 0) + burndown * t.get("output", 0)
            n = sum(counters.get("requests", {}).get(route, {}).values())
            thr = counters.get("throttles", {}).get(route, {}).get("quota", 0)
            requests, throttled, billed_total = requests + n, throttled + thr, billed_total + billed
            per_region[region] = {"quota_weight": weight, "billed": billed, "requests": n, "throttled": thr}
        weights = sum(w for _, w in regions)
        for region, weight in regions:
            entry = per_region[region]
            entry["billed_share"] = rounded(entry["billed"] / billed_total if billed_total else 0.0, 3)
            entry["quota_share"] = rounded(weight / weights, 3)
        figures[name] = {
            "time_s": rounded(float(r.get("elapsed_s") or 0.0), 1),
            "failed": r.get("failed"),
            "requests": requests,
            "throttled_share": rounded(throttled / requests if requests else 0.0, 4),
            "regions": per_region,
        }
    one, three, uneven = figures["one"], figures["three"], figures["uneven"]
    ratio = three["time_s"] / one["time_s"] if one["time_s"] else 0.0
    gaps = [abs(e["billed_share"] - e["quota_share"]) / e["quota_share"] for e in uneven["regions"].values()]
    checks = [
        {
            "metric": "three regions: job time / one region's",
            "value": rounded(ratio, 3),
            "target": f"<= {TARGET_SPEEDUP_RATIO}",
            "passed": 0 < ratio <= TARGET_SPEEDUP_RATIO,
        },
        {
            "metric": "three regions: share of requests throttled; failed rows",
            "value": f"{three['throttled_share']:.1%}; {three['failed']}",
            "target": "<= 2 %; 0",
            "passed": three["throttled_share"] <= TARGET_THROTTLED and three["failed"] == 0,
        },
        {
            "metric": "uneven quotas (1x, 2x, 0.5x): largest gap, share of quota tokens vs share of quota",
            "value": rounded(max(gaps), 3),
            "target": f"<= {TARGET_SHARE_GAP}",
            "passed": max(gaps) <= TARGET_SHARE_GAP,
        },
    ]
    return {
        "name": "regions",
        "title": "Several source regions, each its own quota",
        "checks": checks,
        "figures": figures,
        "params": {"rows": rows, "tpm": tpm, "model": SONNET, "quota": "bucket, started empty"},
        "reproduce": f"BENCH_REGIONS_ROWS={rows} BENCH_REGIONS_TPM={tpm} python -m bench regions",
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
