"""``python -m runner.emulator --port 0``: the emulator as a process (what CLI tests and benchmarks start)."""

from __future__ import annotations

from runner.emulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
