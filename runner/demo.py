"""``make run``: the demo job end to end on the built-in emulator, on a fresh clone.

Makes ``data/demo.parquet`` if it is missing, starts the emulator in its own process (so the runner
and the emulator each get a core), runs ``jobs/demo.toml`` against it through the real CLI, shows
``status`` and ``stats``, and stops the emulator whatever happens. Running it again resumes the same
job directory, so the second run has nothing left to do: that is the resume guarantee at work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner.cli import main as cli_main
from runner.demo_data import make_demo_dataset
from runner.emulator.cli import READY_PREFIX

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "demo.parquet"
SPEC = ROOT / "jobs" / "demo.toml"
FAULTS = ROOT / "jobs" / "demo-emulator.toml"
OUTPUT = ROOT / "out" / "demo"


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m runner.emulator`` on a free loopback port and wait for its ready line."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--faults",
            str(FAULTS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise SystemExit(f"the emulator did not start (said: {line.strip()!r})")
    return proc, line[len(READY_PREFIX) :].strip()


def main() -> int:
    if not DATA.exists():
        make_demo_dataset(DATA, rows=2000)
        print(f"made {DATA.relative_to(ROOT)} (2,000 prompts)", file=sys.stderr)
    proc, url = start_emulator()
    print(f"emulator at {url}", file=sys.stderr)
    try:
        code = cli_main(["run", str(SPEC), "--endpoint-url", url, "--output", str(OUTPUT)])
        print(file=sys.stderr)
        cli_main(["status", str(OUTPUT)])
        print()
        cli_main(["stats", str(OUTPUT)])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"\nresults: {OUTPUT / 'results.parquet'}   (run `make run` again: it resumes, nothing is paid twice)"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
