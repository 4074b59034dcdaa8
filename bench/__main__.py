"""``python -m bench [NAME ...]`` (``make bench``): run the benchmarks, rewrite BENCHMARKS.md.

Every benchmark is a module ``bench/bench_NAME.py`` with ``run(...) -> dict``. This runs all of them
(or the ones named), stores each result with the machine, date and commit in ``bench/results.json``
(a benchmark not run this time keeps its last stored result, with its own date), and renders
BENCHMARKS.md from that file: the figures, the targets, pass or fail, the machine and how to reproduce
each figure. ``BENCH_QUICK=1`` runs everything at a small scale (a smoke test; its figures are marked).

::

    python -m bench                      # everything (~12 minutes on 2 cores)
    python -m bench overhead memory      # a subset
    python -m bench startup              # start-up of --help, status and stats vs the baseline
    python -m bench --render             # only rewrite BENCHMARKS.md from bench/results.json
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench._common import QUICK, ROOT, WORK

RESULTS = ROOT / "bench" / "results.json"
NOTES = ROOT / "bench" / "notes.md"
"""Hand-written findings (what missed and why, what was fixed), shown after the summary."""
REPORT = ROOT / "BENCHMARKS.md"
PACKAGES = ("aioboto3", "aiobotocore", "botocore", "aiohttp", "anyio", "pyarrow", "tenacity", "structlog")
EMULATOR_TARGET_RPS = 3_000.0


def _emulator() -> dict[str, Any]:
    """bench_emulator.py (the emulator author's) returns its own shape; give it ours."""
    from bench import bench_emulator

    started = time.monotonic()
    raw = bench_emulator.run()
    rps = float(raw["emulator_invoke_rps"])
    return {
        "name": "emulator",
        "title": "Emulator throughput",
        "checks": [
            {
                "metric": "minimal InvokeModel answers/s, emulator on one core",
                "value": round(rps, 1),
                "target": f">= {EMULATOR_TARGET_RPS:,.0f}",
                "passed": rps >= EMULATOR_TARGET_RPS,
            }
        ],
        "figures": {
            "raw_client": raw["raw"],
            "aioboto3_client": raw["aioboto3"],
        },
        "params": {"emulator_cpu": "pinned to CPU 0, load generator to CPU 1 (bench_emulator.py)"},
        "reproduce": "python -m bench emulator   (or: python -m bench.bench_emulator)",
        "seconds": round(time.monotonic() - started, 1),
        "doc": bench_emulator.__doc__ or "",
    }


def _module(name: str) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        module = importlib.import_module(f"bench.bench_{name}")
        result: dict[str, Any] = module.run()
        result["doc"] = module.__doc__ or ""
        return result

    return run


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "emulator": _emulator,
    "overhead": _module("overhead"),
    "latency": _module("latency"),
    "memory": _module("memory"),
    "resume": _module("resume"),
    "quota": _module("quota"),
    "quota_model": _module("quota_model"),
    "regions": _module("regions"),
    "goodput": _module("goodput"),
    "outage": _module("outage"),
    "startup": _module("startup"),
}


# --- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": memory_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "runner"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + (" (runner/ modified)" if dirty else "")


# --- results ------------------------------------------------------------------------------------


def key_of(result: Mapping[str, Any]) -> str:
    """Where a result is stored: its name, plus a variant for a non-default scale (memory at 1M rows)."""
    variant = result.get("variant")
    return f"{result['name']}@{variant}" if variant else str(result["name"])


def load() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {"results": {}}


def save(data: Mapping[str, Any]) -> None:
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, RESULTS)


def run_one(name: str, run_id: str, where: Mapping[str, Any], sha: str) -> dict[str, Any]:
    started = time.monotonic()
    print(f"== {name}", flush=True)
    try:
        result = BENCHMARKS[name]()
    except Exception as exc:  # a broken benchmark is a failed row in the report, not a lost run
        traceback.print_exc()
        result = {
            "name": name,
            "title": name,
            "checks": [
                {"metric": "benchmark ran", "value": f"error: {exc}", "target": "ran", "passed": False}
            ],
            "figures": {},
            "reproduce": f"python -m bench {name}",
            "doc": "",
        }
    result.setdefault("seconds", round(time.monotonic() - started, 1))
    result["measured_at"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    result["run_id"] = run_id
    result["machine"] = dict(where)
    result["commit"] = sha
    result["quick"] = QUICK
    for check in result["checks"]:
        mark = "PASS" if check["passed"] else "MISS"
        print(f"   {mark}  {check['metric']}: {check['value']} (target {check['target']})", flush=True)
    print(f"   {result['seconds']} s", flush=True)
    return result


# --- BENCHMARKS.md ------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if value is None:
        return "–"
    return str(value)


def figures_md(figures: Mapping[str, Any]) -> list[str]:
    """Scalars as a two-column table; a group of same-shaped dicts (clients, runs) as one wide table."""
    lines: list[str] = []
    groups = {k: v for k, v in figures.items() if isinstance(v, dict) and v}
    scalars = {k: v for k, v in figures.items() if k not in groups}
    if scalars:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in scalars.items()]
        lines.append("")
    if groups:
        fields = list(dict.fromkeys(f for g in groups.values() for f in g))
        lines.append("| | " + " | ".join(groups) + " |")
        lines.append("|---|" + "---|" * len(groups))
        for f in fields:
            lines.append(f"| {f} | " + " | ".join(fmt(g.get(f)) for g in groups.values()) + " |")
        lines.append("")
    return lines


