"""Outage: rows/s while the primary route (``global.``) is down for 30 s, vs the same span undisturbed.

The job routes ``global`` first, then the ``us.`` regional profile (the demo spec). The emulator (its
own process) answers after a fixed latency. Two runs, one after the other on the same emulator: each
starts the job, lets it reach steady state (``lead`` seconds after the first answer), then measures
billed answers per second over the next ``BENCH_OUTAGE_S`` seconds; in the second run the emulator's
``global.`` profile answers ServiceUnavailableException for exactly that span (an outage window set
through ``/_emulator/faults``), so the runner must fail over to ``us.`` (retries on the next route,
the breaker of ``global`` open, probes back). The job is stopped once the span is over.

Target: rows/s during the outage >= 0.8 x rows/s of the undisturbed span.

Knobs: ``BENCH_OUTAGE_S`` (30), ``BENCH_OUTAGE_LATENCY_MS`` (1,000), ``BENCH_OUTAGE_MAX_IN_FLIGHT`` (256),
``BENCH_OUTAGE_LEAD_S`` (10).
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from bench._common import (
    HAIKU,
    PYTHON,
    Child,
    EmulatorProcess,
    dataset,
    env_int,
    fresh_dir,
    job_spec,
    ok_requests,
    rounded,
)

TARGET = 0.8
GLOBAL = "global." + HAIKU
REGIONAL = "us." + HAIKU


def _window(
    emulator: EmulatorProcess, *, name: str, outage_s: int, lead_s: int, max_in_flight: int, outage: bool
) -> dict[str, Any]:
    """One run: start the job, let it settle, measure ``outage_s`` seconds (with the outage or not)."""
    emulator.reset()
    spec = job_spec(
        input=dataset(20_000),
        output=fresh_dir(f"outage-{name}"),
        endpoint_url=emulator.url,
        max_in_flight=max_in_flight,
    )
    with Child(
        [PYTHON, "-m", "bench._child", "job"],
        name=f"outage-{name}",
        stdin=json.dumps({"spec": spec, "grace_s": 1.0}),
    ) as child:
        deadline = time.monotonic() + 60
        while ok_requests(emulator.counters()) == 0:
            if time.monotonic() > deadline or child.poll():
                raise RuntimeError(f"outage: the job never got an answer (log: {child.log_path})")
            time.sleep(0.05)
        time.sleep(lead_s)
        before = emulator.counters()
        t0 = time.monotonic()
        if outage:
            emulator.patch_faults(
                {
                    "routes": [
                        {"profile": "global.*", "region": "*", "outages": [{"start_s": 0, "end_s": outage_s}]}
                    ]
                }
            )
        time.sleep(outage_s)
        after = emulator.counters()
        t1 = time.monotonic()
        child.signal(signal.SIGTERM)
        child.wait(timeout=60)
    if outage:
        emulator.patch_faults({"routes": [{"profile": "global.*", "region": "*", "outages": []}]})
    by_route = {}
    for profile in (GLOBAL, REGIONAL):
        route = f"{profile}@us-east-1"
        b = before.get("requests", {}).get(route, {})
        a = after.get("requests", {}).get(route, {})
        by_route[profile.split(".", 1)[0]] = {
            k: a.get(k, 0) - b.get(k, 0) for k in a if a.get(k, 0) - b.get(k, 0)
        }
    rows = ok_requests(after) - ok_requests(before)
    return {
        "rows_per_s": round(rows / (t1 - t0), 1),
        "answers": rows,
        "seconds": round(t1 - t0, 2),
        "requests": by_route,
    }


def run(
    *,
    outage_s: int | None = None,
    latency_ms: int | None = None,
    max_in_flight: int | None = None,
    lead_s: int | None = None,
) -> dict[str, Any]:
    outage_s = outage_s or env_int("BENCH_OUTAGE_S", 30, quick=10)
    latency_ms = latency_ms or env_int("BENCH_OUTAGE_LATENCY_MS", 1_000)
    max_in_flight = max_in_flight or env_int("BENCH_OUTAGE_MAX_IN_FLIGHT", 256)
    lead_s = lead_s or env_int("BENCH_OUTAGE_LEAD_S", 10, quick=5)
    started = time.monotonic()
    with EmulatorProcess("--latency-ms", str(latency_ms)) as emulator:
        common = {"outage_s": outage_s, "lead_s": lead_s, "max_in_flight": max_in_flight}
        calm = _window(emulator, name="undisturbed", outage=False, **common)
        down = _window(emulator, name="outage", outage=True, **common)
    ratio = down["rows_per_s"] / calm["rows_per_s"]
    return {
        "name": "outage",
        "title": "Failover during an outage of the global route",
        "checks": [
            {
                "metric": f"rows/s during a {outage_s} s outage of global ÷ undisturbed",
                "value": rounded(ratio),
                "target": f">= {TARGET}",
                "passed": ratio >= TARGET,
            }
        ],
        "figures": {
            "undisturbed": calm,
            "outage": down,
            "ideal_rows_per_s": max_in_flight / (latency_ms / 1000),
        },
        "params": {
            "outage_s": outage_s,
            "latency_ms": latency_ms,
            "max_in_flight": max_in_flight,
            "lead_s": lead_s,
            "routes": "global, then us (regional profile), home region us-east-1",
        },
        "reproduce": (
            f"BENCH_OUTAGE_S={outage_s} BENCH_OUTAGE_LATENCY_MS={latency_ms} "
            f"BENCH_OUTAGE_MAX_IN_FLIGHT={max_in_flight} BENCH_OUTAGE_LEAD_S={lead_s} python -m bench outage"
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
