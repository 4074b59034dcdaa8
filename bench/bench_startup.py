"""Start-up: wall time of ``bedrock-batch --help``, ``status DIR`` and ``stats DIR``, this checkout
against the baseline commit (the code before issue 14), in the same run.

The baseline's ``runner/`` is extracted with ``git archive`` into the scratch space; both trees are
byte-compiled first, so neither pays for compiling. Each command then runs ``rounds`` times per tree,
alternating baseline and current, as ``python -c "from runner.cli import main; ..."`` with
``PYTHONPATH`` pointing at the tree, from a directory outside the repository (the same Python, the
same installed packages). ``status`` and ``stats`` read a small finished job (made once against an
emulator process). The machine is shared: the best of the rounds is the checked figure (what the code
costs when the machine is free), the median and the CPU time (user + system, best of the rounds, much
less sensitive to other load) are listed beside it, with the load average.

Target: every command's best time < 0.3 s.

Knobs: ``BENCH_STARTUP_ROUNDS`` (15), ``BENCH_STARTUP_BASELINE`` (the commit to compare against).
"""

from __future__ import annotations

import compileall
import os
import resource
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    ROOT,
    WORK,
    EmulatorProcess,
    cli_command,
    dataset,
    env_int,
    fresh_dir,
    job_spec,
    rounded,
    write_toml,
)

TARGET_S = 0.3
BASELINE = os.environ.get("BENCH_STARTUP_BASELINE") or "625326b"
"""The last commit before issue 14 (lazy imports): ``--help`` 0.7 to 1.1 s, every command loads aioboto3."""
MAIN = "import sys; from runner.cli import main; sys.exit(main())"


def baseline_tree(rev: str) -> Path:
    """``runner/`` of ``rev`` under ``WORK/startup-<rev>``, extracted once."""
    root = WORK / f"startup-{rev}"
    if not (root / "runner" / "__init__.py").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        with tempfile.TemporaryFile() as archive:
            subprocess.run(["git", "archive", rev, "runner"], cwd=ROOT, stdout=archive, check=True)
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                tar.extractall(root, filter="data")
    return root


def finished_job(rows: int) -> Path:
    """A small finished job directory for ``status`` and ``stats`` to read."""
    out = fresh_dir("startup-job")
    with EmulatorProcess() as emulator:
        spec = job_spec(input=dataset(rows), output=out, endpoint_url=emulator.url)
        spec_path = write_toml(spec, WORK / "jobs" / "startup-job.toml")
        subprocess.run(
            [*cli_command(), "run", str(spec_path), "--no-progress"],
            check=True,
            capture_output=True,
            env=_env(ROOT),
        )
    return out


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env["PYTHONPATH"] = str(tree)
    return env


def time_once(tree: Path, argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of the command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", MAIN, *argv], cwd=cwd, env=_env(tree), capture_output=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(*, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or env_int("BENCH_STARTUP_ROUNDS", 15, quick=5)
    started = time.monotonic()
    trees = {"baseline": baseline_tree(BASELINE), "current": ROOT}
    for tree in trees.values():
        compileall.compile_dir(tree / "runner", quiet=1)
    job = finished_job(200)
    commands = {"--help": ["--help"], "status": ["status", str(job)], "stats": ["stats", str(job)]}
    times: dict[str, dict[str, list[float]]] = {c: {t: [] for t in trees} for c in commands}
    cpu: dict[str, dict[str, list[float]]] = {c: {t: [] for t in trees} for c in commands}
    with tempfile.TemporaryDirectory() as cwd:
        for name, argv in commands.items():
            for tree in trees.values():  # warm the page cache once for each
                time_once(tree, argv, Path(cwd))
            for _ in range(rounds):
                for label, tree in trees.items():
                    wall, cpu_s = time_once(tree, argv, Path(cwd))
                    times[name][label].append(wall)
                    cpu[name][label].append(cpu_s)
    figures: dict[str, Any] = {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    checks = []
    for name in commands:
        best = {label: min(times[name][label]) for label in trees}
        median = {label: statistics.median(times[name][label]) for label in trees}
        figures[name] = {
            "baseline_best_s": rounded(best["baseline"]),
            "current_best_s": rounded(best["current"]),
            "baseline_median_s": rounded(median["baseline"]),
            "current_median_s": rounded(median["current"]),
            "baseline_cpu_best_s": rounded(min(cpu[name]["baseline"])),
            "current_cpu_best_s": rounded(min(cpu[name]["current"])),
            "speed-up (best)": rounded(best["baseline"] / best["current"], 2),
        }
        checks.append(
            {
                "metric": f"`bedrock-batch {name}` start-up, best of {rounds} (s)",
                "value": rounded(best["current"]),
                "target": f"< {TARGET_S:g} (baseline {best['baseline']:.3f})",
                "passed": best["current"] < TARGET_S,
            }
        )
    return {
        "name": "startup",
        "title": "Start-up time of the commands",
        "checks": checks,
        "figures": figures,
        "params": {"rounds": rounds, "baseline": BASELINE, "job_rows": 200},
        "reproduce": f"BENCH_STARTUP_ROUNDS={rounds} python -m bench startup",
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