def render(data: Mapping[str, Any]) -> str:
    results: dict[str, Any] = data.get("results", {})
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    entries = sorted(results.values(), key=lambda r: (order.get(r["name"], 99), key_of(r)))
    last = max(entries, key=lambda r: r["measured_at"]) if entries else None
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`) from `bench/results.json`; do not edit by hand.",
        "Each benchmark runs the emulator (`python -m runner.emulator`) and the runner in separate processes",
        "over loopback; ratios are measured within one run. The machine is shared and noisy: expect a few",
        "percent of run-to-run spread (the overhead benchmark lists every round).",
        "",
    ]
    full = data.get("last_full_run")
    if full:
        out += [
            f"The last full run (`python -m bench`, {len(full['benchmarks'])} benchmarks) took "
            f"{full['seconds'] / 60:.1f} minutes ({full['run_id']}).",
            "",
        ]
    if last is not None:
        m = last["machine"]
        pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        out += [
            "## Machine",
            "",
            f"- {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB RAM, {m['os']}",
            f"- Python {m['python']}; {pk}",
            f"- latest run: {last['measured_at']}, commit {last['commit']}, load average at its start "
            f"{fmt(m['load_average'])}",
            "",
        ]
    out += [
        "## Summary",
        "",
        "| benchmark | figure | measured | target | result | measured at |",
        "|---|---|---|---|---|---|",
    ]
    for r in entries:
        for c in r["checks"]:
            result = "pass" if c["passed"] else "**MISS**"
            when = r["measured_at"][:16].replace("T", " ") + (" (quick)" if r.get("quick") else "")
            out.append(
                f"| {r['title']}{' (' + r['variant'] + ')' if r.get('variant') else ''} | {c['metric']} | "
                f"{fmt(c['value'])} | {c['target']} | {result} | {when} |"
            )
    out.append("")
    if NOTES.exists():
        out += [NOTES.read_text().strip(), ""]
    for r in entries:
        head = r["title"] + (f" ({r['variant']})" if r.get("variant") else "")
        out += [f"## {head}", ""]
        for c in r["checks"]:
            out.append(f"- {c['metric']}: **{fmt(c['value'])}** (target {c['target']}: "
                       f"{'pass' if c['passed'] else 'MISS'})")  # fmt: skip
        out += [
            f"- measured {r['measured_at']} on commit {r['commit']}, {r['seconds']} s"
            + (" — BENCH_QUICK (small scale)" if r.get("quick") else ""),
            f"- reproduce: `{r['reproduce']}`",
            "",
        ]
        if r.get("notes"):
            out += [f"> {note}" for note in r["notes"]] + [""]
        if r.get("params"):
            out += ["Parameters: " + "; ".join(f"{k} = {fmt(v)}" for k, v in r["params"].items()), ""]
        out += figures_md(r.get("figures", {}))
        doc = (r.get("doc") or "").strip()
        if doc:
            out += ["<details><summary>How it is measured</summary>", "", doc, "", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    data = load()
    if argv == ["--render"]:
        REPORT.write_text(render(data))
        return 0
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    where, sha = machine(), commit()
    missed = 0
    for name in names:
        result = run_one(name, run_id, where, sha)
        missed += not all(c["passed"] for c in result["checks"])
        data.setdefault("results", {})[key_of(result)] = result
        save(data)
        REPORT.write_text(render(data))
    total = time.monotonic() - started
    data["last_run"] = {"run_id": run_id, "benchmarks": names, "seconds": round(total, 1)}
    if names == list(BENCHMARKS) and not QUICK:
        data["last_full_run"] = data["last_run"]
    save(data)
    REPORT.write_text(render(data))
    print(
        f"== {len(names)} benchmarks in {total / 60:.1f} min; {missed} missed a target; wrote {REPORT.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
